"""The request budget of a run, counted at the server: following reads an account's positions only
when a decision rests on them (no order on the instrument working), so polls while the closing
orders work cost one request an account, not two."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support import FAST_FOLLOW, sim_behind, the_truth
from tests.support import seed_held as seed
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import SimConfig, Simulator


async def test_an_account_of_100_positions_costs_10_requests_and_polls_without_positions(
    settings_for: Any, tmp_path: Path
) -> None:
    sim = Simulator(SimConfig(fill_delay_s=3600))  # the orders fill when the test says
    sim.add_account(82001)
    keys = seed(sim, 82001, [10 + k if k % 3 else -(10 + k) for k in range(100)])
    polls = 0

    @web.middleware
    async def fill_at_the_third_poll(request: web.Request, handler: Any) -> web.StreamResponse:
        # Following's polls each open with the working-orders listing (by status): the first two
        # find every closing order working; before the third the market fills them.
        nonlocal polls
        listing = request.method == "GET" and request.path.endswith("/orders")
        if listing and sim.stats.by_route["submit"] and "status" in request.query:
            polls += 1
            if polls == 3:
                sim.fill_all()
        response: web.StreamResponse = await handler(request)
        return response

    async with sim_behind(sim, fill_at_the_third_poll) as base_url:
        settings = settings_for(
            base_url=base_url, api_key=sim.config.api_key, close_via="submit_orders", **FAST_FOLLOW
        )
        report = tmp_path / "report.json"
        result = await run(
            settings,
            RunRequest(specs=[TargetSpec(82001, None)], report_path=report),
            asyncio.Event(),
        )
    doc = json.loads(report.read_text())
    assert result.exit_code == ExitCode.OK, doc["summary"]
    the_truth(sim, doc, keys, one_order=True, flat=True, client_ids=True)
    assert polls == 3
    by_route = dict(sim.stats.by_route)
    # The plan's read, and following's one read once the orders were final: none while they worked.
    assert by_route["positions"] == 2, by_route
    assert by_route["submit"] == 1, by_route
    assert by_route.get("cancel", 0) == by_route.get("close", 0) == 0, by_route
    # Orders: the snapshot's two listings; three polls' working listings; the job's orders by id
    # once the working listing no longer shows them.
    assert by_route["orders"] == 2 + 3 + 1, by_route
    # The ledger: once before the orders are sized, and beside following's one positions read.
    assert by_route["executions"] == 2, by_route
    # In all: the clock, 2 positions reads, 6 orders listings, 2 executions reads, 1 POST; and
    # the arrival quotes.
    assert sim.stats.requests == 12 + by_route.get("snapshot", 0), by_route
    assert sim.stats.requests / len(keys) <= 0.13, by_route
