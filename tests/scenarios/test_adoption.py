"""A rerun adopts the job's own working orders (its client ids, in its journal) and follows them.

Counted at the simulator: no cancel and no new order for what the job already has working, each
position closed once, nothing filled twice, none crossing zero; orders on the instrument that are
not the job's are still cancelled.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support import FAST_FOLLOW, api_for, events_emitted, the_truth
from tests.support import seed_held as seed
from worker.api.client import NewOrder, Side
from worker.closing.client_ids import client_order_id
from worker.inputs.settings import Settings
from worker.inputs.targets import TargetSpec
from worker.journal.keys import job_key
from worker.journal.store import Intent, Journal
from worker.run.runner import ExitCode, RunRequest, RunResult, Watcher, run
from worker.simulator import SimConfig, Simulator


async def run_once(
    settings: Settings, specs: list[TargetSpec], report: Path, stop: asyncio.Event | None = None
) -> tuple[RunResult, dict[str, Any]]:
    result = await run(
        settings, RunRequest(specs=specs, report_path=report), stop or asyncio.Event()
    )
    return result, json.loads(await asyncio.to_thread(report.read_text))


async def stop_when(sim: Simulator, stop: asyncio.Event, submits: int) -> None:
    deadline = time.monotonic() + 20
    while sum(sim.stats.submit_batch_sizes) < submits:  # orders, in however many requests
        assert time.monotonic() < deadline, "the first run never sent its orders"
        await asyncio.sleep(0.005)
    stop.set()


@pytest.fixture
def sim_config() -> SimConfig:
    # The simulated regular close 2 s from now: market-on-close orders rest until then.
    return SimConfig(regular_close_at=datetime.now(UTC) + timedelta(seconds=2), fill_delay_s=0.01)


async def test_a_stopped_market_on_close_run_rerun_adopts_its_resting_orders(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 72001, [20, -35, 15, 40, -10, 25])
    settings = settings_for(sim, **FAST_FOLLOW, at_close=True, moc_cutoff="0.3s", stop_grace=0.2)
    specs = [TargetSpec(72001, None)]
    stop = asyncio.Event()
    stopper = asyncio.create_task(stop_when(sim, stop, len(keys)))
    with events_emitted() as emitted:
        first, doc = await run_once(settings, specs, tmp_path / "first.json", stop)
        await stopper
        assert first.exit_code == ExitCode.ABORTED, doc["summary"]
        assert sum(sim.stats.submit_batch_sizes) == len(keys)  # orders, in one batch or more
        resting = [o for a, i, _ in keys for o in sim.closing_orders(a, i) if o["status"] == "NEW"]
        assert len(resting) == len(keys)  # every market-on-close order rests at the server

        before = dict(sim.stats.by_route)
        second, doc = await run_once(settings, specs, tmp_path / "second.json")
    assert second.exit_code == ExitCode.OK, doc
    assert sim.stats.by_route["cancel"] == before.get("cancel", 0)  # none of its own cancelled
    assert sim.stats.by_route["submit"] == before["submit"]  # and nothing sent again
    the_truth(sim, None, keys, flat=True, one_order=True)
    adopted = [e for e in emitted if e["event"] == "order_adopted"]
    assert {e["order_id"] for e in adopted} == {o["id"] for o in resting}
    assert all(e["time_in_force"] == "AT_THE_CLOSE" for e in adopted)
    assert not [e for e in emitted if e["event"] == "residue_close"]
    for r in doc["results"]:
        assert r["outcome"] == "closed", r
        [order] = r["orders"]  # the adopted order is the target's order, in the report
        assert order["adopted"] is True
        assert order["status"] == "FILLED"


async def killed_run(
    sim: Simulator, settings: Settings, keys: list[tuple[int, str, int]]
) -> dict[tuple[int, str], str]:
    """A run as it stood when killed: intents and client ids committed, orders sent and still
    working at the server. Returns each position's order id."""
    day = datetime.now(UTC).astimezone(ZoneInfo("America/New_York")).date().isoformat()
    job = job_key(day)
    journal = Journal.in_dir(settings.journal_dir)
    journal.start_run(
        run_id="killed", job=job, base_url=settings.base_url, trading_day=day,
        started_at=datetime.now(UTC), dry_run=False,
    )  # fmt: skip
    ids = {}
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        for account, iid, held in keys:
            cid = client_order_id(job, account, iid, 0)
            await journal.record_intent(
                "killed", Intent(account, iid, 1, datetime.now(UTC), client_id=cid)
            )
            side: Side = "SELL" if held > 0 else "BUY"
            order = NewOrder(cid, iid, side, Decimal(abs(held)))
            reply = await api.submit_order(account, order)
            ids[(account, iid)] = reply.data.id
    journal.close()
    return ids


