"""The case close_position cannot make safe: a gateway that applies a close after the timeout.

A share of closes gets no reply and is applied only after `--hold` seconds, longer than the
client's timeout. The worker looks (after RECONCILE_DELAY), sees no order and the position open,
and sends again; then the held close lands. Counted at the server, per setting: positions closed
twice (more than one filled closing order), positions not flat at the end, positions flipped.
Scaled down from the field report (20% held 7 s, timeout 5 s) to keep it short. The same
gateway holds submissions in `submit_orders` mode (the last rows): a held submission that lands
after the re-send collides with its client id (409) and creates nothing. Usage:

    python bench/late_gateway.py [--positions 100] [--held 0.2] [--hold 0.7] [--timeout 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from worker.inputs.settings import load_settings
from worker.inputs.targets import TargetSpec
from worker.run.runner import RunRequest, run
from worker.simulator import Faults, SimConfig, Simulator, serve

ACCOUNT = 70001


async def one(
    args: argparse.Namespace,
    *,
    reconcile_delay: float,
    cancel_orders: bool,
    close_via: str = "close_position",
) -> str:
    sim = Simulator(SimConfig(fill_delay_s=args.fill_delay, record=False, seed=args.seed))
    runner, _ = await serve(sim)
    try:
        sim.add_account(ACCOUNT)
        keys = [sim.add_position(ACCOUNT, f"L{k}", str(10 + k)) for k in range(args.positions)]
        route = "close" if close_via == "close_position" else "submit"
        sim.config.faults = {route: Faults(p_apply_late=args.held, apply_late_s=args.hold)}
        with tempfile.TemporaryDirectory() as state:
            settings = load_settings(
                {
                    "base_url": sim.base_url,
                    "api_key": sim.config.api_key,
                    "state_dir": Path(state),
                    "rate_limit": 0,
                    "request_timeout": args.timeout,
                    "reconcile_delay": reconcile_delay,
                    "retry_backoff": 0.01,
                    "retry_backoff_max": 0.05,
                    "flat_timeout": 10,
                    "follow_pause": 0.1,
                    "follow_pause_max": 0.5,
                    "close_via": close_via,
                },
                None,
            )
            spec = TargetSpec(ACCOUNT, None, cancel_orders=cancel_orders)
            result = await run(settings, RunRequest(specs=[spec]), asyncio.Event())
        twice = sum(len(sim.filled_closes(ACCOUNT, iid)) > 1 for iid in keys)
        open_ = sum(sim.position_quantity(ACCOUNT, iid) != 0 for iid in keys)
        reported = sum(r.extra_orders for r in result.results)
        return (
            f"| {close_via} | {reconcile_delay:g} | {str(cancel_orders).lower()}"
            f" | {sim.stats.by_route[route]}"
            f" | {twice} | {reported} | {open_} | {len(sim.flipped_positions())}"
            f" | {int(result.exit_code)} |"
        )
    finally:
        await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--held", type=float, default=0.2)
    parser.add_argument("--hold", type=float, default=0.7)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--fill-delay", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(
        f"{args.positions} positions, {args.held:.0%} of closes held {args.hold:g} s,"
        f" timeout {args.timeout:g} s, fills after {args.fill_delay:g} s\n"
    )
    print(
        "| CLOSE_VIA | RECONCILE_DELAY s | cancel_orders | closes sent | closed twice (server)"
        " | extra_orders (report) | not flat | flipped | exit |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for delay in (0.0, 1.0):
        for cancel in (False, True):
            print(await one(args, reconcile_delay=delay, cancel_orders=cancel), flush=True)
    for cancel in (False, True):
        row = await one(args, reconcile_delay=0.0, cancel_orders=cancel, close_via="submit_orders")
        print(row, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
