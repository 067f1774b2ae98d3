"""CLOSE_STYLE=protected at scale, scaled down: many positions over many accounts under a
server-enforced rate limit, counted at the server. Every position at market or flat within a
few seconds of its deadline, none left open, fewer requests than positions, the rests of an
--at-close run all accepted before the cutoff, and lingering cancels chased."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support import events_emitted
from worker.inputs.targets import TargetSpec
from worker.run.runner import RunRequest, RunResult, run
from worker.simulator import SimConfig, Simulator, serve
from worker.simulator.market import Liquidity, MarketConfig

pytestmark = pytest.mark.solo  # deadlines held at 20 requests a second: measured alone

FIRST = 34001
RATE = 20.0
PROTECTED: dict[str, Any] = {
    "close_style": "protected",
    "close_via": "submit_orders",
    "rate_limit": RATE,
    "collar_bps": 5,
    "collar_max_bps": 50,
    "reprice_s": 1.0,
    "deadline_s": 6.0,
    "flat_timeout": 10.0,
    "follow_pause": 0.2,
    "follow_pause_max": 1.0,
}
THIN = Liquidity(depth=6, level_size=50, level_step_bps=20.0)
THICK = Liquidity(depth=6, level_size=100_000, level_step_bps=5.0)


def book(*, refill_s: float | None, **config: Any) -> SimConfig:
    """The server limiting to RATE requests a second; books as `simulator` names them."""
    market = MarketConfig(spread_bps=10.0, size_jitter=0.0, refill_s=refill_s)
    return SimConfig(fill_delay_s=0.02, rate_limit=RATE, market=market, **config)


@contextlib.asynccontextmanager
async def simulator(
    config: SimConfig, thin_every: int, accounts: int, per_account: int
) -> AsyncIterator[Simulator]:
    """`thin_every` 1: every name thin; 2: every other. A thin name's best level holds 50 of
    the 300 each position holds: a market order walks six levels 20 bps apart."""
    sim = Simulator(config)
    k = 0
    for a in range(accounts):
        for n in range(per_account):
            symbol = f"N{a}X{n}"
            thin = k % thin_every == 0
            config.market.instruments[symbol] = THIN if thin else THICK
            sim.add_position(FIRST + a, symbol, "300" if k % 3 else "-300", price="100.00")
            k += 1
    runner, _ = await serve(sim, "127.0.0.1", 0)
    try:
        yield sim
    finally:
        await runner.cleanup()


async def liquidate(
    sim: Simulator, settings_for: Any, tmp_path: Path, accounts: int, **overrides: Any
) -> tuple[RunResult, dict[str, Any], float]:
    report = tmp_path / f"report-{time.monotonic_ns()}.json"
    started = time.monotonic()
    settings = settings_for(sim, **overrides)
    specs = [TargetSpec(FIRST + a, None) for a in range(accounts)]
    result = await run(settings, RunRequest(specs=specs, report_path=report), asyncio.Event())
    return result, json.loads(report.read_text()), time.monotonic() - started


def _at(order: dict[str, Any]) -> float:
    return datetime.fromisoformat(order["created_at"].replace("Z", "+00:00")).timestamp()


def counted(sim: Simulator, accounts: int, per_account: int, deadline_s: float) -> list[float]:
    """At the server: every position flat, filled exactly what it held, never two closing
    orders working at once, none crossed zero; and for each escalated position, how long after
    its deadline its rest was created."""
    late: list[float] = []
    for a in range(accounts):
        for n in range(per_account):
            symbol = f"N{a}X{n}"
            assert sim.position_quantity(FIRST + a, symbol) == 0, symbol
            orders = sorted(sim.closing_orders(FIRST + a, symbol), key=_at)
            filled = sum(Decimal(o["filled_quantity"]) for o in orders)
            assert filled == 300, orders
            limit, *rests = orders
            assert limit["order_type"] == "LIMIT", orders
            assert len(rests) <= 1, orders
            if rests:
                late.append(_at(rests[0]) - (_at(limit) + deadline_s))
    assert sim.most_working_closes() == 1
    assert sim.crossed_zero() == []
    return late


async def market_cost(
    settings_for: Any, tmp_path: Path, config: SimConfig, thin_every: int, *shape: int
) -> Decimal:
    """The market style's cost on the same books."""
    async with simulator(config, thin_every, *shape) as sim:
        _, doc, _ = await liquidate(
            sim, settings_for, tmp_path, shape[0], close_via="submit_orders", rate_limit=RATE
        )
        return Decimal(doc["summary"]["cost"])


