"""Attacks on following's one read of an account per round (`closing.follow_read`): its orders
listing reaches back only to the earliest order a decision needs, less RECONCILE_LOOKBACK, by
the order system's stamps. Each test is an adversary's move against that bound, counted at the
simulator in both close modes: every target ends with a true outcome, every fill on it is
accounted for (what filled is what was held), no position crosses zero, and every order of the
job is in the report (`the_truth`)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.test_takeover_job import start, until, worker_env
from tests.support import fill_after_the_plan, liquidate, seed, seed_accounts, sim_hook, the_truth
from worker.inputs.targets import TargetSpec
from worker.output.exit_codes import ExitCode
from worker.run.runner import RunRequest, run
from worker.simulator import Faults, SimClock, SimConfig, Simulator, serve
from worker.simulator.market import MarketConfig

MODES = ["close_position", "submit_orders"]
HOURS_6 = 6 * 3600.0
# The narrowest window following may list: RECONCILE_LOOKBACK 0 (the listing still reaches
# follow_read.MIN_MARGIN before the earliest stamp it needs).
NARROW = {"reconcile_lookback": 0.0}


def after_the_jobs_first_order(sim: Simulator, account: int, close_via: str, act: Any) -> None:
    """Run `act` once, right after the server books the job's first order on the account."""
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            act()

    if close_via == "close_position":
        sim_hook(sim)(once)
    else:
        sim.after_submit(account, once)


def desk_orders(sim: Simulator, account: int) -> list[dict[str, Any]]:
    return [o for o in sim.orders_of(account) if o["client_order_id"].startswith("desk-")]


def accounted(sim: Simulator, account: int, iid: str, held: int) -> None:
    """Every fill on the position is the job's or the desk's, and they sum to what it held."""
    moved = Decimal(0)
    for o in sim.orders_of(account):
        if o["instrument_id"] != iid:
            continue
        filled = Decimal(o["filled_quantity"])
        moved += filled if o["side"] == "BUY" else -filled
    assert held + moved == sim.position_quantity(account, iid) == 0


@pytest.mark.parametrize("close_via", MODES)
@pytest.mark.parametrize("desk_fills", ["before_the_close", "after_the_close"])
async def test_a_desk_limit_resting_since_the_morning_fills_while_following(
    settings_for: Any, tmp_path: Path, close_via: str, desk_fills: str
) -> None:
    """Long 100; a desk BUY 30 limit resting six hours (GTC, long before the window) fills
    while the worker follows, before or after the job's close fills. The listing reaches back
    to it (it worked at the snapshot): the worker waits for it, then closes the 30 it added."""
    sim = Simulator(SimConfig(fill_delay_s=0.15 if desk_fills == "before_the_close" else 0.03))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 28001, [100])
        [(account, iid)] = keys
        sim.add_participant_order(
            account, iid, "BUY", "30", order_type="LIMIT", limit_price="1.00",
            fill_after_s=0.05 if desk_fills == "before_the_close" else 0.6,
            created_ago_s=HOURS_6,
        )  # fmt: skip
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, None, cancel_orders=False)],
            close_via=close_via, **NARROW,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    [desk] = desk_orders(sim, account)
    assert desk["status"] == "FILLED"
    assert sim.crossed_zero() == []
    the_truth(sim, doc, keys, flat=True)
    accounted(sim, account, iid, 100)
    [r] = doc["results"]
    assert desk["id"] not in {o["id"] for o in r["orders"]}
    assert result.exit_code == ExitCode.OK, doc["summary"]


