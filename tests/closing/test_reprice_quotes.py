"""A re-price round's quotes read in batches: a batch that cannot be read is named by its own
size, the others' quotes still taken."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.support import api_for, events_emitted, serving
from worker.closing.collar import Collar
from worker.closing.reprice import Repricer
from worker.closing.target import Target
from worker.observe import events

COLLAR = Collar(first_bps=5, max_bps=50, reprice_s=5, deadline_s=60)


async def test_a_snapshot_batch_that_fails_is_reported_with_its_own_instruments_only() -> None:
    """250 instruments, three snapshot requests (100, 100, 50): the first fails. The event says
    100 instruments went unquoted, not the 250 from that batch on."""
    asked: list[int] = []

    async def snapshot(request: web.Request) -> web.Response:
        ids = request.query["instrument_ids"].split(",")
        asked.append(len(ids))
        if len(asked) == 1:
            return web.json_response(
                {"data": None, "error": {"code": 400, "message": "bad"}, "metadata": {}},
                status=400,
            )
        quotes: list[dict[str, Any]] = [
            {
                "instrument_id": i,
                "symbol": i,
                "last_quote": {"bid": "99.95", "ask": "100.05", "bid_size": 1, "ask_size": 1},
            }
            for i in ids
        ]
        return web.json_response({"data": quotes, "error": None, "metadata": {"request_id": "r"}})

    app = web.Application()
    app.router.add_get("/v1/market-data/snapshot", snapshot)
    targets = [
        Target(1, f"Q{n}", f"q{n}", f"Q{n}", "COMMON_STOCK", Decimal(1), Decimal(100), False)
        for n in range(250)
    ]
    async with serving(app) as base_url, api_for(base_url) as api:
        repricer = Repricer(api, COLLAR, rate_limit=0, stopping=asyncio.Event())
        with events_emitted() as entries:
            await repricer._read_touch(targets)
    assert asked == [100, 100, 50]
    [unquoted] = [e for e in entries if e["event"] == events.QUOTES_UNAVAILABLE]
    assert unquoted["instruments"] == 100