async def test_a_killed_submit_orders_run_rerun_adopts_its_own_and_cancels_the_others(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 72002, [25, -40, 15, 30])
    # Still working when the rerun adopts, after it waited out the killed run (settle_s).
    sim.config.fill_delay_s = 2.5
    settings = settings_for(sim, **FAST_FOLLOW, close_via="submit_orders")
    own = await killed_run(sim, settings, keys)
    # Another participant's resting orders: on an instrument the job has an order working on,
    # and on one it does not (the job's order there was cancelled at the desk).
    a0, (a3, i3, _) = keys[0][0], keys[3]
    other_on_adopted = sim.add_resting_order(a0, "S0", "BUY", "5", "1.00")
    sim.cancel_order(a3, own[(a3, i3)])
    other_elsewhere = sim.add_resting_order(a3, "S3", "BUY", "5", "1.00")
    submits_before = sim.stats.by_route["submit"]

    with events_emitted() as emitted:
        result, doc = await run_once(settings, [TargetSpec(72002, None)], tmp_path / "r.json")
    assert result.exit_code == ExitCode.OK, doc
    statuses = {o["id"]: o["status"] for o in sim.orders_of(72002)}
    assert statuses[other_on_adopted] == "CANCELED"
    assert statuses[other_elsewhere] == "CANCELED"
    for key in keys[:3]:
        assert statuses[own[key[:2]]] == "FILLED"  # adopted, never cancelled
    adopted = {e["order_id"] for e in emitted if e["event"] == "order_adopted"}
    assert adopted == {own[k[:2]] for k in keys[:3]}
    # Only the position whose own order was cancelled at the desk is sent a close (a new
    # generation: the old id is taken); the adopted ones are not sent again, not even as a 409.
    assert sim.stats.by_route["submit"] - submits_before in (1, 2)
    assert sim.stats.status_counts[409] <= 1
    for account, iid, held in keys:
        assert sim.position_quantity(account, iid) == 0
        filled = [o for o in sim.closing_orders(account, iid) if o["status"] == "FILLED"]
        assert sum(Decimal(o["filled_quantity"]) for o in filled) == abs(held)
        assert len(filled) == 1
    assert sim.flipped_positions() == []
    by_iid = {r["instrument_id"]: r for r in doc["results"]}
    for account, iid, _ in keys[:3]:
        assert [o["id"] for o in by_iid[iid]["orders"]] == [own[(account, iid)]]
        assert by_iid[iid]["outcome"] == "closed"


@pytest.mark.parametrize("max_residue_closes", [2, 0])
async def test_a_rerun_does_not_adopt_what_others_working_orders_would_over_close(
    sim: Simulator, settings_for: Any, tmp_path: Path, max_residue_closes: int
) -> None:
    # Long 100: the killed run's SELL 100 still works, and a trader placed a SELL 50 between
    # the runs. cancel_orders off leaves the trader's order alone: adopting the job's order as
    # it is would sell 150 of 100.
    keys = seed(sim, 72003, [100])
    [(account, iid, _)] = keys
    sim.config.fill_delay_s = 5.0  # the killed run's order still works when the rerun reads
    settings = settings_for(sim, **FAST_FOLLOW, close_via="submit_orders")
    own = (await killed_run(sim, settings, keys))[(account, iid)]
    sim.config.fill_delay_s = 0.05  # the rerun's own closes fill at once
    # The rerun sends no first close here (its earlier order is cancelled, not adopted):
    # following's close is that first close, so MAX_RESIDUE_CLOSES 0 must not forbid it.
    settings = settings_for(
        sim, **FAST_FOLLOW, close_via="submit_orders", max_residue_closes=max_residue_closes
    )
    # Fills after the rerun waited out the killed run (settle_s) and read the orders.
    desk = sim.add_participant_order(account, iid, "SELL", "50", fill_after_s=2.0)

    specs = [TargetSpec(account, None, cancel_orders=False)]
    with events_emitted() as emitted:
        result, doc = await run_once(settings, specs, tmp_path / "r.json")

    sim.fill_all()
    assert sim.crossed_zero() == []
    assert sim.position_quantity(account, iid) == 0, doc
    statuses = {o["id"]: o for o in sim.orders_of(account)}
    assert statuses[desk]["status"] == "FILLED"  # the trader's order was left to fill
    assert statuses[own]["status"] == "CANCELED"  # the job's was not adopted
    sold = sum(Decimal(o["filled_quantity"]) for o in statuses.values())
    assert sold == 100  # what filled adds up to what was held
    assert not [e for e in emitted if e["event"] == "order_adopted"]
    [skipped] = [e for e in emitted if e["event"] == "adoption_skipped"]
    assert desk in skipped["reason"]
    assert result.exit_code == ExitCode.OK, doc