@pytest.mark.parametrize("close_via", MODES)
async def test_a_lagging_listing_while_the_close_and_a_morning_desk_order_fill(
    settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    """The orders listing is 0.4 s behind order entry (the close's own order missing from it
    for its first rounds). A desk SELL 40 limit resting since the morning fills half a second
    in; the job's first order fills 60% (its rest cancelled). Nothing is decided while the
    listing misses an order; the desk's fill is counted, the book ends flat, never crossed.
    (close_position waits out the desk's order on its closing side before it sends.)"""
    sim = Simulator(
        SimConfig(
            fill_delay_s=0.05, p_partial_fill=1.0, partial_fill_fraction=0.6,
            orders_listing_lag_s=0.4, executions_listing_lag_s=0.1,
        )
    )  # fmt: skip
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 28002, [100])
        [(account, iid)] = keys
        sim.add_participant_order(
            account, iid, "SELL", "40", order_type="LIMIT", limit_price="500.00",
            fill_after_s=0.5, created_ago_s=HOURS_6,
        )  # fmt: skip

        def no_more_partial_fills() -> None:
            sim.config.p_partial_fill = 0.0

        after_the_jobs_first_order(sim, account, close_via, no_more_partial_fills)
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, None, cancel_orders=False)],
            close_via=close_via, **NARROW,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert sim.crossed_zero() == []
    the_truth(sim, doc, keys, flat=True)
    accounted(sim, account, iid, 100)
    assert result.exit_code == ExitCode.OK, doc["summary"]


@pytest.mark.parametrize("close_via", MODES)
async def test_closes_applied_late_by_the_gateway_with_the_narrowest_window(
    settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    """30 positions, a fifth of the closes held at the gateway past REQUEST_TIMEOUT and applied
    late (their orders stamped after the client gave up), RECONCILE_LOOKBACK 0. Every late
    order is found by following's listing or the ledger, each double is flagged and closed back,
    nothing is left crossed or open, every order is reported."""
    sim = Simulator(
        SimConfig(fill_delay_s=0.1, seed=5, orders_listing_lag_s=0.2, executions_listing_lag_s=0.05)
    )
    runner, _ = await serve(sim)
    try:
        sizes = [10 + (k * 37) % 490 for k in range(30)]
        keys = seed(sim, 28003, sizes)
        route = "close" if close_via == "close_position" else "submit"
        sim.config.faults = {route: Faults(p_apply_late=0.2, apply_late_s=0.7)}
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(28003, None, cancel_orders=False)],
            close_via=close_via, batch_size=1, request_timeout=0.5, reconcile_delay=0.1,
            flat_timeout=6.0, follow_pause=0.02, follow_pause_max=0.4, **NARROW,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert sim.stats.faults_injected["apply_late"] >= 3
    the_truth(sim, doc, keys, flat=True)
    assert doc["summary"]["not_flat"] == 0
    if close_via == "submit_orders":  # one client id per close: a late one is never doubled
        assert sim.crossed_zero() == []
        the_truth(sim, doc, keys, one_order=True)
    assert result.exit_code == ExitCode.OK, doc["summary"]


@pytest.mark.parametrize("close_via", MODES)
async def test_a_residue_applied_late_reads_flat_before_either_listing_shows_it(
    settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    """Long 100: the close fills 60 (its rest cancelled); the residue close for 40 is held at
    the gateway past REQUEST_TIMEOUT and applied 0.6 s after it was sent, inside RECONCILE_DELAY.
    The position reads 0 at once; the orders and executions listings show the residue's order
    and fill only 1.2 s later. Flat is not settled until its order is found (by its fill in the
    ledger, read by id, or the listing): it is in the report, one residue, nothing crossed."""
    sim = Simulator(
        SimConfig(
            fill_delay_s=0.05, p_partial_fill=1.0, partial_fill_fraction=0.6,
            orders_listing_lag_s=1.2, executions_listing_lag_s=1.2,
        )
    )  # fmt: skip
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 28008, [100])
        [(account, iid)] = keys
        route = "close" if close_via == "close_position" else "submit"

        def the_residue_is_held_at_the_gateway() -> None:
            sim.config.p_partial_fill = 0.0
            sim.config.faults = {route: Faults(p_apply_late=1.0, apply_late_s=0.6, max_faults=1)}

        after_the_jobs_first_order(sim, account, close_via, the_residue_is_held_at_the_gateway)
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, None, cancel_orders=False)],
            close_via=close_via, request_timeout=0.5, reconcile_delay=0.3, flat_timeout=8.0,
            follow_pause=0.02, follow_pause_max=0.1, **NARROW,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert sim.stats.faults_injected["apply_late"] == 1
    assert sim.crossed_zero() == []
    the_truth(sim, doc, keys, flat=True)
    accounted(sim, account, iid, 100)
    [r] = doc["results"]
    assert len(r["orders"]) == 2, r
    assert r["outcome"] == "closed", r
    assert result.exit_code == ExitCode.OK, doc["summary"]


