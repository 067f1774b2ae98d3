"""CLOSE_STYLE=protected at scale under a server-enforced rate limit, beside the market style on
the same books, counted at the server.

Starts the simulator in this process enforcing `--limit` requests/second over every route, seeds
300 shares (long or short, at 100.00) per position, and runs `liquidator run` as a subprocess
told the same limit, once per style and book (protected: PROTECTED_VIA=reprice; ioc_waves:
CLOSE_STYLE=protected with PROTECTED_VIA=ioc_waves; market):

    half thin   5,000 positions over 50 accounts; every other name's book 6 levels of 50 shares
                20 bps apart, refilled 2 s after it is taken; the others 100,000 a level
    all thin    2,000 positions over 50 accounts; every name thin, refilled 30 s after

and reports: wall time, requests (429s included) and per position, how many limits escalated
and how late each rest went after its deadline (the limit's creation + DEADLINE_S, by the
server's clock), how late each position read flat, positions left open, and the cost against
the arrival midpoints (the report's `summary.cost`).
Usage: python bench/protected_scale.py [--limit 20] [--rows half,all] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from worker.simulator import SimConfig, Simulator, serve
from worker.simulator.market import Liquidity, MarketConfig

KEY = "scale-key.scale-secret-for-the-bench"  # MIN_SECRET_CHARS: 16
FIRST = 10001
THIN = Liquidity(depth=6, level_size=50, level_step_bps=20.0)
THICK = Liquidity(depth=6, level_size=100_000, level_step_bps=5.0)
ROWS = {
    # name: (positions, accounts, every nth name thin, refill_s)
    "half": (5000, 50, 2, 2.0),
    "all": (2000, 50, 1, 30.0),
    "smoke": (200, 10, 2, 2.0),  # a quick check of the bench itself (--deadline 10)
    "all-fifth": (400, 10, 1, 30.0),  # "all" a fifth the size: with --limit 4
}


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def one(args: argparse.Namespace, row: str, style: str) -> dict[str, Any]:
    positions, accounts, thin_every, refill_s = ROWS[row]
    market = MarketConfig(spread_bps=10.0, size_jitter=0.0, refill_s=refill_s)
    sim = Simulator(
        SimConfig(
            api_key=KEY, rate_limit=args.limit, fill_delay_s=0.01, record=False, market=market
        )
    )
    symbols: list[tuple[int, str]] = []
    for k in range(positions):
        account, symbol = FIRST + k % accounts, f"S{k}"
        market.instruments[symbol] = THIN if k % thin_every == 0 else THICK
        sim.add_position(account, symbol, "300" if k % 3 else "-300", price="100.00")
        symbols.append((account, symbol))
    runner, _ = await serve(sim)
    cmd = [sys.executable, "-m", "worker", "run", "--yes", "--base-url", sim.base_url]
    for n in range(accounts):
        cmd += ["--account", str(FIRST + n)]
    cmd += ["--close-via", "submit_orders", "--rate-limit", f"{args.limit:g}"]
    cmd += ["--close-style", "market" if style == "market" else "protected"]
    with tempfile.TemporaryDirectory() as state:
        report = Path(state) / "report.json"
        cmd += ["--state-dir", state, "--report", str(report)]
        env = {
            **os.environ,
            "LIQUIDATOR_API_KEY": KEY,
            "LIQUIDATOR_LOG_FORMAT": "json",
            "LIQUIDATOR_DEADLINE_S": f"{args.deadline:g}",
            "LIQUIDATOR_PROTECTED_VIA": "ioc_waves" if style == "ioc_waves" else "reprice",
        }
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env
        )
        await proc.wait()
        wall = time.monotonic() - started
        doc = json.loads(report.read_text()) if report.exists() else {"summary": {}}
    late: list[float] = []  # a rest's creation after its limit's deadline
    flat_after: list[float] = []  # the last closing fill after the deadline
    left_open = 0
    for account, symbol in symbols:
        if sim.position_quantity(account, symbol) != 0:
            left_open += 1
        orders = sorted(sim.closing_orders(account, symbol), key=lambda o: _at(o["created_at"]))
        if style == "market" or not orders:
            continue
        deadline = _at(orders[0]["created_at"]) + args.deadline
        # The rests: every order after the limit (re-priced), the market orders (IOC waves).
        late += [
            _at(o["created_at"]) - deadline
            for o in orders[1:]
            if style == "protected" or o["order_type"] == "MARKET"
        ]
        ids = {o["id"] for o in orders}
        fills = [
            e.transaction_time for e in sim.book.accounts[account].executions if e.order_id in ids
        ]
        if fills:
            flat_after.append(max(fills) - deadline)
    await runner.cleanup()
    cost = doc["summary"].get("cost")
    return {
        "row": row,
        "style": style,
        "positions": positions,
        "wall_s": round(wall, 1),
        "requests": sim.stats.requests,
        "rate_limited": sim.stats.status_counts[429],
        "requests_per_position": round(sim.stats.requests / positions, 3),
        "by_route": {r: n for r, n in sim.stats.by_route.items() if n},
        "escalated": len(late),
        "rest_after_deadline_s": [round(min(late), 1), round(max(late), 1)] if late else None,
        "flat_after_deadline_s": round(max(flat_after), 1) if flat_after else None,
        "left_open": left_open,
        "cost": None if cost is None else str(Decimal(cost).quantize(Decimal(1))),
        "exit": proc.returncode,
    }


async def main(args: argparse.Namespace) -> int:
    rows = []
    for row in args.rows.split(","):
        for style in args.styles.split(","):
            rows.append(await one(args, row, style))
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"server limit {args.limit:g} req/s, RATE_LIMIT={args.limit:g},"
        f" DEADLINE_S {args.deadline:g}"
    )
    print(
        "| book | positions | style | wall s | requests (/ position) | escalated |"
        " rest after deadline s | flat after deadline s | left open | cost | exit |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        window = r["rest_after_deadline_s"]
        print(
            f"| {r['row']} thin | {r['positions']:,} | {r['style']} | {r['wall_s']} |"
            f" {r['requests']:,} ({r['requests_per_position']}) | {r['escalated']} |"
            f" {'—' if window is None else f'{window[0]} to {window[1]}'} |"
            f" {r['flat_after_deadline_s'] if r['flat_after_deadline_s'] is not None else '—'} |"
            f" {r['left_open']} | ${r['cost']} | {r['exit']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))  # noqa: ASYNC240
    return 0 if all(r["exit"] == 0 and r["left_open"] == 0 for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=float, default=20)
    parser.add_argument("--rows", default="half,all")
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--styles", default="protected,ioc_waves,market")
    parser.add_argument("--json", default="")
    sys.exit(asyncio.run(main(parser.parse_args())))
