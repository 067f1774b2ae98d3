"""Attacks on the close_position path and the journal, counted at the server.

Each test is a hostile market or operator; what it asserts is what the server holds.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support import FAST_FOLLOW, liquidate, seed, sim_behind, the_truth
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, SimConfig, Simulator


def _upper_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.upper() if k == "instrument_id" and isinstance(v, str) else _upper_ids(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_upper_ids(v) for v in node]
    return node


async def test_an_instrument_id_spelled_in_upper_case_by_filtered_listings_is_still_followed(
    settings_for: Any, tmp_path: Path
) -> None:
    """UUIDs are case-insensitive: a gateway whose filtered listings spell them in upper case
    (the plan's whole-account listing in lower case) must not make an open position read flat."""
    sim = Simulator(SimConfig(fill_delay_s=0.02, p_partial_fill=1.0))
    keys = seed(sim, 62001, [100])
    [(account, iid)] = keys

    @web.middleware
    async def upper_when_filtered(request: web.Request, handler: Any) -> Any:
        response = await handler(request)
        if "instrument_ids" in request.query and response.status == 200:
            doc = json.loads(response.body)
            return web.json_response(_upper_ids(doc))
        return response

    async with sim_behind(sim, upper_when_filtered) as base_url:
        settings = settings_for(
            base_url=base_url, api_key=sim.config.api_key, max_residue_closes=1, **FAST_FOLLOW
        )
        report = tmp_path / "r.json"
        result = await run(
            settings, RunRequest(specs=[TargetSpec(account, None)], report_path=report),
            asyncio.Event(),
        )  # fmt: skip
    doc = json.loads(report.read_text())
    # Half filled, then a residue close for the other half (which again fills half): 25 left.
    assert sim.position_quantity(account, iid) == 25
    [r] = doc["results"]
    assert r["outcome"] == "not_flat", r
    assert result.exit_code == ExitCode.FAILED
    the_truth(sim, doc, keys)


async def test_a_rerun_whose_listing_spells_the_instrument_id_otherwise_finds_the_first_runs_closes(
    settings_for: Any, tmp_path: Path
) -> None:
    """The first run's listings spelled the UUIDs in upper case, the rerun's in lower case: the
    same positions, so the first run's intents must be found and its working closes not doubled."""
    sim = Simulator(SimConfig(fill_delay_s=3600))  # the first run's closes still work at the rerun
    keys = seed(sim, 62003, [100, -40, 30])
    upper = True

    @web.middleware
    async def spelled_in_upper_case(request: web.Request, handler: Any) -> Any:
        response = await handler(request)
        if upper and response.status == 200 and response.content_type == "application/json":
            return web.json_response(_upper_ids(json.loads(response.body)))
        return response

    specs = [TargetSpec(62003, None, cancel_orders=False)]
    async with sim_behind(sim, spelled_in_upper_case) as base_url:
        settings = settings_for(
            base_url=base_url, api_key=sim.config.api_key, **{**FAST_FOLLOW, "flat_timeout": 0.2}
        )
        first = await run(
            settings, RunRequest(specs=specs, report_path=tmp_path / "a.json"), asyncio.Event()
        )
        assert first.exit_code == ExitCode.FAILED  # not flat within its 0.2 s
        assert sim.stats.by_route["close"] == len(keys)
        upper = False
        second = await run(
            settings, RunRequest(specs=specs, report_path=tmp_path / "b.json"), asyncio.Event()
        )
    sim.fill_all()
    assert sim.stats.by_route["close"] == len(keys), "the rerun sent the closes again"
    assert sim.flipped_positions() == []
    assert all(sim.position_quantity(a, i) == 0 for a, i in keys)
    assert second.exit_code == ExitCode.FAILED  # still working at its timeout: not_flat


@pytest.mark.parametrize("fault", ["p_hang_after", "p_500_after", "p_drop_after", "p_502_html"])
@pytest.mark.parametrize(
    ("side", "quantity", "participant_fill_s"),
    [("SELL", "250", 0.0), ("SELL", "250", 0.03), ("BUY", "60", 0.03), ("SELL", "40", 0.03)],
)
async def test_a_participant_moves_the_position_right_after_the_plan_while_the_close_is_unanswered(
    sim: Simulator,
    settings_for: Any,
    tmp_path: Path,
    fault: str,
    side: str,
    quantity: str,
    participant_fill_s: float,
) -> None:
    keys = seed(sim, 62004, [100, 100, 100])
    sim.config.fill_delay_s = 0.05
    for account, iid in keys:
        sim.after_listing(
            account,
            lambda iid=iid: sim.add_participant_order(  # type: ignore[misc]
                62004, iid, side, quantity, fill_after_s=participant_fill_s
            ),
        )
    sim.config.faults = {"close": Faults(**{fault: 1.0}, hang_s=0.3)}

    async def gateway_recovers() -> None:
        while sim.stats.by_route["close"] < len(keys):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        sim.config.faults = {}

    recovering = asyncio.create_task(gateway_recovers())
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(62004, None)], request_timeout=0.2
    )
    recovering.cancel()
    sim.fill_all()
    the_truth(sim, doc, keys)
    assert all(sim.position_quantity(a, i) == 0 for a, i in keys), doc
    assert result.exit_code == ExitCode.OK, doc