async def test_200_positions_half_thin_over_10_accounts_escalate_on_time_and_cost_less(
    settings_for: Any, tmp_path: Path
) -> None:
    accounts, per_account = 10, 20
    async with simulator(book(refill_s=0.5), 2, accounts, per_account) as sim:
        result, doc, took = await liquidate(sim, settings_for, tmp_path, accounts, **PROTECTED)
        assert int(result.exit_code) == 0, doc["summary"]
        late = counted(sim, accounts, per_account, PROTECTED["deadline_s"])
        assert late, "a thin name's limit rests to its deadline"
        assert max(late) <= 2.0, sorted(late)[-5:]  # at market within seconds of its deadline
        # 6 s of following and rests, plus the escalation's listing by status (10 requests at 20/s)
        assert took <= PROTECTED["deadline_s"] + 7.0
        assert sim.stats.requests <= accounts * per_account, sim.stats.by_route
        assert sim.stats.status_counts[429] == 0
        cost = Decimal(doc["summary"]["cost"])
    market = await market_cost(settings_for, tmp_path, book(refill_s=0.5), 2, accounts, per_account)
    assert cost <= market / 2, (cost, market)


async def test_400_positions_every_name_thin_never_refilled_all_escalate_within_seconds(
    settings_for: Any, tmp_path: Path
) -> None:
    # The row has 40 positions an account (2,000 over 50): following's reads are per
    # account, so its requests per position depend on that shape, not on the count.
    accounts, per_account = 10, 40
    async with simulator(book(refill_s=None), 1, accounts, per_account) as sim:
        result, doc, took = await liquidate(sim, settings_for, tmp_path, accounts, **PROTECTED)
        assert int(result.exit_code) == 0, doc["summary"]
        late = counted(sim, accounts, per_account, PROTECTED["deadline_s"])
        assert len(late) == accounts * per_account  # no limit could fill all: every one escalated
        # Within seconds (the issue asks 10): the escalation's listing by status before each
        # account's cancel is one more round trip in turn, measured at 2.07-2.19 s here.
        assert max(late) <= 2.5, sorted(late)[-5:]
        # 6 s of following and rests, plus the escalation's listing by status (10 requests at 20/s)
        assert took <= PROTECTED["deadline_s"] + 7.0
        assert sim.stats.requests <= accounts * per_account, sim.stats.by_route
        # By instrument: one cancel per account, not one per limit.
        assert sim.stats.by_route["cancel"] <= 2 * accounts, sim.stats.by_route


@pytest.mark.parametrize(("accounts", "per_account"), [(2, 100), (1, 40)])
async def test_at_close_thin_positions_every_rest_accepted_before_the_cutoff(
    settings_for: Any, tmp_path: Path, accounts: int, per_account: int
) -> None:
    """200 thin positions over two accounts, and 40 in one (the issue's rows)."""
    config = book(refill_s=None, moc_cutoff_s=4.0)
    # The close 9 s from now, its cutoff 4 s before: 5 s for the limits, then every rest must be
    # in before the cutoff, at 20 requests a second with following's reads between.
    config.regular_close_at = datetime.now(UTC) + timedelta(seconds=9)
    async with simulator(config, 1, accounts, per_account) as sim:
        settings = {**PROTECTED, "deadline_s": 60, "at_close": True, "moc_cutoff": "4s"}
        result, doc, _ = await liquidate(sim, settings_for, tmp_path, accounts, **settings)
        assert sim.stats.moc_refused == 0
        assert int(result.exit_code) == 0, doc["summary"]
        rests = [
            o
            for a in range(accounts)
            for n in range(per_account)
            for o in sim.closing_orders(FIRST + a, f"N{a}X{n}")
            if o["order_type"] == "MARKET"
        ]
        assert len(rests) == accounts * per_account
        assert {o["time_in_force"] for o in rests} == {"AT_THE_CLOSE"}
        assert max(_at(o) for o in rests) < config.regular_close_at.timestamp() - 4.0


