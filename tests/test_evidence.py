"""Issue 19: what the worker believes about its own orders rests on evidence (ids, the server's
timestamps), never on a time window or a listing being current. Counted at the server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support import liquidate, seed, the_truth
from worker.runner import ExitCode
from worker.simulator import Faults, SimConfig, Simulator, serve
from worker.targets import TargetSpec


async def test_order_timestamps_90_s_behind_the_servers_clock_close_each_position_once(
    settings_for: Any, tmp_path: Path
) -> None:
    """Orders stamped 90 s behind GET /v1/clock (beyond RECONCILE_LOOKBACK): a listing bounded
    by `from` never shows them. Following reads them by id and by status: no residue close
    while they work, none doubled."""
    sim = Simulator(SimConfig(fill_delay_s=0.3, order_time_offset_s=-90.0))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 63001, [100, -40, 30, 20])
        result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(63001, None)])
    finally:
        await runner.cleanup()
    sim.fill_all()
    the_truth(sim, doc, keys)
    assert sim.duplicate_closes() == []
    assert all(sim.position_quantity(a, i) == 0 for a, i in keys)
    assert result.exit_code == ExitCode.OK, doc


async def test_a_residue_close_answered_503_twice_does_not_use_up_max_residue_closes(
    settings_for: Any, tmp_path: Path, captured: Any
) -> None:
    """The first close fills half; the next two residue closes are answered 503 (nothing
    applied). A look proves each created nothing: neither counts, the third closes the rest,
    and every attempt is an event."""
    sim = Simulator(SimConfig(fill_delay_s=0.02, p_partial_fill=1.0))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 63002, [100])
        [(account, iid)] = keys

        async def residues_answered_503() -> None:
            while sim.stats.by_route["close"] < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            sim.config.p_partial_fill = 0.0
            sim.config.faults = {"close": Faults(p_503=1.0, retry_after_s=0)}
            while sim.stats.by_route["close"] < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            sim.config.faults = {}

        gateway = asyncio.create_task(residues_answered_503())
        result, doc = await liquidate(
            sim,
            settings_for,
            tmp_path,
            [TargetSpec(account, None)],
            max_residue_closes=1,
            reconcile_delay=0.05,
        )
        gateway.cancel()
    finally:
        await runner.cleanup()
    sim.fill_all()
    the_truth(sim, doc, keys)
    assert sim.position_quantity(account, iid) == 0
    assert sim.stats.by_route["close"] == 4  # the first, two answered 503, the one that closed
    [r] = doc["results"]
    assert r["outcome"] == "closed", r
    assert result.exit_code == ExitCode.OK, doc
    logged = captured.entries
    failed = [e for e in logged if e["event"] == "residue_close_failed"]
    assert [e["outcome"] for e in failed] == ["unknown", "nothing_created"] * 2
    assert len([e for e in logged if e["event"] == "residue_close_sent"]) == 1
