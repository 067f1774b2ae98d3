"""Issue 19: what the worker believes about its own orders rests on evidence (ids, the server's
timestamps), never on a time window or a listing being current. Counted at the server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import time_machine

from tests.support import events_emitted, liquidate, seed, the_truth
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode
from worker.simulator import Faults, SimClock, SimConfig, Simulator, serve

BOTH_MODES = pytest.mark.parametrize("close_via", ["close_position", "submit_orders"])


async def until(condition: Any, limit_s: float = 20) -> None:
    """Wait (in small real steps) until `condition()` holds at the server."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the server never saw it"
        await asyncio.sleep(0.002)


def sizes(count: int) -> list[int]:
    """Longs and shorts of assorted sizes."""
    return [(k % 7 + 2) * 10 * (-1 if k % 4 == 0 else 1) for k in range(count)]


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
    settings_for: Any, tmp_path: Path
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
        with events_emitted() as emitted:
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
    logged = emitted
    failed = [e for e in logged if e["event"] == "residue_close_failed"]
    assert [e["outcome"] for e in failed] == ["unknown", "nothing_created"] * 2
    assert len([e for e in logged if e["event"] == "residue_close_sent"]) == 1


async def _host_clock_steps_forward(
    settings_for: Any, tmp_path: Path, close_via: str, fill_delay_s: float, account: int
) -> None:
    """The host's wall clock (everything the worker reads of local time: datetime.now, time.time,
    the report's and journal's stamps) steps 120 s forward after the key check read the server's
    clock, before the fan-out. The server's clock (SimClock) does not move."""
    sim = Simulator(SimConfig(fill_delay_s=fill_delay_s, clock=SimClock()))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, account, sizes(100))
        with time_machine.travel(time.time(), tick=True) as host:
            # After the key check read the server's clock, before the fan-out: mid-run.
            sim.after_listing(account, lambda: host.shift(120))
            result, doc = await liquidate(
                sim, settings_for, tmp_path, [TargetSpec(account, None)], close_via=close_via
            )
    finally:
        await runner.cleanup()
    sim.fill_all()  # whatever still works at the server fills now: the worst case
    the_truth(sim, doc, keys)
    assert sim.crossed_zero() == []
    the_truth(sim, None, keys, fill_first=True, one_order=True)
    assert all(sim.position_quantity(a, i) == 0 for a, i in keys)
    assert {r["outcome"] for r in doc["results"]} == {"closed"}, doc
    assert result.exit_code == ExitCode.OK


async def test_host_clock_steps_120_s_forward_close_position_closes_each_once(
    settings_for: Any, tmp_path: Path
) -> None:
    """close_position, fills after 1 s (scaled to 0.1 s): each position closed once."""
    await _host_clock_steps_forward(settings_for, tmp_path, "close_position", 0.1, 63003)


async def test_host_clock_steps_120_s_forward_submit_orders_closes_each_once(
    settings_for: Any, tmp_path: Path
) -> None:
    """submit_orders, fills after 10 s (scaled to 1 s): each position closed once."""
    await _host_clock_steps_forward(settings_for, tmp_path, "submit_orders", 1.0, 63004)


@BOTH_MODES
async def test_orders_listing_1_s_behind_order_entry_closes_each_once(
    settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    """GET .../orders leaves each order out for a while after it was made (1 s, scaled to
    0.5 s; fills after 0.2 s): a listing that does not show the job's close is stale, never
    a reason for a residue close; the report shows each close final (none PENDING_NEW)."""
    sim = Simulator(SimConfig(fill_delay_s=0.2, orders_listing_lag_s=0.5, clock=SimClock()))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 63005, sizes(40))
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(63005, None)], close_via=close_via
        )
    finally:
        await runner.cleanup()
    sim.fill_all()  # whatever still works at the server fills now: the worst case
    the_truth(sim, doc, keys)
    assert sim.crossed_zero() == []
    the_truth(sim, None, keys, fill_first=True, one_order=True)
    for r in doc["results"]:
        assert r["outcome"] == "closed", r
        assert [o["status"] for o in r["orders"]] == ["FILLED"], r
    assert result.exit_code == ExitCode.OK


async def test_positions_listing_1_5_s_old_submit_orders_closes_each_once(
    settings_for: Any, tmp_path: Path
) -> None:
    """GET .../positions shows quantities 1.5 s old (scaled to 0.6 s; fills after 0.1 s): a
    position read that does not yet show the job's fill is stale, not a residue."""
    sim = Simulator(SimConfig(fill_delay_s=0.1, positions_listing_lag_s=0.6, clock=SimClock()))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 63006, sizes(40))
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(63006, None)], close_via="submit_orders"
        )
    finally:
        await runner.cleanup()
    sim.fill_all()  # whatever still works at the server fills now: the worst case
    the_truth(sim, doc, keys)
    assert sim.crossed_zero() == []
    the_truth(sim, None, keys, fill_first=True, one_order=True)
    assert {r["outcome"] for r in doc["results"]} == {"closed"}, doc
    assert result.exit_code == ExitCode.OK


