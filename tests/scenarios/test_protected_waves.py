"""CLOSE_STYLE=protected with PROTECTED_VIA=ioc_waves on the simulator's book, counted at the
server: waves of marketable IOC limits, one order a wave per position at most, each sized from
what the last left, the rest at market after the last; never two closes at once, none crossing
zero, a dropped reply never doubling, a killed run's rerun closing each position once."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.test_protected import (
    ACCOUNT,
    _created,
    _events,
    liquidate,
    server_cost,
    simulator,
    sound,
    thin_book,
)
from tests.support import clean_env, events_emitted, run_cli
from worker.simulator import Faults

# A wave every 0.4 s (following alone would read every 0.1-0.2 s), the first at 5 bps, the
# others at 15; the rest at market 1.6 s after the first.
WAVES: dict[str, Any] = {
    "close_style": "protected",
    "protected_via": "ioc_waves",
    "collar_bps": 5,
    "collar_max_bps": 15,
    "reprice_s": 0.4,
    "deadline_s": 1.6,
    "flat_timeout": 5.0,
}


def _gen(order: dict[str, Any]) -> int:
    return int(order["client_order_id"].rsplit("-g", 1)[1])


def waves_sound(sim: Any, held: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Counted at the server, besides `sound`: per position, one order per generation (a wave,
    or the market wave), each for what the orders before it left, never more; IOC limits, then
    at most one market order, last; nothing replaced or cancelled."""
    sound(sim, held)
    assert sim.stats.by_route["replace"] == 0
    assert sim.stats.by_route["cancel"] == 0
    by_symbol = {}
    for symbol, quantity in held.items():
        orders = sorted(sim.closing_orders(ACCOUNT, symbol), key=_gen)
        gens = [_gen(o) for o in orders]
        assert gens == sorted(set(gens)), orders  # one order a generation
        left = Decimal(abs(quantity))
        for n, order in enumerate(orders):
            assert Decimal(order["quantity"]) == left, (symbol, orders)  # what is left, no more
            left -= Decimal(order["filled_quantity"])
            if order["order_type"] == "MARKET":
                assert n == len(orders) - 1, orders  # the market wave is the last
            else:
                assert order["time_in_force"] == "IMMEDIATE_OR_CANCEL", order
                assert order["status"] in ("FILLED", "CANCELED", "EXPIRED"), order
        assert left == 0
        by_symbol[symbol] = orders
    return by_symbol


@pytest.mark.solo  # the market wave's lateness is held against the wall clock
async def test_ioc_waves_send_one_order_a_wave_each_for_the_remainder_then_the_rest_at_market(
    settings_for: Any, tmp_path: Path
) -> None:
    # No refill: the first wave takes the best level (50); the next level is 20 bps below
    # the bid, beyond the widest collar (15 bps): later waves take nothing, the market wave
    # the remainder.
    async with simulator(thin_book(refill_s=None), {"PART": "300", "SHORT": "-200"}) as sim:
        with events_emitted() as emitted:
            result, doc, _ = await liquidate(sim, settings_for, tmp_path, **WAVES)
        assert int(result.exit_code) == 0, doc
        orders = waves_sound(sim, {"PART": 300, "SHORT": -200})
        for symbol, held, side in (("PART", 300, "SELL"), ("SHORT", 200, "BUY")):
            first, *waves, market = orders[symbol]
            assert (first["order_type"], first["side"], first["filled_quantity"]) == (
                "LIMIT",
                side,
                "50",
            )
            assert waves, orders[symbol]  # waves after the first, before the market wave
            # One a REPRICE_S at most before the deadline.
            assert len([first, *waves]) <= WAVES["deadline_s"] / WAVES["reprice_s"]
            assert {o["order_type"] for o in waves} == {"LIMIT"}
            assert (market["order_type"], market["quantity"]) == ("MARKET", str(held - 50))
            # Waves REPRICE_S apart at least; the collar widens (a sell's limit falls).
            limits = [first, *waves]
            for a, b in itertools.pairwise(limits):
                assert _created(b) - _created(a) >= WAVES["reprice_s"] - 0.01
            prices = [Decimal(o["limit_price"]) for o in limits]
            assert prices == sorted(prices, reverse=side == "SELL")
            assert prices[0] != prices[-1]
            # The market wave by the deadline (less one wave's requests), not long after.
            assert _created(market) - _created(first) <= WAVES["deadline_s"] + 1.0
        by_symbol = {r["symbol"]: r for r in doc["results"]}
        for symbol in ("PART", "SHORT"):
            assert by_symbol[symbol]["outcome"] == "closed"
            _, cost = server_cost(sim, symbol, Decimal(by_symbol[symbol]["arrival_midpoint"]))
            assert Decimal(by_symbol[symbol]["cost"]) == cost
        assert not _events(emitted, "close_escalated")  # nothing rests: nothing cancelled
        # Every wave after the first, and the market wave, is a residue close of following's.
        later = sum(len(orders[s]) - 1 for s in ("PART", "SHORT"))
        assert len(_events(emitted, "residue_close_sent")) == later


