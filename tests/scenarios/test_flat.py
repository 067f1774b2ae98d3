"""Flat, verified: under market conditions every position ends flat, or its target says not_flat.

Each test counts at the server: positions, every closing order it holds, flips.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    FAST_FOLLOW,
    events_emitted,
    liquidate,
    seed,
    sim_behind,
    sim_hook,
    the_truth,
)
from worker.inputs.targets import TargetSpec
from worker.observe import events
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, SimConfig, Simulator


@pytest.mark.parametrize("rest", ["CANCELED", "EXPIRED"])
async def test_partial_fills_get_a_residue_close_and_end_flat(
    sim: Simulator, settings_for: Any, tmp_path: Path, rest: str
) -> None:
    keys = seed(sim, 61001, [100, -50, 30, 80, -20, 10])
    sim.config.p_partial_fill = 1.0  # every close fills half, residue closes too
    sim.config.partial_rest_status = rest
    with events_emitted() as emitted:
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(61001, None)], max_residue_closes=2
        )
    assert sim.stats.by_route["close"] == 3 * len(keys)  # the close and two residue closes
    the_truth(sim, doc, keys)
    residues = [e for e in emitted if e["event"] == events.RESIDUE_CLOSE]
    assert residues
    assert all(e["remaining_quantity"] != "0" for e in residues)
    # Twice half, then half again: with two residue closes every 10+ lot is still open.
    assert result.exit_code == ExitCode.FAILED
    assert doc["summary"]["not_flat"] == len(keys)


async def test_a_partial_fill_then_a_whole_residue_close_is_closed_with_both_orders(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61002, [100, -60, 40])
    sim.config.p_partial_fill = 1.0
    sent = 0

    @sim_hook(sim)
    def after_close() -> None:
        nonlocal sent
        sent += 1
        if sent == len(keys):  # the residue closes fill whole
            sim.config.p_partial_fill = 0.0

    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(61002, None)])
    assert result.exit_code == ExitCode.OK
    the_truth(sim, doc, keys)
    for r in doc["results"]:
        assert r["outcome"] == "closed"
        assert r["residue_closes"] == 1
        assert [o["status"] for o in r["orders"]] == ["CANCELED", "FILLED"]
        assert all(o["own"] for o in r["orders"])
    assert sim.stats.by_route["close"] == 2 * len(keys)
    # Each residue close was journaled like any close: its intent before it was sent.
    journal = tmp_path / "state" / "journal.sqlite3"
    with sqlite3.connect(journal) as db:
        attempts = db.execute("SELECT instrument_id, MAX(attempt) FROM attempts GROUP BY 1")
        assert dict(attempts.fetchall()) == {iid: 2 for _, iid in keys}


async def test_once_every_close_is_sent_following_reads_at_once(
    sim: Simulator, settings_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = seed(sim, 61001, [100, -50, 30]) + seed(sim, 61002, [20, 40])
    sim.config.fill_delay_s = 0  # filled by the time anyone reads
    # Pauses far longer than this test may take: the fan-out's end cuts the one under way, and
    # the read goes at once (a wait of SETTLE_S first would time the test out).
    monkeypatch.setattr("worker.closing.follow.SETTLE_S", 60.0)
    result, doc = await asyncio.wait_for(
        liquidate(
            sim,
            settings_for,
            tmp_path,
            [TargetSpec(61001, None), TargetSpec(61002, None)],
            flat_timeout=120.0,
            follow_pause=60.0,
            follow_pause_max=60.0,
        ),
        timeout=10,
    )
    assert result.exit_code == ExitCode.OK
    assert doc["summary"]["closed"] == len(keys)
    the_truth(sim, doc, keys)
    # One following read per account (orders, then positions), after the plan's listing.
    assert sim.stats.by_route["positions"] == 2 * 2


async def test_fills_trickling_in_after_the_fan_out_are_polled_at_the_usual_pace(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """After the fan-out's end, a read that settles some is followed FOLLOW_PAUSE later, not
    SETTLE_S: fills landing one by one do not turn following into a poll every 50 ms."""
    keys = seed(sim, 61001, [10] * 12)
    sim.config.fill_delay_s = 0.05

    @sim_hook(sim)
    def each_close_fills_later() -> None:  # 0.05 s, 0.10 s, ... 0.60 s after its close
        sim.config.fill_delay_s += 0.05

    result, doc = await liquidate(
        sim,
        settings_for,
        tmp_path,
        [TargetSpec(61001, None)],
        follow_pause=0.3,
        follow_pause_max=0.6,
    )
    assert result.exit_code == ExitCode.OK
    the_truth(sim, doc, keys)
    routes = [r.route for r in sim.requests]
    last_close = len(routes) - 1 - routes[::-1].index("close")
    reads_after = routes[last_close:].count("orders")
    # At once, SETTLE_S on, then ~0.15, 0.45, 0.75 s: five. A poll every SETTLE_S would be 12+.
    assert 2 <= reads_after <= 7


async def test_no_residue_close_allowed_leaves_the_target_not_flat_with_exit_1(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61003, [100])
    sim.config.p_partial_fill = 1.0
    sim.config.partial_rest_status = "EXPIRED"
    result, doc = await liquidate(
        sim,
        settings_for,
        tmp_path,
        [TargetSpec(61003, None)],
        max_residue_closes=0,
        flat_timeout=0.3,
    )
    assert result.exit_code == ExitCode.FAILED
    [r] = doc["results"]
    assert r["outcome"] == "not_flat"
    assert r["remaining_quantity"] == "50"
    assert "EXPIRED" in r["error"]
    assert sim.stats.by_route["close"] == 1
    the_truth(sim, doc, keys)


async def test_a_reject_after_acceptance_gets_a_residue_close(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61004, [100, -30])
    sim.config.p_reject_after_accept = 1.0
    sent = 0

    @sim_hook(sim)
    def after_close() -> None:
        nonlocal sent
        sent += 1
        if sent == len(keys):
            sim.config.p_reject_after_accept = 0.0

    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(61004, None)])
    assert result.exit_code == ExitCode.OK
    the_truth(sim, doc, keys)
    for r in doc["results"]:
        assert r["outcome"] == "closed"
        assert [o["status"] for o in r["orders"]] == ["REJECTED", "FILLED"]


@pytest.mark.parametrize(
    ("side", "quantity", "what"),
    [("SELL", "40", "reduces"), ("SELL", "250", "flips"), ("BUY", "60", "grows")],
)
@pytest.mark.parametrize("cancel_orders", [False, True])
async def test_another_participants_market_order_right_after_the_plan(
    sim: Simulator,
    settings_for: Any,
    tmp_path: Path,
    side: str,
    quantity: str,
    what: str,
    cancel_orders: bool,
) -> None:
    keys = seed(sim, 61005, [100])
    [(account, iid)] = keys
    sim.after_listing(
        account, lambda: sim.add_participant_order(account, iid, side, quantity, fill_after_s=0.02)
    )
    result, doc = await liquidate(
        sim,
        settings_for,
        tmp_path,
        [TargetSpec(account, "P0", cancel_orders=cancel_orders)],
    )
    assert result.exit_code == ExitCode.OK, doc
    assert sim.position_quantity(account, iid) == 0
    the_truth(sim, doc, keys)
    [r] = doc["results"]
    assert r["outcome"] == "closed"
    # The participant's order predates the worker's first send: never taken for its close.
    desk = [o for o in sim.orders_of(account) if o["client_order_id"].startswith("desk-")]
    assert {o["id"] for o in desk}.isdisjoint({o["id"] for o in r["orders"]})


async def test_a_limit_order_resting_before_the_run_that_fills_later_is_waited_for(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61006, [100])
    [(account, iid)] = keys
    sim.add_participant_order(
        account, iid, "BUY", "30", order_type="LIMIT", limit_price="99.00", fill_after_s=0.4
    )
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(account, "P0", cancel_orders=False)]
    )
    assert result.exit_code == ExitCode.OK, doc
    the_truth(sim, doc, keys)
    [r] = doc["results"]
    assert r["outcome"] == "closed"
    assert r["residue_closes"] == 1  # the 30 its fill reopened


async def test_a_position_flipped_by_someone_else_is_closed_as_it_is_never_by_the_plans_side(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61007, [100])
    [(account, iid)] = keys
    sim.config.fill_delay_s = 0.0

    def flip() -> None:  # filled at once: the close meets a short of 150
        sim.add_participant_order(account, iid, "SELL", "250", fill_after_s=0.0)
        sim.position_quantity(account, iid)

    sim.after_listing(account, flip)
    sim.config.faults = {"close": Faults(p_drop_after=1.0)}  # and its reply is lost
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(account, "P0")])
    assert result.exit_code == ExitCode.OK, doc
    the_truth(sim, doc, keys)
    closes = sim.closing_orders(account, iid)
    assert [(o["side"], o["quantity"]) for o in closes] == [("BUY", "150")]  # one, not two


async def test_a_gateway_that_applies_closes_after_the_timeout_never_leaves_a_flip(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61008, [10 + k for k in range(20)])
    sim.config.fill_delay_s = 0.4  # the re-sent close is still working when the first lands
    sim.config.faults = {"close": Faults(p_apply_late=0.3, apply_late_s=0.45)}

    async def gateway_recovers_after_the_first_sends() -> None:
        # The simulator counts requests but signals nothing; a 5 ms poll suffices here
        while sim.stats.by_route["close"] < len(keys):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        sim.config.faults = {}

    recovering = asyncio.create_task(gateway_recovers_after_the_first_sends())
    result, doc = await liquidate(
        sim,
        settings_for,
        tmp_path,
        # cancel_orders=true would let the late close cancel the re-sent one while it works.
        [TargetSpec(61008, None, cancel_orders=False)],
        request_timeout=0.2,
        reconcile_delay=0,
        metrics_file=tmp_path / "liquidator.prom",
    )
    await recovering
    assert result.exit_code == ExitCode.OK, doc["summary"]
    metrics = (tmp_path / "liquidator.prom").read_text()
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    assert samples["liquidator_extra_orders"] == doc["summary"]["extra_orders"]
    the_truth(sim, doc, keys)
    # The case close_position cannot make safe: some were closed twice, then evened out.
    assert doc["summary"]["extra_orders"] > 0
    assert all(sim.position_quantity(a, i) == 0 for a, i in keys)


async def test_the_report_shows_every_closing_order_marked_own_or_found(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61009, [10 + k for k in range(10)])
    sim.config.faults = {"close": Faults(p_drop_after=0.5)}
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(61009, None)])
    assert result.exit_code == ExitCode.OK
    the_truth(sim, doc, keys)
    found = [o for r in doc["results"] for o in r["orders"] if not o["own"]]
    own = [o for r in doc["results"] for o in r["orders"] if o["own"]]
    assert found
    assert own
    assert {r["fate"] for r in doc["results"]} == {"applied"}


async def test_a_close_whose_look_failed_is_watched_and_reported_closed_once_read_flat(
    settings_for: Any, tmp_path: Path
) -> None:
    sim = Simulator(SimConfig(fill_delay_s=0.05))
    sim.add_account(61010)
    keys = seed(sim, 61010, [25])
    sim.config.faults = {"close": Faults(p_drop_after=1.0)}  # applied, its reply lost
    orders_seen = 0

    @web.middleware
    async def the_look_cannot_read_orders(request: web.Request, handler: Any) -> Any:
        nonlocal orders_seen
        if request.path.endswith("/orders"):
            orders_seen += 1
            if orders_seen in (2, 3):  # 1 is the snapshot; 2 and 3 the look's two tries
                return web.json_response({"error": {"code": 503, "message": "busy"}}, status=503)
        return await handler(request)

    async with sim_behind(sim, the_look_cannot_read_orders) as base_url:
        settings = settings_for(
            base_url=base_url, api_key=sim.config.api_key, max_attempts=2, **FAST_FOLLOW
        )
        report = tmp_path / "r.json"
        result = await run(
            settings, RunRequest(specs=[TargetSpec(61010, None)], report_path=report),
            asyncio.Event(),
        )  # fmt: skip
    doc = json.loads(report.read_text())
    assert result.exit_code == ExitCode.OK, doc
    [r] = doc["results"]
    assert r["outcome"] == "closed"
    assert r["fate"] == "unknown"  # the reply never came; the listing showed what it did
    assert [o["own"] for o in r["orders"]] == [False]
    assert sim.stats.by_route["close"] == 1  # watched, never re-sent
    the_truth(sim, doc, keys)


async def test_a_stop_while_only_following_ends_at_once_with_the_open_ones_not_flat(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61011, [10, 20, 30])
    sim.config.fill_delay_s = 3600  # nothing fills: following would wait FLAT_TIMEOUT
    stop = asyncio.Event()

    @sim_hook(sim)
    def after_close() -> None:
        if sim.stats.by_route["close"] == len(keys):
            asyncio.get_running_loop().call_later(0.3, stop.set)  # SIGTERM while following

    report = tmp_path / "r.json"
    started = asyncio.get_running_loop().time()
    result = await run(
        settings_for(sim, flat_timeout=60, follow_pause=0.05),
        RunRequest(specs=[TargetSpec(61011, None)], report_path=report),
        stop,
    )
    assert asyncio.get_running_loop().time() - started < 2  # not STOP_GRACE, not 60 s
    assert result.exit_code == ExitCode.ABORTED
    doc = json.loads(report.read_text())
    assert doc["summary"]["not_flat"] == len(keys)
    the_truth(sim, doc, keys)
