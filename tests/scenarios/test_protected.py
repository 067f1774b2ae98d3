"""CLOSE_STYLE=protected on the simulator's book, counted at the server: a collared LIMIT order,
re-priced, escalated at its deadline; never two working orders on one position, none flipped,
and what it cost, recomputed from the server's fills."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from structlog.typing import EventDict

from tests.support import FAST_FOLLOW, clean_env, events_emitted, run_cli
from worker.inputs.targets import TargetSpec
from worker.run.runner import RunRequest, RunResult, run
from worker.simulator import Faults, SimConfig, Simulator, serve
from worker.simulator.market import MarketConfig

ACCOUNT = 33001
# Short schedules: a re-price every 50 ms, the rest at market after DEADLINE.
PROTECTED: dict[str, Any] = {
    "close_style": "protected",
    "collar_bps": 5,
    "collar_max_bps": 15,
    "reprice_s": 0.05,
    "deadline_s": 1.5,
    "flat_timeout": 3.0,
}


def thin_book(**market: Any) -> SimConfig:
    """Quoted 99.95 x 100.05 around 100.00; levels 20 bps (0.20) apart, 50 shares each: a
    market order for 300 walks six levels, a limit at 5-15 bps below the bid takes only the
    best, which refills 0.1 s after it is taken."""
    values: dict[str, Any] = {
        "spread_bps": 10.0,
        "depth": 6,
        "level_size": 50,
        "size_jitter": 0.0,
        "level_step_bps": 20.0,
        "refill_s": 0.1,
        **market,
    }
    return SimConfig(fill_delay_s=0.02, market=MarketConfig(**values))


@contextlib.asynccontextmanager
async def simulator(config: SimConfig, positions: dict[str, str]) -> AsyncIterator[Simulator]:
    sim = Simulator(config)
    sim.add_account(ACCOUNT)
    for symbol, quantity in positions.items():
        sim.add_position(ACCOUNT, symbol, quantity, price="100.00")
    runner, _ = await serve(sim, "127.0.0.1", 0)
    try:
        yield sim
    finally:
        await runner.cleanup()


async def liquidate(
    sim: Simulator, settings_for: Any, tmp_path: Path, **overrides: Any
) -> tuple[RunResult, dict[str, Any], float]:
    report = tmp_path / f"report-{time.monotonic_ns()}.json"
    started = time.monotonic()
    settings = settings_for(sim, **{**FAST_FOLLOW, "close_via": "submit_orders", **overrides})
    result = await run(
        settings, RunRequest(specs=[TargetSpec(ACCOUNT, None)], report_path=report), asyncio.Event()
    )
    return result, json.loads(report.read_text()), time.monotonic() - started


def server_cost(sim: Simulator, symbol: str, midpoint: Decimal) -> tuple[Decimal, Decimal]:
    """What the server filled the position's closing orders at: (quantity, cost against the
    midpoint, a sell below it positive), from its executions."""
    account = sim.book.accounts[ACCOUNT]
    iid = sim.instrument_id(ACCOUNT, symbol)
    closing = {o["id"] for o in sim.closing_orders(ACCOUNT, symbol)}
    fills = [e for e in account.executions if e.instrument_id == iid and e.order_id in closing]
    quantity = sum((e.quantity for e in fills), Decimal(0))
    paid = sum((e.quantity * e.price for e in fills), Decimal(0))
    sells = {e.side for e in fills} == {"SELL"}
    return quantity, (midpoint * quantity - paid) if sells else (paid - midpoint * quantity)


def sound(sim: Simulator, held: dict[str, int]) -> None:
    """Counted at the server: flat, the closing fills are what was held, never two closing
    orders working at once on one position, and none crossed zero."""
    for symbol, quantity in held.items():
        assert sim.position_quantity(ACCOUNT, symbol) == 0, symbol
        filled = sum(Decimal(o["filled_quantity"]) for o in sim.closing_orders(ACCOUNT, symbol))
        assert filled == abs(quantity), sim.closing_orders(ACCOUNT, symbol)
    assert sim.most_working_closes() == 1
    assert sim.crossed_zero() == []
    assert sim.flipped_positions() == []


async def test_a_protected_close_on_a_thin_book_costs_less_than_a_market_close_and_ends_flat(
    settings_for: Any, tmp_path: Path
) -> None:
    costs: dict[str, Decimal] = {}
    for style in ("market", "protected"):
        async with simulator(thin_book(), {"THIN": "300"}) as sim:
            extra = PROTECTED if style == "protected" else {}
            result, doc, took = await liquidate(sim, settings_for, tmp_path, **extra)
            assert int(result.exit_code) == 0, doc
            (target,) = doc["results"]
            assert target["outcome"] == "closed", target
            sound(sim, {"THIN": 300})
            quantity, cost = server_cost(sim, "THIN", Decimal(target["arrival_midpoint"]))
            assert quantity == 300
            assert Decimal(target["cost"]) == cost  # the report's cost is the server's, to the cent
            costs[style] = cost
            types = {o["order_type"] for o in target["orders"]}
            if style == "protected":
                assert "LIMIT" in types
                assert sim.stats.by_route["replace"] > 0  # re-priced while it rested
                assert took < PROTECTED["deadline_s"] + 1.5  # flat by its deadline, + following
            else:
                assert types == {"MARKET"}
    # 300 walked through six levels (avg 99.45) against the best level as it refills (99.95).
    assert costs["market"] == Decimal("165.00")
    assert costs["protected"] < costs["market"]
    assert costs["protected"] <= Decimal("30.00")


def _events(emitted: list[EventDict], name: str) -> list[Any]:
    return [e for e in emitted if e["event"] == name]


def _created(order: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(order["created_at"][:26] + "+00:00").timestamp()


async def test_a_limit_that_never_fills_is_escalated_at_its_deadline_and_the_rest_goes_at_market(
    settings_for: Any, tmp_path: Path
) -> None:
    async with simulator(thin_book(refill_s=None), {"AWAY": "120"}) as sim:
        iid = sim.instrument_id(ACCOUNT, "AWAY")

        def market_runs_away() -> None:
            # As the limit lands the market drops 1% and quotes can no longer be read: every
            # re-price falls back to the arrival quote, never marketable again.
            sim.market.move(iid, "AWAY", "99.00")
            sim.config.faults["snapshot"] = Faults(p_503=1.0)

        sim.after_submit(ACCOUNT, market_runs_away)
        settings = {**PROTECTED, "collar_bps": 0, "deadline_s": 0.4}
        with events_emitted() as emitted:
            result, doc, _ = await liquidate(sim, settings_for, tmp_path, **settings)
        assert int(result.exit_code) == 0, doc
        sound(sim, {"AWAY": 120})
        limit, market = sorted(sim.closing_orders(ACCOUNT, "AWAY"), key=_created)
        assert (limit["order_type"], limit["status"], limit["filled_quantity"]) == (
            "LIMIT",
            "CANCELED",
            "0",
        )
        assert (market["order_type"], market["quantity"], market["status"]) == (
            "MARKET",
            "120",
            "FILLED",
        )
        # Escalated at the deadline, not before; under the next generation's client id.
        assert _created(market) - _created(limit) >= 0.4
        assert market["client_order_id"][-3:] == "-g1"
        assert limit["client_order_id"][-3:] == "-g0"
        [escalated] = _events(emitted, "close_escalated")
        assert (escalated["reason"], escalated["remaining"]) == ("deadline", "120")
        repriced = _events(emitted, "order_repriced")
        assert repriced
        assert {e["quote"] for e in repriced} == {"arrival"}
        (target,) = doc["results"]
        assert target["outcome"] == "closed"
        assert target["residue_closes"] == 1  # the escalation, within MAX_RESIDUE_CLOSES + 1


async def test_a_partly_filled_limit_escalates_only_its_remainder(
    settings_for: Any, tmp_path: Path
) -> None:
    # No refill: the limit takes the best level (50) and rests; the next level is 20 bps
    # below the bid, beyond the widest collar (15 bps).
    async with simulator(thin_book(refill_s=None), {"PART": "300", "SHORT": "-200"}) as sim:
        # FLAT_TIMEOUT shorter than the deadline: it counts from the deadline, so a limit
        # resting as it should is not called not_flat.
        settings = {**PROTECTED, "deadline_s": 1.2, "flat_timeout": 1.0}
        with events_emitted() as emitted:
            result, doc, _ = await liquidate(sim, settings_for, tmp_path, **settings)
        assert int(result.exit_code) == 0, doc
        sound(sim, {"PART": 300, "SHORT": -200})
        for symbol, held, side in (("PART", 300, "SELL"), ("SHORT", 200, "BUY")):
            limit, market = sorted(sim.closing_orders(ACCOUNT, symbol), key=_created)
            assert (limit["order_type"], limit["side"], limit["filled_quantity"]) == (
                "LIMIT",
                side,
                "50",
            )
            assert market["order_type"] == "MARKET"
            assert market["quantity"] == str(held - 50)  # only the remainder
        escalated = {e["instrument"]: e["remaining"] for e in _events(emitted, "close_escalated")}
        assert escalated == {"PART": "250", "SHORT": "150"}
        by_symbol = {r["symbol"]: r for r in doc["results"]}
        # The cost is over both orders' fills, as the server filled them.
        for symbol in ("PART", "SHORT"):
            _, cost = server_cost(sim, symbol, Decimal(by_symbol[symbol]["arrival_midpoint"]))
            assert Decimal(by_symbol[symbol]["cost"]) == cost


async def test_unknown_outcomes_of_reprices_and_escalations_never_leave_two_working_orders(
    settings_for: Any, tmp_path: Path
) -> None:
    held = {f"U{k}": (150 + 10 * k) * (-1 if k % 3 == 0 else 1) for k in range(8)}
    config = thin_book(refill_s=None)
    config.cancel_linger_s = 0.1  # a cancelled limit may still fill while PENDING_CANCEL
    config.faults = {
        # Replaces and cancels applied with no reply, or only after the client gave up.
        "replace": Faults(p_drop_after=0.3, p_hang_after=0.2, p_apply_late=0.2, hang_s=0.8,
                          apply_late_s=0.8),
        "cancel": Faults(p_drop_after=0.3, p_hang_after=0.2, p_apply_late=0.3, hang_s=0.8,
                         apply_late_s=0.8),
    }  # fmt: skip
    async with simulator(config, {s: str(q) for s, q in held.items()}) as sim:

        def escalations_land_unanswered() -> None:
            # After the limits went out: the escalation's market orders are applied, their
            # replies lost (a look by client id finds them).
            sim.config.faults["submit"] = Faults(p_drop_after=0.3, p_apply_late=0.2,
                                                 apply_late_s=0.8)  # fmt: skip

        sim.after_submit(ACCOUNT, escalations_land_unanswered)
        # FLAT_TIMEOUT with room for a loaded machine: half the requests fail unanswered.
        settings = {
            **PROTECTED,
            "deadline_s": 0.5,
            "request_timeout": 0.3,
            "batch_size": 1,
            "flat_timeout": 10.0,
        }
        with events_emitted() as emitted:
            result, doc, _ = await liquidate(sim, settings_for, tmp_path, **settings)
        assert int(result.exit_code) == 0, [
            (r["instrument"], r["outcome"], r["error"])
            for r in doc["results"]
            if r["outcome"] != "closed"
        ]
        sound(sim, held)
        assert sim.stats.faults_injected["drop_after"] > 0
        assert _events(emitted, "reprice_failed")
        assert _events(emitted, "escalation_cancel_failed")
        assert all(r["outcome"] == "closed" for r in doc["results"]), doc["results"]


async def test_a_run_killed_while_its_limits_rest_then_rerun_adopts_and_escalates_them(
    tmp_path: Path,
) -> None:
    held = {"K0": 300, "K1": -250, "K2": 200}
    config = thin_book(refill_s=None)  # each limit takes its best level and rests
    async with simulator(config, {s: str(q) for s, q in held.items()}) as sim:
        env = {
            **clean_env(),
            "LIQUIDATOR_API_KEY": sim.config.api_key,
            "LIQUIDATOR_STATE_DIR": str(tmp_path / "state"),
            "LIQUIDATOR_LOG_FORMAT": "json",
            "LIQUIDATOR_RATE_LIMIT": "0",
            "LIQUIDATOR_FOLLOW_PAUSE": "0.02",
            "LIQUIDATOR_FOLLOW_PAUSE_MAX": "0.1",
            "LIQUIDATOR_CLOSE_STYLE": "protected",
            "LIQUIDATOR_COLLAR_BPS": "5",
            "LIQUIDATOR_COLLAR_MAX_BPS": "15",
            "LIQUIDATOR_REPRICE_S": "0.05",
            "LIQUIDATOR_DEADLINE_S": "60",  # the kill comes long before
        }
        command = (
            sys.executable, "-m", "worker", "run", "--yes",
            "--base-url", sim.base_url, "--account", str(ACCOUNT),
        )  # fmt: skip
        first = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 30
        while sim.stats.by_route["replace"] < len(held):  # re-pricing under way
            assert time.monotonic() < deadline, "the first run never re-priced"
            await asyncio.sleep(0.01)
        first.kill()
        await first.wait()
        resting = [o for s in held for o in sim.closing_orders(ACCOUNT, s)]
        assert {(o["order_type"], o["status"]) for o in resting} == {("LIMIT", "PARTIALLY_FILLED")}
        report = tmp_path / "rerun.json"
        code, output = await run_cli(
            *command[3:], "--report", str(report), env={**env, "LIQUIDATOR_DEADLINE_S": "0.5"}
        )
        assert code == 0, output
        assert output.count('"event":"order_adopted"') == len(held), output
        assert output.count('"event":"close_escalated"') == len(held), output
        sound(sim, held)
        for symbol, quantity in held.items():
            orders = sorted(sim.closing_orders(ACCOUNT, symbol), key=_created)
            # The killed run's limit, adopted and escalated; its rest at market: no order twice.
            assert [o["order_type"] for o in orders] == ["LIMIT", "MARKET"], orders
            assert [o["client_order_id"][-3:] for o in orders] == ["-g0", "-g1"]
            # (the rerun prices from its own arrival quote: the limit may take another level)
            assert Decimal(orders[0]["filled_quantity"]) >= 50
            assert Decimal(orders[1]["quantity"]) == abs(quantity) - Decimal(
                orders[0]["filled_quantity"]
            )
        doc = json.loads(report.read_text())
        assert {r["outcome"] for r in doc["results"]} == {"closed"}


async def test_without_an_arrival_quote_a_protected_target_is_guarded_and_force_sends_it_at_market(
    settings_for: Any, tmp_path: Path
) -> None:
    config = thin_book()
    # No quote can be read: nothing to price the limit from.
    config.faults = {"snapshot": Faults(p_503=1.0, retry_after_s=0.01)}
    async with simulator(config, {"NOQ": "100"}) as sim:
        with events_emitted() as emitted:
            result, doc, _ = await liquidate(sim, settings_for, tmp_path, **PROTECTED)
        assert int(result.exit_code) == 1
        (target,) = doc["results"]
        assert target["outcome"] == "guarded"
        assert "CLOSE_STYLE=protected" in target["error"]
        assert sim.stats.by_route["submit"] == 0
        [ready] = _events(emitted, "plan_ready")
        assert ready["close_style"] == "protected"
        with events_emitted() as forcing:
            forced = await run(
                settings_for(sim, **{**FAST_FOLLOW, "close_via": "submit_orders", **PROTECTED}),
                RunRequest(specs=[TargetSpec(ACCOUNT, None)], max_positions_override=True),
                asyncio.Event(),
            )
        assert int(forced.exit_code) == 0
        (order,) = sim.closing_orders(ACCOUNT, "NOQ")
        assert order["order_type"] == "MARKET"
        assert _events(forcing, "guard_overridden")
        sound(sim, {"NOQ": 100})


async def test_at_close_the_limit_escalates_before_the_moc_cutoff_and_the_rest_goes_at_the_close(
    settings_for: Any, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    config = thin_book(refill_s=None)
    # The close 3 s from now, the cutoff 2 s before it: the limit (deadline 60 s) rests, takes
    # the best level, and is escalated one REPRICE_S before the cutoff.
    config.regular_close_at = datetime.now(UTC) + timedelta(seconds=3)
    async with simulator(config, {"MOC": "300"}) as sim:
        settings = {**PROTECTED, "deadline_s": 60, "at_close": True, "moc_cutoff": "2s"}
        with events_emitted() as emitted:
            result, doc, _ = await liquidate(sim, settings_for, tmp_path, **settings)
        assert int(result.exit_code) == 0, doc
        sound(sim, {"MOC": 300})
        limit, rest = sorted(sim.closing_orders(ACCOUNT, "MOC"), key=_created)
        assert (limit["order_type"], limit["time_in_force"], limit["filled_quantity"]) == (
            "LIMIT",
            "DAY",
            "50",
        )
        assert (rest["order_type"], rest["time_in_force"], rest["quantity"]) == (
            "MARKET",
            "AT_THE_CLOSE",
            "250",
        )
        assert _created(rest) < config.regular_close_at.timestamp() - 1.9  # before the cutoff
        [escalated] = _events(emitted, "close_escalated")
        assert escalated["reason"] == "moc_cutoff"