async def test_a_close_reply_that_echoes_an_order_of_another_instrument_is_not_taken_as_ours(
    settings_for: Any, tmp_path: Path
) -> None:
    """The gateway closes the right position but its reply names another instrument's order
    (a mixed-up reply): that order is not this target's close, and not listed as its own."""
    sim = Simulator(SimConfig(fill_delay_s=0.02))
    keys = seed(sim, 62005, [100, 50])
    account = keys[0][0]

    replies: list[Any] = []

    @web.middleware
    async def echo_the_other_instrument(request: web.Request, handler: Any) -> Any:
        response = await handler(request)
        if request.method == "DELETE" and response.status == 200:
            replies.append(json.loads(response.body))
            if len(replies) == 2:  # the second close's reply echoes the first close's order
                return web.json_response(replies[0])
        return response

    async with sim_behind(sim, echo_the_other_instrument) as base_url:
        settings = settings_for(base_url=base_url, api_key=sim.config.api_key, **FAST_FOLLOW)
        report = tmp_path / "r.json"
        result = await run(
            settings, RunRequest(specs=[TargetSpec(account, None)], report_path=report),
            asyncio.Event(),
        )  # fmt: skip
    doc = json.loads(report.read_text())
    the_truth(sim, doc, keys)
    assert sim.stats.by_route["close"] == 2
    for r in doc["results"]:
        server_ids = {o["id"] for o in sim.closing_orders(account, r["instrument_id"])}
        assert {o["id"] for o in r["orders"]} == server_ids, r
        assert r["outcome"] == "closed"
    assert result.exit_code == ExitCode.OK


async def test_a_residue_close_applied_late_is_waited_for_never_doubled(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """The first close fills half; the residue close's reply never comes and the gateway applies
    it after the timeout, but within RECONCILE_DELAY: no second residue close is sent."""
    keys = seed(sim, 62006, [100, -60, 40])
    sim.config.p_partial_fill = 1.0
    sim.config.fill_delay_s = 0.05

    async def residues_go_late() -> None:
        while sim.stats.by_route["close"] < len(keys):  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        sim.config.p_partial_fill = 0.0
        sim.config.faults = {"close": Faults(p_apply_late=1.0, apply_late_s=0.35)}

    late = asyncio.create_task(residues_go_late())
    result, doc = await liquidate(
        sim,
        settings_for,
        tmp_path,
        [TargetSpec(62006, None)],
        request_timeout=0.15,
        reconcile_delay=0.5,
    )
    late.cancel()
    sim.fill_all()
    the_truth(sim, doc, keys)
    assert sim.stats.by_route["close"] == 2 * len(keys)
    assert result.exit_code == ExitCode.OK, doc


async def test_a_partial_fill_then_a_participant_growing_the_position_ends_flat(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """Ends flat, one residue close for the rest and the 70 bought: no double close to flag."""
    keys = seed(sim, 62007, [100])
    [(account, iid)] = keys
    sim.config.p_partial_fill = 1.0
    sim.config.fill_delay_s = 0.05

    async def desk_buys_after_the_partial_fill() -> None:
        while sim.stats.by_route["close"] < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        sim.config.p_partial_fill = 0.0
        sim.add_participant_order(account, iid, "BUY", "70", fill_after_s=0.08)

    desk = asyncio.create_task(desk_buys_after_the_partial_fill())
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(account, None, cancel_orders=False)]
    )
    await desk
    sim.fill_all()
    assert sim.position_quantity(account, iid) == 0
    assert result.exit_code == ExitCode.OK, doc
    assert sim.flipped_positions() == []
    [r] = doc["results"]
    assert r["outcome"] == "closed"
    assert len(sim.filled_closes(account, iid)) == 2  # the half, and the residue close
    assert r["extra_orders"] is False, r  # the desk's BUY is no closing order of this run


