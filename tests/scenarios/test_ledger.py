"""Issue 27's rows, rebuilt against the simulator and counted at the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import liquidate, seed, the_truth
from worker.inputs.targets import TargetSpec
from worker.output.exit_codes import ExitCode
from worker.simulator import Faults, SimConfig, Simulator, serve


async def test_closes_held_at_the_gateway_then_applied_are_found_flagged_and_closed_back(
    settings_for: Any, tmp_path: Path
) -> None:
    sim = Simulator(SimConfig(fill_delay_s=0.15, seed=3, orders_listing_lag_s=0.3))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 27001, [10 + (k * 37) % 490 for k in range(100)])
        sim.config.faults = {"close": Faults(p_apply_late=0.2, apply_late_s=0.7)}
        result, doc = await liquidate(
            sim,
            settings_for,
            tmp_path,
            [TargetSpec(27001, None, cancel_orders=False)],
            request_timeout=0.5,
            reconcile_delay=0.1,
            flat_timeout=6.0,
            follow_pause=0.02,
            follow_pause_max=0.4,
        )
    finally:
        await runner.cleanup()
    print(sim.stats.faults_injected, doc["summary"])
    for r in doc["results"]:
        if r["outcome"] != "closed" or r["extra_orders"]:
            print(
                r["outcome"],
                r["instrument"],
                r["attempts"],
                r["fate"],
                r["remaining_quantity"],
                r["extra_orders"],
                r["error"],
                [(o["side"], o["quantity"], o["status"]) for o in r["orders"]],
            )
    the_truth(sim, doc, keys)
    assert result.exit_code == ExitCode.OK