async def test_ioc_waves_on_a_refilling_thin_book_cost_less_than_a_market_close(
    settings_for: Any, tmp_path: Path
) -> None:
    costs: dict[str, Decimal] = {}
    for style in ("market", "ioc_waves"):
        async with simulator(thin_book(refill_s=0.1), {"THIN": "300"}) as sim:
            extra = WAVES if style == "ioc_waves" else {}
            result, doc, _ = await liquidate(sim, settings_for, tmp_path, **extra)
            assert int(result.exit_code) == 0, doc
            held = {"THIN": 300}
            if style == "ioc_waves":
                waves_sound(sim, held)
            else:
                sound(sim, held)
            (target,) = doc["results"]
            costs[style] = Decimal(target["cost"])
    assert costs["market"] == Decimal("165.00")  # 300 walked through six levels
    # Each wave takes the best level as it refilled: far less than walking the book.
    assert costs["ioc_waves"] <= costs["market"] / 2


async def test_a_dropped_wave_reply_is_resolved_by_client_id_and_never_doubles(
    settings_for: Any, tmp_path: Path
) -> None:
    held = {f"D{k}": (150 + 10 * k) * (-1 if k % 3 == 0 else 1) for k in range(8)}
    config = thin_book(refill_s=0.1)
    async with simulator(config, {s: str(q) for s, q in held.items()}) as sim:

        def waves_land_unanswered() -> None:
            # After the first wave: later waves are applied, their replies lost or late.
            sim.config.faults["submit"] = Faults(
                p_drop_after=0.4, p_apply_late=0.2, apply_late_s=0.5
            )

        sim.after_submit(ACCOUNT, waves_land_unanswered)
        settings = {**WAVES, "request_timeout": 0.3, "flat_timeout": 10.0}
        result, doc, _ = await liquidate(sim, settings_for, tmp_path, **settings)
        assert int(result.exit_code) == 0, [
            (r["instrument"], r["outcome"], r["error"])
            for r in doc["results"]
            if r["outcome"] != "closed"
        ]
        waves_sound(sim, held)
        assert sim.stats.faults_injected["drop_after"] > 0
        assert all(r["outcome"] == "closed" for r in doc["results"]), doc["results"]


async def test_a_run_killed_mid_waves_then_rerun_closes_each_position_once(
    tmp_path: Path,
) -> None:
    held = {"K0": 300, "K1": -250, "K2": 200}
    config = thin_book(refill_s=None)
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
            "LIQUIDATOR_PROTECTED_VIA": "ioc_waves",
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
        while sim.stats.by_route["submit"] < 3:  # the third wave under way
            assert time.monotonic() < deadline, "the first run never sent a third wave"
            await asyncio.sleep(0.005)
        first.kill()
        await first.wait()
        killed = {s: len(sim.closing_orders(ACCOUNT, s)) for s in held}
        assert all(n >= 2 for n in killed.values()), killed
        report = tmp_path / "rerun.json"
        code, output = await run_cli(
            *command[3:], "--report", str(report), env={**env, "LIQUIDATOR_DEADLINE_S": "0.5"}
        )
        assert code == 0, output
        orders = waves_sound(sim, held)  # each generation once, each for what was left
        for symbol in held:
            assert orders[symbol][-1]["order_type"] == "MARKET"
            assert len(orders[symbol]) > killed[symbol]  # the rerun sent the rest
        doc = json.loads(report.read_text())
        assert {r["outcome"] for r in doc["results"]} == {"closed"}


@pytest.mark.solo  # the cutoff is 1 s from the run's start, by the wall clock
async def test_at_close_ioc_waves_send_every_rest_before_the_cutoff(
    settings_for: Any, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    held = {f"M{k}": 300 if k % 2 else -300 for k in range(200)}
    config = thin_book(refill_s=None)
    # The close 3 s from now, the cutoff 2 s before it: the waves (deadline 60 s) end, and
    # their rests go AT_THE_CLOSE, before the cutoff.
    config.regular_close_at = datetime.now(UTC) + timedelta(seconds=3)
    async with simulator(config, {s: str(q) for s, q in held.items()}) as sim:
        settings = {**WAVES, "deadline_s": 60, "at_close": True, "moc_cutoff": "2s"}
        result, doc, _ = await liquidate(sim, settings_for, tmp_path, **settings)
        assert int(result.exit_code) == 0, [
            (r["instrument"], r["outcome"], r["error"])
            for r in doc["results"]
            if r["outcome"] != "closed"
        ]
        orders = waves_sound(sim, held)
        cutoff = config.regular_close_at.timestamp() - 2
        for symbol in held:
            rest = orders[symbol][-1]
            assert (rest["order_type"], rest["time_in_force"]) == ("MARKET", "AT_THE_CLOSE")
            assert rest["status"] == "FILLED", rest  # accepted, none refused
            assert _created(rest) < cutoff
        assert sim.stats.status_counts[400] == 0  # no rest refused "cutoff has passed"