RERUNS = [
    ("close_position", "working"),
    ("submit_orders", "working"),
    ("submit_orders", "filling_at_the_rerun"),
    ("close_position", "filling_at_the_rerun"),
]


@pytest.mark.parametrize(("close_via", "left"), RERUNS)
async def test_a_rerun_after_sigkill_whose_orders_are_older_than_its_window(
    settings_for: Any, tmp_path: Path, close_via: str, left: str
) -> None:
    """The killed run's closes are booked and working when it is SIGKILLed; the server's clock
    then moves 20 minutes on, so the rerun's window (RECONCILE_LOOKBACK 0) starts long after
    every one of them. `working`: they still work at the rerun and fill after its plan;
    `filling_at_the_rerun`: they came due meanwhile and fill, half each (their rest cancelled),
    as the rerun first reads the accounts: fills in its window of orders from before it. Each
    position is closed by the killed run's order and at most one more, nothing crosses zero,
    every order of the job is in the rerun's report."""
    clock = SimClock()
    sim = Simulator(SimConfig(fill_delay_s=900.0, clock=clock))
    positions = seed_accounts(sim, 2, 6)
    held = {k: sim.position_quantity(*k) for k in positions}
    state = tmp_path / "state"
    runner, _ = await serve(sim, "127.0.0.1", 0)
    try:
        env = worker_env(
            sim, state, LIQUIDATOR_CLOSE_VIA=close_via, LIQUIDATOR_BATCH_SIZE="1",
            LIQUIDATOR_RECONCILE_LOOKBACK="0",
        )  # fmt: skip
        killed = await start(sim.base_url, env)
        route = "close" if close_via == "close_position" else "submit"
        await until(lambda: sim.stats.by_route[route] >= len(positions), "never sent its closes")
        await until(
            lambda: sum(len(sim.closing_orders(*k)) for k in positions) == len(positions),
            "its closes were never booked",
        )
        killed.kill()
        await killed.wait()
        if left == "working":
            clock.advance(1200.0 - 900.0)  # 5 minutes on: still working, due in 10 more
            fill_after_the_plan(sim, [20001, 20002], seconds=0.3)
        else:
            sim.config.p_partial_fill = 1.0  # (drawn at booking: set on the orders instead)
            for account in (20001, 20002):
                for o in sim.book.accounts[account].orders:
                    o.ends = "partial"
            sim.config.p_partial_fill = 0.0
            clock.advance(1200.0)  # due: they fill half as the rerun first touches them
            sim.config.fill_delay_s = 0.05
        report = tmp_path / "rerun.json"
        settings = settings_for(
            sim, close_via=close_via, reconcile_lookback=0.0, flat_timeout=5.0,
            follow_pause=0.02, follow_pause_max=0.1, batch_size=1,
        )  # fmt: skip
        specs = [TargetSpec(20001, None), TargetSpec(20002, None)]
        rerun = await asyncio.wait_for(
            run(settings, RunRequest(specs=specs, report_path=report), asyncio.Event()), 60
        )
    finally:
        await runner.cleanup()
    doc = json.loads(report.read_text())
    assert sim.crossed_zero() == []
    the_truth(sim, doc, positions, flat=True)
    for (account, iid), quantity in held.items():
        orders = sim.closing_orders(account, iid)
        assert orders[0]["client_order_id"].endswith("-g0") or close_via == "close_position"
        assert len(orders) <= 2, orders
        filled = sum(Decimal(o["filled_quantity"]) for o in orders)
        assert filled == abs(quantity), orders
    assert rerun.exit_code == ExitCode.OK, [
        (r["instrument"], r["outcome"], r["error"]) for r in doc["results"]
    ]