async def test_a_cancel_answered_but_never_applied_is_read_and_sent_again(
    settings_for: Any, tmp_path: Path
) -> None:
    accounts, per_account = 3, 10
    config = book(refill_s=None, p_cancel_lost=0.4, seed=11)
    async with simulator(config, 1, accounts, per_account) as sim:
        settings = {**PROTECTED, "deadline_s": 1.5}
        result, doc, took = await liquidate(sim, settings_for, tmp_path, accounts, **settings)
        assert sim.stats.cancels_lost > 0
        assert int(result.exit_code) == 0, doc["summary"]
        counted(sim, accounts, per_account, settings["deadline_s"])
        assert took < settings["deadline_s"] + settings["flat_timeout"]


async def test_a_limit_that_cannot_be_cancelled_is_reported_with_its_id_before_flat_timeout(
    settings_for: Any, tmp_path: Path
) -> None:
    config = book(refill_s=None, uncancellable={"N0X1"})
    async with simulator(config, 1, 1, 3) as sim:
        settings = {**PROTECTED, "deadline_s": 1.0, "flat_timeout": 8.0}
        with events_emitted() as emitted:
            result, doc, _ = await liquidate(sim, settings_for, tmp_path, 1, **settings)
        stuck = [e for e in emitted if e["event"] == "escalation_cancel_stuck"]
        [limit] = [o for o in sim.closing_orders(FIRST, "N0X1") if o["order_type"] == "LIMIT"]
        assert [e["order_id"] for e in stuck] == [limit["id"]]
        [not_flat] = [r for r in doc["results"] if r["instrument"] == "N0X1"]
        assert not_flat["outcome"] == "not_flat", not_flat
        assert all(r["outcome"] == "closed" for r in doc["results"] if r is not not_flat)
        assert sim.most_working_closes() == 1  # its rest never went beside it
        assert int(result.exit_code) != 0


async def test_a_dry_run_states_each_styles_requests_and_whether_protected_fits(
    settings_for: Any, tmp_path: Path
) -> None:
    from rich.console import Console

    from worker.cli.terminal import Terminal

    async with simulator(book(refill_s=None), 1, 50, 4) as sim:
        # 200 positions over 50 accounts, a 1 s deadline: the escalation's ~300 requests take
        # 15 s at 20 a second, far past "within seconds" of the deadline.
        settings = settings_for(sim, **{**PROTECTED, "deadline_s": 1.0})
        screen = Console(record=True, width=200)
        specs = [TargetSpec(FIRST + a, None) for a in range(50)]
        request = RunRequest(specs, dry_run=True, watcher=Terminal(screen, scrub=str))
        with events_emitted() as emitted:
            result = await run(settings, request, asyncio.Event())
        assert int(result.exit_code) == 0
        [plan] = [e for e in emitted if e["event"] == "plan_ready"]
        market, protected = plan["requests"]["market"], plan["requests"]["protected"]
        assert market["requests"] == 50 + 50 * 4  # a POST and following's reads per account
        assert protected["fits"] is False
        assert "RATE_LIMIT" in protected["advice"]
        text = screen.export_text()
        assert "Requests, market: 250 requests" in text
        assert "does NOT fit" in text
        assert sim.stats.by_route["submit"] == 0