@pytest.mark.parametrize("keep", [0.5, 0.01])
async def test_a_truncated_journal_file_refuses_the_rerun_before_any_request(
    sim: Simulator, settings_for: Any, tmp_path: Path, keep: float
) -> None:
    keys = seed(sim, 62008, [100, 50, 20] + [10] * 60)
    sim.config.fill_delay_s = 3600
    first = await run(
        settings_for(sim, **{**FAST_FOLLOW, "flat_timeout": 0.1}),
        RunRequest(specs=[TargetSpec(62008, None)], report_path=tmp_path / "a.json"),
        asyncio.Event(),
    )
    assert first.exit_code == ExitCode.FAILED
    journal = tmp_path / "state" / "journal.sqlite3"
    data = journal.read_bytes()
    journal.write_bytes(data[: max(1, int(len(data) * keep))])  # a disk that lost the tail
    before = sim.stats.requests
    second = await run(
        settings_for(sim, **FAST_FOLLOW),
        RunRequest(specs=[TargetSpec(62008, None)], report_path=tmp_path / "b.json"),
        asyncio.Event(),
    )
    assert second.exit_code == ExitCode.INVALID
    assert sim.stats.requests == before
    assert sim.stats.by_route["close"] == len(keys)


async def test_the_orders_snapshot_failing_for_one_account_closes_each_position_once(
    settings_for: Any, tmp_path: Path
) -> None:
    """Account 62009's whole-account orders listing answers 503 (the snapshot); its filtered
    listings work. Its closes lose their replies: nothing is evidence, nothing is sent twice."""
    sim = Simulator(SimConfig(fill_delay_s=0.05))
    keys = seed(sim, 62009, [100, -40, 30, 20]) + seed(sim, 62010, [70, -10])
    sim.config.faults = {"close": Faults(p_drop_after=0.5)}

    @web.middleware
    async def no_snapshot(request: web.Request, handler: Any) -> Any:
        if (
            request.path == "/v1/accounts/62009/orders"
            and request.method == "GET"
            and "instrument_ids" not in request.query
            and "order_ids" not in request.query  # following's read of its own orders by id
        ):
            return web.json_response({"error": {"code": 503, "message": "busy"}}, status=503)
        return await handler(request)

    async with sim_behind(sim, no_snapshot) as base_url:
        settings = settings_for(
            base_url=base_url, api_key=sim.config.api_key, max_attempts=2, **FAST_FOLLOW
        )
        report = tmp_path / "r.json"
        result = await run(
            settings,
            RunRequest(
                specs=[TargetSpec(62009, None), TargetSpec(62010, None)], report_path=report
            ),
            asyncio.Event(),
        )
    doc = json.loads(report.read_text())
    the_truth(sim, doc, keys)
    assert sim.stats.by_route["close"] == len(keys)
    assert result.exit_code == ExitCode.OK, doc


async def test_a_stop_while_a_residue_close_hangs_ends_within_stop_grace(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """SIGTERM while following, with a residue close whose reply hangs: the run ends within
    STOP_GRACE, as the fan-out's closes do, not after REQUEST_TIMEOUT."""
    keys = seed(sim, 62011, [100])
    sim.config.p_partial_fill = 1.0
    sim.config.fill_delay_s = 0.02
    stop = asyncio.Event()
    stopped_at = 0.0

    async def residue_hangs_then_stop() -> None:
        nonlocal stopped_at
        while sim.stats.by_route["close"] < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        sim.config.faults = {"close": Faults(p_hang_after=1.0, hang_s=30)}
        while sim.stats.by_route["close"] < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.05)
        stopped_at = asyncio.get_running_loop().time()
        stop.set()

    stopper = asyncio.create_task(residue_hangs_then_stop())
    result = await run(
        settings_for(sim, **FAST_FOLLOW, request_timeout=4.0, stop_grace=0.3),
        RunRequest(specs=[TargetSpec(62011, None)], report_path=tmp_path / "r.json"),
        stop,
    )
    took = asyncio.get_running_loop().time() - stopped_at
    await stopper
    assert result.exit_code == ExitCode.ABORTED
    assert took < 1.5, f"{took:.2f} s after the stop (STOP_GRACE 0.3 s, REQUEST_TIMEOUT 4 s)"
    doc = json.loads((tmp_path / "r.json").read_text())
    assert sim.stats.by_route["close"] == 2
    [r] = doc["results"]
    assert r["outcome"] in ("not_flat", "failed"), r
    del keys


