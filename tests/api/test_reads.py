"""The reads (`worker.api.reads.Reader`) against the simulator: pagination and its failure
modes, and the ledger of executions by instrument."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.support import RecordedSleeps, api_for, events_emitted
from worker.api.policy import RetryPolicy
from worker.api.reads import Reader
from worker.observe import events
from worker.simulator import Simulator


async def test_positions_are_read_across_pages(sim: Simulator) -> None:
    sim.seed_book(1, 23)
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        reader = Reader(api, RetryPolicy(sleep=RecordedSleeps()), page_size=5)
        positions, request_ids = await reader.positions(10001)
    assert len(positions) == 23
    assert len({p.instrument_id for p in positions}) == 23
    assert len(request_ids) == 5  # 5 + 5 + 5 + 5 + 3
    assert sim.stats.by_route["positions"] == 5


async def test_a_repeated_page_token_stops_listing_with_a_warning(sim: Simulator) -> None:
    sim.seed_book(1, 12)
    sim.config.page_repeat_token = True
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        reader = Reader(api, RetryPolicy(sleep=RecordedSleeps()), page_size=5)
        with events_emitted() as emitted:
            positions, _ = await asyncio.wait_for(reader.positions(10001), 10)
    assert len(positions) == 5  # the first page, twice: the second brings its token again
    assert sim.stats.by_route["positions"] == 2
    [warning] = [e for e in emitted if e["event"] == events.PAGINATION_STOPPED]
    assert "repeated" in warning["reason"]


async def test_pagination_that_never_ends_stops(sim: Simulator) -> None:
    sim.seed_book(1, 12)
    sim.config.page_never_ends = True
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        reader = Reader(api, RetryPolicy(sleep=RecordedSleeps()), page_size=5, max_pages=50)
        with events_emitted() as emitted:
            positions, _ = await asyncio.wait_for(reader.positions(10001), 10)
    assert len(positions) == 12  # every position, once
    # Pages 0-4, 5-9, 10-11 and then 3-7 (it wraps): the fourth brings nothing new.
    assert sim.stats.by_route["positions"] == 4
    assert [e["event"] for e in emitted] == [events.PAGINATION_STOPPED]


async def test_the_ledger_is_read_by_instrument_from_a_point_across_pages_and_may_lag(
    sim: Simulator,
) -> None:
    """GET .../executions: the instruments' fills from `since` (the server's time), newest
    first, each with its order id; a fill younger than the listing's lag is not in it yet."""
    keys = [sim.add_position(27010, f"L{k}", "10") for k in range(3)]
    sim.add_account(27010)
    before = datetime.now(UTC) - timedelta(seconds=1)
    for iid in keys:
        for side in ("SELL", "BUY", "SELL"):
            sim.add_participant_order(27010, iid, side, "2", fill_after_s=0.0)
            sim.fill_all()
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        reader = Reader(api, RetryPolicy(sleep=RecordedSleeps()), page_size=2)
        listed, request_ids = await reader.executions(27010, keys[:2], before)
        later, _ = await reader.executions(27010, keys[:1], datetime.now(UTC) + timedelta(hours=1))
        sim.config.executions_listing_lag_s = 3600
        lagging, _ = await reader.executions(27010, keys, before)
    assert len(listed) == 6
    assert len(request_ids) == 3  # 2 + 2 + 2
    assert {e.instrument_id for e in listed} == set(keys[:2])
    assert [e.transaction_time for e in listed] == sorted(
        (e.transaction_time for e in listed), reverse=True
    )
    orders = {o["id"] for o in sim.orders_of(27010)}
    assert {e.order_id for e in listed} <= orders
    assert later == []
    assert lagging == []