@BOTH_MODES
async def test_closing_side_orders_resting_65_s_before_the_run_are_counted(
    settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    """Another participant's closing-side orders, placed 65 s before the run (older than
    RECONCILE_LOOKBACK), fill during it; cancel_orders is off, so they stay. The worker counts
    them before it sizes a close: no position crosses zero."""
    sim = Simulator(SimConfig(fill_delay_s=0.05, clock=SimClock()))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 63007, sizes(40))
        rested = keys[::3]
        for account, iid in rested:
            held = sim.position_quantity(account, iid)
            sim.add_participant_order(
                account, iid, "SELL" if held > 0 else "BUY", str(abs(held) // 2),
                fill_after_s=0.4, created_ago_s=65.0,
            )  # fmt: skip
        with events_emitted() as emitted:
            result, doc = await liquidate(
                sim,
                settings_for,
                tmp_path,
                [TargetSpec(63007, None, cancel_orders=False)],
                close_via=close_via,
            )
    finally:
        await runner.cleanup()
    sim.fill_all()  # whatever still works at the server fills now: the worst case
    the_truth(sim, doc, keys)
    assert sim.crossed_zero() == []
    assert all(sim.position_quantity(a, i) == 0 for a, i in keys)
    assert {r["outcome"] for r in doc["results"]} == {"closed"}, doc
    assert result.exit_code == ExitCode.OK
    waited = {e["instrument"] for e in emitted if e["event"] == "close_waits_for_orders"}
    assert len(waited) == len(rested)


@BOTH_MODES
async def test_a_residue_close_whose_reply_was_lost_fills_between_two_reads(
    settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    """The first close is rejected after acceptance (nothing fills); the gateway holds the
    residue close past the client's timeout (its reply is lost), then applies it, and it fills
    while following reads the positions (a slow route) after an orders read that could not
    show it. The target is closed, not already_flat, and its report lists the residue order."""
    sim = Simulator(SimConfig(fill_delay_s=0.02, p_reject_after_accept=1.0))
    runner, _ = await serve(sim)
    route = "close" if close_via == "close_position" else "submit"
    try:
        keys = seed(sim, 63008, [100])
        [(account, iid)] = keys

        async def residue_reply_lost() -> None:
            await until(lambda: sim.stats.by_route[route] >= 1)
            sim.config.p_reject_after_accept = 0.0
            sim.config.fill_delay_s = 0.0
            sim.config.faults = {
                route: Faults(p_apply_late=1.0, apply_late_s=0.5),
                "positions": Faults(latency_s=0.25),
            }
            await until(lambda: sim.stats.by_route[route] >= 2)
            sim.config.faults = {"positions": Faults(latency_s=0.25)}

        gateway = asyncio.create_task(residue_reply_lost())
        result, doc = await liquidate(
            sim,
            settings_for,
            tmp_path,
            [TargetSpec(account, None)],
            close_via=close_via,
            request_timeout=0.4,
            reconcile_delay=0.05,
        )
        await gateway
    finally:
        await runner.cleanup()
    sim.fill_all()  # whatever still works at the server fills now: the worst case
    the_truth(sim, doc, keys)
    assert sim.crossed_zero() == []
    assert sim.position_quantity(account, iid) == 0
    closes = sim.closing_orders(account, iid)
    assert [o["status"] for o in closes] == ["REJECTED", "FILLED"]
    [r] = doc["results"]
    assert r["outcome"] == "closed", r
    assert {o["id"] for o in r["orders"]} == {o["id"] for o in closes}
    assert result.exit_code == ExitCode.OK, doc


async def test_a_target_failed_with_unknown_outcome_read_half_open_gets_its_residue_close(
    settings_for: Any, tmp_path: Path
) -> None:
    """The first close is applied (it fills half) but its reply never comes, and the look
    after it cannot read the account: the target fails with its outcome unknown. Following
    reads it half open with nothing working: it gets its residue close and ends flat."""
    sim = Simulator(SimConfig(fill_delay_s=0.02, p_partial_fill=1.0))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 63009, [100])
        [(account, iid)] = keys
        sim.config.faults = {"close": Faults(p_hang_after=1.0, hang_s=0.5)}

        async def the_look_cannot_read() -> None:
            await until(lambda: sim.stats.by_route["close"] >= 1)
            sim.config.p_partial_fill = 0.0
            # The look's two tries fail (MAX_ATTEMPTS 2); following's reads then succeed.
            sim.config.faults = {"orders": Faults(p_503=1.0, retry_after_s=0, max_faults=2)}

        gateway = asyncio.create_task(the_look_cannot_read())
        with events_emitted() as emitted:
            result, doc = await liquidate(
                sim,
                settings_for,
                tmp_path,
                [TargetSpec(account, None)],
                request_timeout=0.2,
                max_attempts=2,
                reconcile_delay=0.05,
            )
        await gateway
    finally:
        await runner.cleanup()
    sim.fill_all()  # whatever still works at the server fills now: the worst case
    the_truth(sim, doc, keys)
    assert sim.position_quantity(account, iid) == 0
    logged = emitted
    assert [e["event"] for e in logged if e["event"] == "residue_close_sent"] == [
        "residue_close_sent"
    ]
    [r] = doc["results"]
    assert r["outcome"] == "closed", r
    assert result.exit_code == ExitCode.OK, doc