async def test_a_stop_while_following_reads_hang_ends_within_stop_grace(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """SIGTERM while following, with the account's listings hanging: reads retried up to
    MAX_ATTEMPTS times REQUEST_TIMEOUT must not hold the run past STOP_GRACE."""
    keys = seed(sim, 62012, [100, 50])
    sim.config.fill_delay_s = 3600  # following polls until the stop
    stop = asyncio.Event()
    stopped_at = 0.0

    async def reads_hang_then_stop() -> None:
        nonlocal stopped_at
        while sim.stats.by_route["close"] < len(keys):  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        sim.config.faults = {
            "orders": Faults(p_hang_after=1.0, hang_s=30),
            "positions": Faults(p_hang_after=1.0, hang_s=30),
        }
        await asyncio.sleep(0.1)
        stopped_at = asyncio.get_running_loop().time()
        stop.set()

    stopper = asyncio.create_task(reads_hang_then_stop())
    result = await run(
        settings_for(sim, **FAST_FOLLOW, request_timeout=0.5, max_attempts=4, stop_grace=0.3),
        RunRequest(specs=[TargetSpec(62012, None)], report_path=tmp_path / "r.json"),
        stop,
    )
    took = asyncio.get_running_loop().time() - stopped_at
    await stopper
    assert result.exit_code == ExitCode.ABORTED
    assert took < 1.5, f"{took:.2f} s after the stop (STOP_GRACE 0.3 s)"
    doc = json.loads((tmp_path / "r.json").read_text())
    assert {r["outcome"] for r in doc["results"]} == {"not_flat"}
    assert sim.stats.by_route["close"] == len(keys)


async def test_a_close_found_on_the_second_page_of_an_instruments_orders(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """1,200 of the desk's orders on the instrument (cancelled, before the run): the close whose
    reply was lost is on the orders listing's second page, and is found there, sent once."""
    keys = seed(sim, 62013, [100])
    [(account, iid)] = keys
    for _ in range(1200):
        sim.cancel_order(
            account,
            sim.add_participant_order(
                account, iid, "BUY", "1", order_type="LIMIT", limit_price="1.00"
            ),
        )
    sim.config.faults = {"close": Faults(p_drop_after=1.0)}
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(account, None)])
    the_truth(sim, doc, keys)
    assert sim.stats.by_route["close"] == 1
    [r] = doc["results"]
    assert r["outcome"] == "closed"
    assert len(r["orders"]) == 1
    assert result.exit_code == ExitCode.OK


@pytest.mark.parametrize("route", ["positions", "orders"])  # the plan's listing; the snapshot
async def test_a_stop_while_the_plan_or_the_snapshot_reads_hang_ends_within_stop_grace(
    sim: Simulator, settings_for: Any, tmp_path: Path, route: str
) -> None:
    """SIGTERM before any close, while the listings hang: nothing is sent and the run ends
    within STOP_GRACE (systemd's TimeoutStopSec would SIGKILL a run that waits out every retry)."""
    seed(sim, 62014, [100, 50])
    sim.config.faults = {route: Faults(p_hang_after=1.0, hang_s=30)}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, stop.set)
    started = loop.time()
    result = await run(
        settings_for(sim, **FAST_FOLLOW, request_timeout=0.5, max_attempts=6, stop_grace=0.3),
        RunRequest(specs=[TargetSpec(62014, None)], report_path=tmp_path / "r.json"),
        stop,
    )
    took = loop.time() - started - 0.3
    assert took < 1.2, f"{took:.2f} s after the stop (STOP_GRACE 0.3 s)"
    assert result.exit_code == ExitCode.ABORTED
    assert sim.stats.by_route["close"] == 0


async def test_a_stop_while_waiting_out_a_dead_runs_closes_ends_within_stop_grace(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """The second run takes the lock from one that died with closes in flight and waits
    REQUEST_TIMEOUT + RECONCILE_DELAY before looking; a stop then ends that wait at once."""
    keys = seed(sim, 62015, [100, 50])
    sim.config.fill_delay_s = 3600
    specs = [TargetSpec(62015, None)]
    first = asyncio.create_task(
        run(
            settings_for(sim, **{**FAST_FOLLOW, "flat_timeout": 60}),
            RunRequest(specs=specs, report_path=tmp_path / "a.json"),
            asyncio.Event(),
        )
    )
    while sim.stats.by_route["close"] < len(keys):  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    second = asyncio.create_task(
        run(
            settings_for(sim, **FAST_FOLLOW, lock_wait=5, request_timeout=3, reconcile_delay=3),
            RunRequest(specs=specs, report_path=tmp_path / "b.json"),
            stop,
        )
    )
    await asyncio.sleep(0.2)
    first.cancel()  # dies with its run unfinished in the journal
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.sleep(0.4)  # the second took the lock and waits out the dead run's closes
    stopped_at = loop.time()
    stop.set()
    result = await second
    took = loop.time() - stopped_at
    assert result.exit_code == ExitCode.ABORTED
    assert took < 1.0, f"{took:.2f} s after the stop"
    assert sim.stats.by_route["close"] == len(keys)