@pytest.mark.parametrize("close_via", MODES)
async def test_a_desk_order_stamped_before_the_window_that_works_while_a_residue_is_due(
    settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    """The order system's clock steps back an hour after the job's close is booked (the
    assumption in docs/safety.md broken): a desk SELL 40 limit entered then is stamped before
    every order following has seen, so its bounded listing does not show it. The close fills
    60 of 100; a residue for the 40 would cross zero once the desk's order fills too. Nothing
    may be sent on the instrument while the desk's order works."""
    sim = Simulator(SimConfig(fill_delay_s=0.05, p_partial_fill=1.0, partial_fill_fraction=0.6))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 28004, [100])
        [(account, iid)] = keys

        def the_clock_steps_back() -> None:
            sim.config.p_partial_fill = 0.0
            sim.config.order_time_offset_s = -3600.0
            sim.add_participant_order(
                account, iid, "SELL", "40", order_type="LIMIT", limit_price="500.00",
                fill_after_s=1.0,
            )  # fmt: skip

        after_the_jobs_first_order(sim, account, close_via, the_clock_steps_back)
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, None, cancel_orders=False)],
            close_via=close_via, **NARROW,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    [desk] = desk_orders(sim, account)
    assert desk["status"] == "FILLED"
    assert sim.crossed_zero() == []
    the_truth(sim, doc, keys, flat=True)
    accounted(sim, account, iid, 100)
    [r] = doc["results"]
    assert r["residue_closes"] == 0, r
    assert result.exit_code == ExitCode.OK, doc["summary"]


@pytest.mark.parametrize("close_via", MODES)
@pytest.mark.parametrize("stamped", ["in_order", "an_hour_early"])
async def test_a_position_flat_then_reopened_by_a_desk_fill_before_the_confirming_read(
    settings_for: Any, tmp_path: Path, close_via: str, stamped: str
) -> None:
    """The close fills all 100; a desk market BUY 20, entered as the close is booked, fills
    just after it, before following's first read could confirm flat. `an_hour_early`: the desk
    order is stamped an hour before the window (the listing cannot show it; the ledger's fill
    names it, read by id). The 20 it reopened is closed once, nothing crosses zero."""
    sim = Simulator(SimConfig(fill_delay_s=0.05))
    runner, _ = await serve(sim)
    try:
        keys = seed(sim, 28005, [100])
        [(account, iid)] = keys

        def the_desk_reopens() -> None:
            if stamped == "an_hour_early":
                sim.config.order_time_offset_s = -3600.0
            sim.add_participant_order(account, iid, "BUY", "20", fill_after_s=0.06)

        after_the_jobs_first_order(sim, account, close_via, the_desk_reopens)
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, None, cancel_orders=False)],
            close_via=close_via, follow_pause=0.2, follow_pause_max=0.4, **NARROW,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert sim.crossed_zero() == []
    the_truth(sim, doc, keys, flat=True)
    accounted(sim, account, iid, 100)
    [r] = doc["results"]
    assert r["residue_closes"] == 1, r
    desk_ids = {o["id"] for o in desk_orders(sim, account)}
    assert desk_ids.isdisjoint({o["id"] for o in r["orders"]})
    assert result.exit_code == ExitCode.OK, doc["summary"]