async def test_a_lagging_orders_listing_does_not_defeat_adoption(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 72004, [25, -40, 15])
    sim.config.fill_delay_s = 2.5  # still working when the rerun adopts
    settings = settings_for(sim, **FAST_FOLLOW, close_via="submit_orders")
    own = await killed_run(sim, settings, keys)
    # The orders listing (every filter) shows none of them while the rerun waits out the killed
    # run and reads them (settle_s, ~1.3 s); one order by its client id is current. Following
    # sees them listed by the time they fill.
    sim.config.orders_listing_lag_s = 2.4
    before = dict(sim.stats.by_route)

    with events_emitted() as emitted:
        result, doc = await run_once(settings, [TargetSpec(72004, None)], tmp_path / "r.json")

    assert sim.stats.by_route["cancel"] == before.get("cancel", 0)  # none of its own cancelled
    assert sim.stats.by_route["submit"] == before["submit"]  # and nothing sent again
    statuses = {o["id"]: o["status"] for o in sim.orders_of(72004)}
    assert {statuses[own[k[:2]]] for k in keys} == {"FILLED"}
    adopted = {e["order_id"] for e in emitted if e["event"] == "order_adopted"}
    assert adopted == set(own.values())
    # One look-up per id the listing did not show, no more.
    assert sim.stats.by_route["order"] - before.get("order", 0) == len(keys)
    the_truth(sim, None, keys, flat=True, one_order=True)
    assert sim.crossed_zero() == []
    assert result.exit_code == ExitCode.OK, [(r["outcome"], r["error"]) for r in doc["results"]]


async def test_a_rerun_sends_nothing_for_its_earlier_orders_that_filled_after_its_takeover_read(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """The killed run's orders still work when the rerun's takeover confirms its plan, and
    fill before the fan-out looks for working orders to adopt (the plan's quotes and the
    orders snapshot come between: under load, a second or more). Not working, they are not
    adopted; the confirmed positions read (open) does not hold their fills. The rerun must not
    close those positions again from it."""
    keys = seed(sim, 72005, [25, -40, 15])
    sim.config.fill_delay_s = 60.0  # working until the test fills them
    settings = settings_for(
        sim, **FAST_FOLLOW, close_via="submit_orders", request_timeout=0.1, reconcile_delay=0.05
    )
    own = await killed_run(sim, settings, keys)
    before = dict(sim.stats.by_route)
    confirmed: list[int] = []

    class FillAfterTakeover(Watcher):
        def show_plan(self, plan: Any) -> None:
            # The takeover confirmed each position open under its working order (no settled
            # target).
            confirmed.append(len(plan.targets))
            sim.fill_all()

    with events_emitted() as emitted:
        result = await run(
            settings,
            RunRequest(
                specs=[TargetSpec(72005, None)],
                report_path=tmp_path / "r.json",
                watcher=FillAfterTakeover(),
            ),
            asyncio.Event(),
        )
    doc = json.loads((tmp_path / "r.json").read_text())

    assert confirmed == [len(keys)]
    assert not [e for e in emitted if e["event"] == "order_adopted"]  # final by then
    assert sim.stats.by_route["submit"] == before["submit"], [  # nothing sent: they closed it
        o["client_order_id"] for a, i, _ in keys for o in sim.closing_orders(a, i)
    ]
    assert sim.crossed_zero() == []
    the_truth(sim, doc, keys, flat=True, one_order=True, client_ids=True)
    waits = [e for e in emitted if e["event"] == "close_waits_for_orders"]
    assert sorted(o for e in waits for o in e["orders"]) == sorted(own.values())
    assert {e["quantity"] for e in waits} == {"0"}
    by_iid = {r["instrument_id"].lower(): r for r in doc["results"]}
    for account, iid, _ in keys:
        assert [o["id"] for o in by_iid[iid.lower()]["orders"]] == [own[(account, iid)]]
    assert result.exit_code == ExitCode.OK, [(r["outcome"], r["error"]) for r in doc["results"]]
