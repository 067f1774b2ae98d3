"""Pace control against a server limit the worker is not told about.

Starts the simulator in this process with a server-side limit (default 100 requests/second),
runs `liquidator run` with RATE_LIMIT=0 (unlimited) against it as a subprocess, and reports, as
counted at the server: requests, 429s and their share, the most requests in any one-second
window, and the worker's pace changes. Usage: python bench/pace.py [--limit 100] [--positions 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

from worker.simulator import Faults, SimConfig, Simulator, serve

KEY = "pace-key.pace-secret-for-the-bench"  # MIN_SECRET_CHARS: 16


async def main(args: argparse.Namespace) -> int:
    routes = ("close", "positions", "orders", "clock")
    sim = Simulator(
        SimConfig(
            api_key=KEY,
            rate_limit=args.limit,
            fill_delay_s=0.01,  # as bench/run.py: following reads each position flat soon after
            record=False,
            faults={r: Faults(latency_s=args.latency) for r in routes},
        )
    )
    accounts = max(1, args.positions // 100)
    sim.seed_book(accounts, args.positions // accounts)
    runner, _ = await serve(sim)
    cmd = [sys.executable, "-m", "worker", "run", "--yes", "--base-url", sim.base_url]
    for n in range(accounts):
        cmd += ["--account", str(10001 + n)]
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "LIQUIDATOR_API_KEY": KEY, "LIQUIDATOR_LOG_FORMAT": "json"}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *cmd, "--concurrency", str(args.concurrency), "--rate-limit", "0",
            "--state-dir", state, "--max-attempts", "10",
            stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, _ = await proc.communicate()
        wall = time.monotonic() - started
    await runner.cleanup()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    if args.verbose:
        for e in lines:
            if e["event"] in ("pace_changed", "run_finished"):
                print(
                    e["timestamp"][11:23],
                    e["event"],
                    e.get("old_rate"),
                    e.get("new_rate"),
                    e.get("reason", ""),
                )
    changes = [e for e in lines if e["event"] == "pace_changed"]
    arrivals = sorted(sim.stats.arrivals)
    busiest = 0
    j = 0
    for i, t in enumerate(arrivals):
        while arrivals[j] <= t - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    total = sim.stats.requests
    limited = sim.stats.status_counts[429]
    print(f"server limit {args.limit} req/s, {args.positions} positions, exit {proc.returncode}")
    print("| requests | 429s | 429 share | busiest second | wall s | pace changes |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {total} | {limited} | {100 * limited / total:.2f}% | {busiest} | {wall:.1f} |"
        f" {len(changes)} ({sum(c['reason'] == 'rate_limited' for c in changes)} decreases) |"
    )
    return 0 if proc.returncode == 0 and limited / total < 0.05 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=float, default=100)
    parser.add_argument("--positions", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--verbose", action="store_true")
    sys.exit(asyncio.run(main(parser.parse_args())))