async def test_protected_limits_escalated_beside_a_desk_order_stamped_before_the_window(
    settings_for: Any, tmp_path: Path
) -> None:
    """CLOSE_STYLE=protected, three positions of 300 on a thin book: each limit takes the best
    level, then rests until DEADLINE_S escalates the three (more than BY_ID_MAX: cancelled by
    instrument where no other order works). As the limits are booked, the order system's clock
    steps back an hour and the desk rests a SELL 100 limit on R0 (never marketable), stamped
    before every order following's bounded listing shows. It is the desk's: never cancelled by
    the job, nothing sent on R0 while it works (R0 is not_flat, its rest unsent), R1 and R2
    are rested and flat."""
    book = MarketConfig(
        spread_bps=10.0, depth=6, level_size=50, size_jitter=0.0, level_step_bps=20.0,
        refill_s=3600.0,
    )  # fmt: skip
    sim = Simulator(SimConfig(fill_delay_s=0.02, market=book))
    runner, _ = await serve(sim)
    try:
        account = 28006
        keys = seed(sim, account, [300, 300, 300], prefix="R")
        r0 = keys[0][1]
        desk: list[str] = []

        def the_clock_steps_back() -> None:
            sim.config.order_time_offset_s = -3600.0
            desk.append(
                sim.add_participant_order(
                    account, r0, "SELL", "100", order_type="LIMIT", limit_price="500.00"
                )
            )

        sim.after_submit(account, the_clock_steps_back)
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, None, cancel_orders=False)],
            close_via="submit_orders", close_style="protected", collar_bps=5,
            collar_max_bps=15, reprice_s=0.05, deadline_s=1.0, flat_timeout=2.5, **NARROW,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    [desk_order] = [o for o in sim.orders_of(account) if o["id"] == desk[0]]
    assert desk_order["status"] == "NEW", desk_order  # the desk's order, untouched
    assert sim.crossed_zero() == []
    the_truth(sim, doc, keys)
    by_iid = {r["instrument_id"]: r for r in doc["results"]}
    assert by_iid[r0]["outcome"] == "not_flat", by_iid[r0]
    assert [by_iid[iid]["outcome"] for _, iid in keys[1:]] == ["closed", "closed"]
    assert result.exit_code != ExitCode.OK


async def test_a_protected_rest_waits_for_a_desk_order_stamped_before_the_window(
    settings_for: Any, tmp_path: Path
) -> None:
    """CLOSE_STYLE=protected, one position of 300 on a thin book: the limit takes the best
    level (50), then rests until DEADLINE_S escalates it (cancelled by id). As it is booked, the
    order system's clock steps back an hour and the desk enters a SELL 100 at market that the
    market fills 2 s later, stamped before following's floor. The rest at market waits for it
    and closes only what is left: 150, nothing crossed."""
    book = MarketConfig(
        spread_bps=10.0, depth=8, level_size=50, size_jitter=0.0, level_step_bps=20.0,
        refill_s=3600.0,
    )  # fmt: skip
    sim = Simulator(SimConfig(fill_delay_s=0.02, market=book))
    runner, _ = await serve(sim)
    try:
        account = 28007
        keys = seed(sim, account, [300], prefix="Q")
        [(_, iid)] = keys

        def the_clock_steps_back() -> None:
            sim.config.order_time_offset_s = -3600.0
            sim.add_participant_order(account, iid, "SELL", "100", fill_after_s=2.0)

        sim.after_submit(account, the_clock_steps_back)
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, None, cancel_orders=False)],
            close_via="submit_orders", close_style="protected", collar_bps=5,
            collar_max_bps=15, reprice_s=0.05, deadline_s=1.0, flat_timeout=4.0, **NARROW,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    sim.fill_all()  # (the desk's order, had the run ended before it filled)
    assert sim.crossed_zero() == []
    [desk] = desk_orders(sim, account)
    assert desk["status"] == "FILLED", desk
    the_truth(sim, doc, keys, flat=True)
    accounted(sim, account, iid, 300)
    [r] = doc["results"]
    assert sum(Decimal(o["filled_quantity"]) for o in r["orders"]) == 200, r
    assert result.exit_code == ExitCode.OK, doc["summary"]
