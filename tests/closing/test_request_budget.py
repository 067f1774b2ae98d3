"""The request budget of a run, counted at the server: following reads an account's positions only
when a decision rests on them (no order on the instrument working), so polls while the closing
orders work cost one request an account, not two."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support import FAST_FOLLOW, seed, seed_held, sim_behind, the_truth
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import SimConfig, Simulator, serve
from worker.simulator.market import MarketConfig


async def test_an_account_of_100_positions_costs_10_requests_and_polls_without_positions(
    settings_for: Any, tmp_path: Path
) -> None:
    sim = Simulator(SimConfig(fill_delay_s=3600))  # the orders fill when the test says
    sim.add_account(82001)
    keys = seed_held(sim, 82001, [10 + k if k % 3 else -(10 + k) for k in range(100)])
    polls = 0

    @web.middleware
    async def fill_at_the_third_poll(request: web.Request, handler: Any) -> web.StreamResponse:
        # Following's rounds each open with the orders listing of the account's instruments:
        # the first two find every closing order working; before the third the market fills
        # them. (The listing by status before a positions read is not a round's first.)
        nonlocal polls
        listing = request.method == "GET" and request.path.endswith("/orders")
        first = "instrument_ids" in request.query and "status" not in request.query
        if listing and sim.stats.by_route["submit"] and first:
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
    # Orders: the snapshot's two listings; one listing per round (three), which shows the job's
    # orders final too: none by id; and, before the one positions read, the orders that can
    # still fill there listed by status (an order stamped before the first listing's floor).
    assert by_route["orders"] == 2 + 3 + 1, by_route
    # The ledger: once before the orders are sized, and beside following's one positions read.
    assert by_route["executions"] == 2, by_route
    # In all: the clock, 2 positions reads, 6 orders listings, 2 executions reads, 1 POST; and
    # the arrival quotes.
    assert sim.stats.requests == 12 + by_route.get("snapshot", 0), by_route
    assert sim.stats.requests / len(keys) <= 0.13, by_route


def _following_reads(sim: Simulator, account: int) -> list[tuple[str, frozenset[str]]]:
    """The account's reads after its first POST, in arrival order: (route, the instruments or
    order ids it names)."""
    prefix = f"/v1/accounts/{account}/"
    mine = [r for r in sim.requests if r.path.startswith(prefix)]
    first_post = next(k for k, r in enumerate(mine) if r.method == "POST")
    reads = []
    for r in mine[first_post:]:
        if r.method != "GET":
            continue
        names = r.query.get("instrument_ids") or r.query.get("order_ids") or ""
        route = "orders_by_id" if "order_ids" in r.query else r.route
        if route == "orders" and "status" in r.query:
            route = "working"  # the listing by status before a positions read
        reads.append((route, frozenset(n.lower() for n in names.split(",") if n)))
    return reads


def _rounds(reads: list[tuple[str, frozenset[str]]]) -> list[list[tuple[str, frozenset[str]]]]:
    """Following's reads cut into rounds: a round's orders listings name each instrument once;
    one that names an instrument again opens the next round."""
    rounds: list[list[tuple[str, frozenset[str]]]] = []
    listed: set[str] = set()
    for route, names in reads:
        if route == "orders" and (not rounds or names & listed):
            rounds.append([])
            listed = set()
        if route == "orders":
            listed |= names
        if rounds:
            rounds[-1].append((route, names))
    return rounds


async def test_two_accounts_of_150_positions_read_orders_once_per_100_and_positions_once_a_round(
    settings_for: Any, tmp_path: Path
) -> None:
    """2 accounts x 150 positions, the closing orders working for several rounds, then filled at
    once. Counted at the server, per account and round: one orders listing per 100 instruments
    (none by id, no order read alone), and at most one positions read and one executions read
    after each listing, of instruments it listed; while every order works, no positions read."""
    sim = Simulator(SimConfig(fill_delay_s=3600))  # the orders fill when the test says
    sim.config.record = True
    accounts = (84001, 84002)
    keys = [k for a in accounts for k in seed(sim, a, [10 + k for k in range(150)])]
    listings = {a: 0 for a in accounts}
    filled = False

    @web.middleware
    async def fill_after_three_rounds(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal filled
        listing = request.method == "GET" and request.path.endswith("/orders")
        if listing and "instrument_ids" in request.query and sim.stats.by_route["submit"]:
            listings[int(request.path.split("/")[3])] += 1
            if not filled and min(listings.values()) >= 6:  # 3 rounds of 2 listings each
                filled = True
                sim.fill_all()
        response: web.StreamResponse = await handler(request)
        return response

    async with sim_behind(sim, fill_after_three_rounds) as base_url:
        settings = settings_for(
            base_url=base_url, api_key=sim.config.api_key, close_via="submit_orders", **FAST_FOLLOW
        )
        report = tmp_path / "report.json"
        result = await run(
            settings,
            RunRequest(specs=[TargetSpec(a, None) for a in accounts], report_path=report),
            asyncio.Event(),
        )
    doc = json.loads(report.read_text())
    assert result.exit_code == ExitCode.OK, doc["summary"]
    the_truth(sim, doc, keys, one_order=True, flat=True, client_ids=True)
    assert filled
    for account in accounts:
        reads = _following_reads(sim, account)
        assert not [r for r in reads if r[0] in ("orders_by_id", "order")], reads
        rounds = _rounds(reads)
        assert len(rounds) >= 4, rounds
        resting = 0
        for one in rounds:
            listed = [names for route, names in one if route == "orders"]
            instruments = frozenset().union(*listed)
            assert all(len(names) <= 100 for names in listed)
            assert len(listed) == math.ceil(len(instruments) / 100), one
            # After each listing, at most one positions read and one executions read, of
            # instruments that listing named.
            for k, (route, names) in enumerate(one):
                if route != "orders":
                    continue
                after = []
                for later in one[k + 1 :]:
                    if later[0] == "orders":
                        break
                    after.append(later)
                assert [r for r, _ in after].count("positions") <= 1, one
                assert [r for r, _ in after].count("executions") <= 1, one
                assert all(n <= names for _, n in after), one
                # The listing by status: one, only before a positions read, of its instruments.
                routes = [r for r, _ in after]
                assert routes.count("working") == routes.count("positions"), one
                if "positions" in routes:
                    assert routes.index("working") < routes.index("positions"), one
            if not any(route == "positions" for route, _ in one):
                resting += 1
        assert resting >= 2, rounds  # the rounds while every order worked read no positions


async def test_rounds_while_every_protected_limit_rests_unfilled_read_no_positions(
    settings_for: Any, tmp_path: Path
) -> None:
    """CLOSE_STYLE=protected on a thin book that never refills: each limit takes the best level
    at once, then rests unfilled (its collar never reaches the next level) until DEADLINE_S
    escalates it. Counted at the server: until the first cancel, following reads the orders
    every round and no position, nor the ledger."""
    book = MarketConfig(
        spread_bps=10.0,
        depth=6,
        level_size=50,
        size_jitter=0.0,
        level_step_bps=20.0,
        refill_s=3600.0,
    )
    sim = Simulator(SimConfig(fill_delay_s=0.02, market=book))
    sim.config.record = True
    sim.add_account(85001)
    for k in range(3):
        sim.add_position(85001, f"R{k}", "300", price="100.00")
    runner, _ = await serve(sim, "127.0.0.1", 0)
    try:
        settings = settings_for(
            sim,
            **{
                **FAST_FOLLOW,
                "close_via": "submit_orders",
                "close_style": "protected",
                "collar_bps": 5,
                "collar_max_bps": 15,
                "reprice_s": 0.05,
                "deadline_s": 1.5,
                "flat_timeout": 3.0,
            },
        )
        report = tmp_path / "report.json"
        result = await run(
            settings,
            RunRequest(specs=[TargetSpec(85001, None)], report_path=report),
            asyncio.Event(),
        )
    finally:
        await runner.cleanup()
    doc = json.loads(report.read_text())
    assert result.exit_code == ExitCode.OK, doc["summary"]
    mine = [r for r in sim.requests if r.path.startswith("/v1/accounts/85001/")]
    first_post = next(k for k, r in enumerate(mine) if r.method == "POST")
    first_cancel = next(k for k, r in enumerate(mine) if r.method == "DELETE")
    resting = mine[first_post:first_cancel]
    rounds = [r for r in resting if r.route == "orders" and "instrument_ids" in r.query]
    assert len(rounds) >= 3, [(r.method, r.route, r.query) for r in resting]
    assert not [r for r in resting if r.route in ("positions", "executions", "order")]
    assert not [r for r in resting if r.route == "orders" and "order_ids" in r.query]
    # Then escalated, each position read flat at last: every fill on the server is the job's.
    assert all(sim.position_quantity(85001, p["instrument_id"]) == 0 for p in doc["results"])
