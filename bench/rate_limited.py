"""Time to flat under a server-enforced rate limit, both close modes side by side.

Starts the simulator in this process enforcing `rate_limit` (default 20 requests/second, over
every route), runs `liquidator run` as a subprocess told the same limit (`--rate-limit`), once per
close mode (and `--modes sdk`: the official SDK's close_position under a semaphore, which has no
pace), and reports as counted at the server: requests (429s included), 429s, requests per
position, positions flat at the end, and the wall time from start to exit (liquidator follows
every position until it reads flat).
Usage: python bench/rate_limited.py [--limit 20] [--positions 5000] [--accounts 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from worker.simulator import Faults, SimConfig, Simulator, serve

KEY = "rate-key.rate-secret-for-the-bench"  # MIN_SECRET_CHARS: 16
ROUTES = ("close", "positions", "orders", "clock", "submit", "cancel", "snapshot")


async def one(args: argparse.Namespace, mode: str) -> dict[str, object]:
    sim = Simulator(
        SimConfig(
            api_key=KEY,
            rate_limit=args.limit,
            fill_delay_s=args.fill_delay,
            record=False,
            faults={r: Faults(latency_s=args.latency) for r in ROUTES},
        )
    )
    per_account = args.positions // args.accounts
    sim.seed_book(args.accounts, per_account)
    runner, _ = await serve(sim)
    if mode == "sdk":  # the official SDK, close_position with a semaphore: it has no pace
        sdk = Path(__file__).with_name("sdk_client.py")
        cmd = [sys.executable, str(sdk), sim.base_url, KEY, str(args.concurrency), "10001"]
        cmd.append(str(args.accounts))
    else:
        cmd = [sys.executable, "-m", "worker", "run", "--yes", "--base-url", sim.base_url]
        for n in range(args.accounts):
            cmd += ["--account", str(10001 + n)]
        cmd += ["--close-via", mode, "--rate-limit", f"{args.limit:g}"]
        cmd += ["--concurrency", str(args.concurrency)]
    with tempfile.TemporaryDirectory() as state:
        if mode != "sdk":
            cmd += ["--state-dir", state]
        env = {**os.environ, "LIQUIDATOR_API_KEY": KEY, "LIQUIDATOR_LOG_FORMAT": "json"}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env
        )
        await proc.wait()
        wall = time.monotonic() - started
    await asyncio.sleep(10 * args.fill_delay)  # the last orders' fills come due
    # Flat at the server, whatever the client says.
    flat = sum(
        1
        for a, account in sim.book.accounts.items()
        for iid in list(account.positions)
        if sim.position_quantity(a, iid) == 0
    )
    await runner.cleanup()
    positions = per_account * args.accounts
    return {
        "mode": mode,
        "positions": positions,
        "accounts": args.accounts,
        "limit": args.limit,
        "wall_s": round(wall, 1),
        "requests": sim.stats.requests,
        "rate_limited": sim.stats.status_counts[429],
        "requests_per_position": round(sim.stats.requests / positions, 3),
        "submit_requests": sim.stats.by_route["submit"],
        "flat": flat,
        "exit": proc.returncode,
    }


async def main(args: argparse.Namespace) -> int:
    rows = [await one(args, mode) for mode in args.modes.split(",")]
    print(
        f"{rows[0]['positions']} positions over {args.accounts} accounts, server limit"
        f" {args.limit:g} req/s, RATE_LIMIT={args.limit:g}, {args.latency * 1000:g} ms a request"
    )
    print("| client, close via | wall s | requests | 429s | requests / position | flat | exit |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['wall_s']} | {r['requests']} | {r['rate_limited']} |"
            f" {r['requests_per_position']} | {r['flat']} | {r['exit']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))  # noqa: ASYNC240
    return 0 if all(r["exit"] == 0 for r in rows if r["mode"] != "sdk") else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=float, default=20)
    parser.add_argument("--positions", type=int, default=5000)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--fill-delay", type=float, default=0.01)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--modes", default="submit_orders,close_position", help="and/or sdk (the official SDK)"
    )
    parser.add_argument("--json", default="")
    sys.exit(asyncio.run(main(parser.parse_args())))
