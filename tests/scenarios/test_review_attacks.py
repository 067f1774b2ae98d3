"""REVIEW-19's attacks, rebuilt as tests and counted at the server: no position crosses zero, one
closing order per position unless a residue is due, nothing reported flat while open, every
order the server holds for the position in the report, and the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import liquidate, seed
from worker.api.client import NewOrder
from worker.inputs.targets import TargetSpec
from worker.output.exit_codes import ExitCode
from worker.simulator import SimClock, SimConfig, Simulator, serve


def truthful(sim: Simulator, doc: dict[str, Any], account: int, iid: str) -> None:
    """Server truth against the report, for one position."""
    [r] = doc["results"]
    held = sim.position_quantity(account, iid)
    if r["outcome"] in ("closed", "already_flat"):
        assert held == 0, r
    else:
        assert r["remaining_quantity"] in (str(held), None), r
    at_server = {o["id"] for o in sim.closing_orders(account, iid)}
    assert at_server <= {o["id"] for o in r["orders"]}, "an order the report does not show"
    assert sim.crossed_zero() == []
    assert sim.flipped_positions() == []


async def test_attack_stale_positions_with_others_resting_order_submit_orders(
    settings_for: Any, tmp_path: Path
) -> None:
    """Long 100; another participant's SELL 30 rests since before the run (cancel_orders off).
    The job sizes its submission for 70 (position_ref = 70). The job's order fills, then the
    participant's; the positions listing lags 0.6 s and still shows 100 when both orders read
    final. 100 != ref 70 -> taken as agreeing -> residue SELL 100 on a flat position."""
    sim = Simulator(SimConfig(fill_delay_s=0.05, positions_listing_lag_s=0.6, clock=SimClock()))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 64001, [100])
        [(account, iid)] = keys
        sim.add_participant_order(account, iid, "SELL", "30", fill_after_s=0.2, created_ago_s=65)
        result, doc = await liquidate(
            sim,
            settings_for,
            tmp_path,
            [TargetSpec(account, None, cancel_orders=False)],
            close_via="submit_orders",
        )
    finally:
        await runner.cleanup()
    sim.fill_all()
    closes = sim.closing_orders(account, iid)
    print("closing orders at server:", [(o["side"], o["quantity"], o["status"]) for o in closes])
    print(
        "all orders:",
        [
            (o["client_order_id"], o["side"], o["quantity"], o["status"], o["filled_quantity"])
            for o in sim.orders_of(account)
        ],
    )
    print(
        "report orders:",
        [
            (o["id"][:8], o.get("side"), o.get("quantity"), o.get("status"))
            for o in doc["results"][0]["orders"]
        ],
    )
    print("position at server:", sim.position_quantity(account, iid))
    print("crossed zero:", sim.crossed_zero())
    print(
        "report:",
        [(r["outcome"], r.get("remaining_quantity")) for r in doc["results"]],
        "exit",
        result.exit_code,
    )
    truthful(sim, doc, account, iid)
    assert sim.position_quantity(account, iid) == 0
    assert len(closes) == 1  # SELL 70; the desk's 30 did the rest: no residue was due
    assert doc["results"][0]["outcome"] == "closed"
    assert result.exit_code == ExitCode.OK


async def test_attack_unknown_outcome_look_uses_time_window_close_position(
    settings_for: Any, tmp_path: Path
) -> None:
    """Order timestamps 90 s behind the server clock (issue 19's row), and the first close's
    reply is lost after it was applied. The closer's look lists orders `from=since` (a window on
    created_at) and filters `created_at >= since`: it cannot see the working close, reads the
    position still open (fill after 1 s) and re-sends close_position."""
    from worker.simulator import Faults

    sim = Simulator(
        SimConfig(
            fill_delay_s=1.0,
            order_time_offset_s=-90.0,
            faults={"close": Faults(p_drop_after=1.0)},
        )
    )
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 64002, [100])
        [(account, iid)] = keys

        async def heal() -> None:
            import asyncio

            while sim.stats.by_route["close"] < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            sim.config.faults = {}

        import asyncio

        healer = asyncio.create_task(heal())
        result, doc = await liquidate(
            sim,
            settings_for,
            tmp_path,
            [TargetSpec(account, None, cancel_orders=False)],
            reconcile_delay=0.05,
        )
        healer.cancel()
    finally:
        await runner.cleanup()
    sim.fill_all()
    print("close requests:", sim.stats.by_route["close"])
    print("all orders:", [(o["side"], o["quantity"], o["status"]) for o in sim.orders_of(account)])
    print("position at server:", sim.position_quantity(account, iid))
    print(
        "report:",
        [(r["outcome"], r.get("remaining_quantity"), r.get("error")) for r in doc["results"]],
    )
    truthful(sim, doc, account, iid)
    assert sim.duplicate_closes() == []
    assert sim.stats.by_route["close"] == 1  # the look saw the working close: none re-sent
    assert sim.position_quantity(account, iid) == 0
    assert result.exit_code == ExitCode.OK


async def test_attack_plan_sized_from_stale_positions_submit_orders(
    settings_for: Any, tmp_path: Path
) -> None:
    """A desk order SELL 40 on long 100 filled 0.1 s before the run; the positions listing lags
    0.6 s. The plan reads 100, the submission goes out for SELL 100 on a position of 60."""
    import asyncio

    sim = Simulator(SimConfig(fill_delay_s=0.05, positions_listing_lag_s=0.6, clock=SimClock()))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 64003, [100])
        [(account, iid)] = keys
        await asyncio.sleep(0.7)  # the seeded position is visible in the lagging listing
        sim.add_participant_order(account, iid, "SELL", "40", fill_after_s=0.0)
        sim.fill_all()
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, None)], close_via="submit_orders"
        )
    finally:
        await runner.cleanup()
    sim.fill_all()
    print(
        "all orders:",
        [
            (o["client_order_id"], o["side"], o["quantity"], o["status"])
            for o in sim.orders_of(account)
        ],
    )
    print("position at server:", sim.position_quantity(account, iid))
    print(
        "report:",
        [(r["outcome"], r.get("remaining_quantity")) for r in doc["results"]],
        result.exit_code,
    )
    truthful(sim, doc, account, iid)
    assert sim.position_quantity(account, iid) == 0
    assert result.exit_code == ExitCode.OK


async def test_attack_rerun_after_partial_fill_submit_orders(
    settings_for: Any, tmp_path: Path
) -> None:
    """Run 1 (submit_orders): its close fills half, the rest is cancelled; no residue allowed
    (MAX_RESIDUE_CLOSES 0), so it ends not_flat with 50 open. Run 2 on the same state dir sends
    the same client id (generation 0), gets 409, finds the old half-filled order, and takes it
    as its close: its fills (-50) predate the plan's read (50), so every later read of 50 looks
    'stale' and no residue is ever sent."""
    sim = Simulator(SimConfig(fill_delay_s=0.02, p_partial_fill=1.0))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 64004, [100])
        [(account, iid)] = keys
        r1, d1 = await liquidate(
            sim,
            settings_for,
            tmp_path,
            [TargetSpec(account, None)],
            close_via="submit_orders",
            max_residue_closes=0,
        )
        print(
            "run 1:",
            [(r["outcome"], r.get("remaining_quantity")) for r in d1["results"]],
            r1.exit_code,
        )
        sim.config.p_partial_fill = 0.0
        r2, d2 = await liquidate(
            sim,
            settings_for,
            tmp_path,
            [TargetSpec(account, None)],
            close_via="submit_orders",
            flat_timeout=1.5,
        )
    finally:
        await runner.cleanup()
    sim.fill_all()
    print(
        "all orders:",
        [
            (o["client_order_id"], o["side"], o["quantity"], o["status"], o["filled_quantity"])
            for o in sim.orders_of(account)
        ],
    )
    print("position at server:", sim.position_quantity(account, iid))
    print(
        "run 2:",
        [(r["outcome"], r.get("remaining_quantity"), r.get("error")) for r in d2["results"]],
        r2.exit_code,
    )
    assert sim.position_quantity(account, iid) == 0
    truthful(sim, d2, account, iid)
    assert d2["results"][0]["outcome"] == "closed"
    # The 50 left, under the next generation: run 2 read the old order (final, half filled)
    # before its plan was confirmed, so its first close is sized for the 50 (no 409, no residue).
    assert d2["results"][0]["residue_closes"] == 0
    first, rest = sorted(sim.closing_orders(account, iid), key=lambda o: o["client_order_id"])
    assert (first["client_order_id"][-3:], first["filled_quantity"]) == ("-g0", "50")
    assert (rest["client_order_id"][-3:], rest["quantity"], rest["status"]) == (
        "-g1",
        "50",
        "FILLED",
    )
    assert sim.stats.status_counts[409] == 0
    assert {o["id"] for o in d2["results"][0]["orders"]} == {first["id"], rest["id"]}
    assert r2.exit_code == ExitCode.OK


async def test_a_market_order_that_flips_a_flat_position_counts_as_a_close() -> None:
    """Finding 5: the server-side count sees every market order the job entered, also one booked
    on a position already flat (the double close that flips it), so duplicate_closes,
    closing_orders and assert_exactly_once catch it."""
    from decimal import Decimal

    from tests.support import api_for

    sim = Simulator(SimConfig(fill_delay_s=0.0))
    runner, _ = await serve(sim)
    try:
        [(account, iid)] = seed(sim, 64005, [100])
        async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
            for generation in (0, 1):  # the second SELL 100 lands on a flat position
                await api.submit_order(account, NewOrder(
                    client_id=f"lq-test-g{generation}", instrument_id=iid,
                    side="SELL", quantity=Decimal(100),
                ))  # fmt: skip
                sim.fill_all()
    finally:
        await runner.cleanup()
    assert sim.position_quantity(account, iid) == -100
    assert len(sim.closing_orders(account, iid)) == 2
    assert sim.duplicate_closes() == [(account, iid)]
    assert sim.crossed_zero() == [(account, iid)]
