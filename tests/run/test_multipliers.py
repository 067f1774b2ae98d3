"""Options are worth their contract multiplier: the simulator serves option positions and their
contracts in the spec's shapes, and every notional, guard, cost and total a run reports is the
server's executions x the multiplier the contracts endpoint gave (never a hard-coded 100)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.spec_validation import validate_request, validate_response
from tests.support import clean_env, events_emitted, liquidate, run_cli
from worker.inputs.targets import TargetSpec
from worker.money import ONE, multiplier_text, needs_multiplier, value
from worker.run.runner import RunRequest, run
from worker.simulator import SimConfig, Simulator
from worker.simulator.config import Faults
from worker.simulator.market import Liquidity, MarketConfig

CENT = Decimal("0.01")
PUT = "SPY   261218P00600000"  # OSI: root padded to six, yymmdd, P, strike x 1000
ADJUSTED = "XYZ1  270115C00050000"  # an adjusted contract: 10 shares a contract


@pytest.fixture
def sim_config() -> SimConfig:
    # A book three levels deep, so every close crosses the spread and costs something.
    return SimConfig(
        market=MarketConfig(
            depth=3,
            level_size=100,
            size_jitter=0,
            instruments={
                PUT: Liquidity(price="27.04", spread_bps=40),
                ADJUSTED: Liquidity(price="4.00", spread_bps=50),
                "S1": Liquidity(price="50.00", spread_bps=40),
            },
        )
    )


def _seed(sim: Simulator, account: int) -> dict[str, tuple[str, Decimal, Decimal]]:
    """An SPY put (short 5, multiplier 100), an adjusted call (long 3, multiplier 10) and a
    stock (long 40): symbol -> (instrument id, quantity, multiplier)."""
    held = {
        PUT: ("-5", "27.04", "OPTION", "SPY", None),
        ADJUSTED: ("3", "4.00", "OPTION", "XYZ", "10"),
        "S1": ("40", "50.00", "COMMON_STOCK", None, None),
    }
    seeded = {}
    for symbol, (qty, price, kind, underlying, multiplier) in held.items():
        iid = sim.add_position(
            account,
            symbol,
            qty,
            price=price,
            instrument_type=kind,
            underlying=underlying,
            multiplier=multiplier,
        )
        size = Decimal(multiplier or (100 if kind == "OPTION" else 1))
        seeded[symbol] = (iid, Decimal(qty), size)
    return seeded


def _paid(sim: Simulator, account: int, iid: str) -> tuple[Decimal, Decimal]:
    """Quantity filled and quantity x price paid (per share) by the position's closing fills."""
    closing = {o["id"] for o in sim.closing_orders(account, iid)}
    fills = [e for e in sim.book.accounts[account].executions if e.order_id in closing]
    return sum((e.quantity for e in fills), Decimal(0)), sum(
        (e.quantity * e.price for e in fills), Decimal(0)
    )


@pytest.mark.parametrize("close_via", ["close_position", "submit_orders"])
async def test_option_cost_and_value_are_the_executions_times_the_contract_multiplier(
    sim: Simulator, settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    seeded = _seed(sim, 32001)
    mids = {s: sim.market.book(iid, s).midpoint for s, (iid, _, _) in seeded.items()}
    metrics = tmp_path / "liquidator.prom"
    result, doc = await liquidate(
        sim,
        settings_for,
        tmp_path,
        [TargetSpec(32001, None)],
        close_via=close_via,
        metrics_file=metrics,
    )
    assert result.exit_code == 0, doc
    by_symbol = {r["symbol"]: r for r in doc["results"]}
    gross = cost_sum = at_arrival_sum = Decimal(0)
    for symbol, (iid, quantity, multiplier) in seeded.items():
        r = by_symbol[symbol]
        mid = mids[symbol]
        assert mid is not None
        filled, paid = _paid(sim, 32001, iid)
        assert r["outcome"] == "closed", r
        assert filled == abs(quantity)
        assert sim.position_quantity(32001, iid) == 0
        per_share = mid * filled - paid if quantity > 0 else paid - mid * filled
        cost = per_share * multiplier
        assert r["multiplier"] == str(multiplier)
        assert Decimal(r["cost"]).quantize(CENT) == cost.quantize(CENT), r
        assert Decimal(r["cost"]) > 0
        assert Decimal(r["cost_bps"]) == (per_share / (mid * filled) * 10_000).quantize(CENT)
        gross += paid * multiplier
        cost_sum += cost
        at_arrival_sum += mid * filled * multiplier
    summary = doc["summary"]
    # 5 puts filled near 27.04 are worth about 13,520.00, not 135.20.
    assert Decimal(summary["gross_value_closed"]) == gross.quantize(CENT)
    assert gross > 13_000
    assert Decimal(summary["cost"]) == cost_sum.quantize(CENT)
    assert Decimal(summary["cost_bps"]) == (cost_sum / at_arrival_sum * 10_000).quantize(CENT)
    assert summary["worst_cost"]["instrument"] == PUT  # the costliest in money, by multiplier
    samples = {
        (s.name, s.labels.get("account")): s.value
        for f in text_string_to_metric_families(metrics.read_text())
        for s in f.samples
    }
    assert samples[("liquidator_gross_value_closed", "all")] == float(gross.quantize(CENT))
    assert samples[("liquidator_cost", "32001")] == float(cost_sum.quantize(CENT))
    # One contracts request for the two options (the stock is never asked about), before any
    # close.
    asked = [q for q in sim.requests if q.route == "contracts"]
    assert len(asked) == 1
    ids = set(asked[0].query["contract_ids"].split(","))
    assert ids == {seeded[PUT][0].lower(), seeded[ADJUSTED][0].lower()}
    sends = [i for i, q in enumerate(sim.requests) if q.route in ("close", "submit")]
    assert sim.requests.index(asked[0]) < min(sends)


async def test_max_notional_counts_the_multiplier_in_a_dry_run(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    # 5 contracts at 100.00 are 50,000.00; 50 shares at 100.00 are 5,000.00.
    sim.add_position(
        32002, "SPY   261218C00500000", "5", price="100.00", instrument_type="OPTION",
        underlying="SPY",
    )  # fmt: skip
    sim.add_position(32002, "S2", "50", price="100.00")
    report = tmp_path / "dry.json"
    result = await run(
        settings_for(sim, max_notional="10000"),
        RunRequest(specs=[TargetSpec(32002, None)], dry_run=True, report_path=report),
        asyncio.Event(),
    )
    by_symbol = {r.symbol: r for r in result.results}
    held = by_symbol["SPY   261218C00500000"]
    assert str(held.outcome) == "guarded", held
    assert held.error is not None
    assert "notional 50000.00" in held.error
    assert "5 contracts x 100" in held.error
    assert "MAX_NOTIONAL 10000" in held.error
    assert str(by_symbol["S2"].outcome) == "skipped"  # dry run: nothing sent, not guarded
    assert sim.stats.by_route["close"] == sim.stats.by_route["submit"] == 0


async def test_an_option_whose_multiplier_cannot_be_learned_is_guarded_not_guessed(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.config.faults["contracts"] = Faults(p_503=1.0, retry_after_s=0.0)
    seeded = _seed(sim, 32003)
    with events_emitted() as emitted:
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(32003, None)], max_attempts=2
        )
    by_symbol = {r["symbol"]: r for r in doc["results"]}
    for option in (PUT, ADJUSTED):
        r = by_symbol[option]
        assert r["outcome"] == "guarded", r
        assert "contract multiplier" in r["error"]
        assert "could not be learned" in r["error"]
        assert r["multiplier"] is None
        assert sim.closing_orders(32003, seeded[option][0]) == []
        assert sim.position_quantity(32003, seeded[option][0]) == seeded[option][1]
    assert by_symbol["S1"]["outcome"] == "closed"
    assert result.exit_code != 0  # open positions remain
    [unavailable] = [e for e in emitted if e["event"] == "multipliers_unavailable"]
    assert unavailable["instruments"] == 2


async def test_a_stock_only_run_asks_for_no_contracts(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_position(32004, "S1", "40", price="50.00")
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(32004, None)])
    assert result.exit_code == 0, doc
    assert sim.stats.by_route["contracts"] == 0
    assert doc["results"][0]["multiplier"] == "1"


async def test_the_simulators_contracts_endpoint_answers_in_the_spec_shape(
    sim: Simulator,
) -> None:
    seeded = _seed(sim, 32005)
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    url = f"{sim.base_url}/v1/instruments/options/contracts"
    async with aiohttp.ClientSession(headers=headers) as session:
        ids = f"{seeded[PUT][0]},{''.join(ADJUSTED.split())},{seeded['S1'][0]}"
        async with session.get(url, params={"contract_ids": ids}) as resp:
            assert resp.status == 200
            body = await resp.json()
        async with session.get(url, params={"underlier": "SPY"}) as resp:
            by_underlier = (await resp.json())["data"]
        async with session.get(url) as resp:
            assert resp.status == 400
    contracts = {c["symbol"]: c for c in body["data"]}
    assert set(contracts) == {PUT, ADJUSTED}  # the stock is no contract
    put = contracts[PUT]
    assert put["multiplier"] == "100"
    assert contracts[ADJUSTED]["multiplier"] == "10"
    assert (put["contract_type"], put["strike_price"], put["expiry"]) == (
        "PUT",
        "600",
        "2026-12-18",
    )
    assert [c["symbol"] for c in by_underlier] == [PUT]


async def test_the_contracts_and_option_positions_exchanged_match_the_spec(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    _seed(sim, 32006)
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(32006, "SPY")])
    assert result.exit_code == 0, doc  # not held: the account holds an SPY put
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(32006, None)])
    assert result.exit_code == 0, doc
    routes = {"contracts", "positions"}
    exchanged = [q for q in sim.requests if q.route in routes]
    assert {q.route for q in exchanged} == routes
    for recorded in exchanged:
        validate_request(recorded)
        validate_response(recorded)


async def test_the_issue_row_max_notional_env_on_a_dry_run_of_five_contracts_worth_50000(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_position(
        32008, "SPY   261218C00500000", "5", price="100.00", instrument_type="OPTION",
        underlying="SPY",
    )  # fmt: skip
    sim.add_position(32008, "S3", "120", price="100.00")  # 12,000.00 of stock: guarded too
    cheap = "SPY   261218P00100000"  # 2 contracts at 0.50: 100.00, planned
    sim.add_position(32008, cheap, "2", price="0.50", instrument_type="OPTION", underlying="SPY")
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        LIQUIDATOR_LOG_FORMAT="json",
        LIQUIDATOR_STATE_DIR=str(tmp_path / "state"),
        LIQUIDATOR_MAX_NOTIONAL="10000",
    )
    args = ("run", "--dry-run", "--yes", "--base-url", sim.base_url, "--account", "32008")
    code, out = await run_cli(*args, env=env)
    assert code == 1, out  # guarded targets: the book would not be flat
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    planned = {e["symbol"]: e for e in lines if e["event"] == "plan_position"}
    assert set(planned) == {cheap}
    assert planned[cheap]["multiplier"] == "100"
    assert planned[cheap]["market_value"] == "100.00"
    held = {e["instrument"]: e for e in lines if e["event"] == "target_settled"}
    option = held["SPY   261218C00500000"]
    assert option["outcome"] == "guarded"
    assert option["multiplier"] == "100"
    assert option["why"].startswith("notional 50000.00 of SPY   261218C00500000")
    assert held["S3"]["outcome"] == "guarded"
    assert held["S3"]["why"].startswith("notional 12000.00 of S3 (120 shares)")
    assert sim.stats.by_route["close"] == sim.stats.by_route["submit"] == 0


async def test_force_sends_an_option_of_unknown_multiplier_and_values_it_at_nothing(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.config.faults["contracts"] = Faults(p_503=1.0, retry_after_s=0.0)
    seeded = _seed(sim, 32009)
    report = tmp_path / "forced.json"
    result = await run(
        settings_for(sim, max_attempts=2, follow_pause=0.02),
        RunRequest(
            specs=[TargetSpec(32009, None)], report_path=report, max_positions_override=True
        ),
        asyncio.Event(),
    )
    assert result.exit_code == 0
    doc = json.loads(report.read_text())
    by_symbol = {r["symbol"]: r for r in doc["results"]}
    for option in (PUT, ADJUSTED):
        r = by_symbol[option]
        assert r["outcome"] == "closed", r
        assert sim.position_quantity(32009, seeded[option][0]) == 0
        assert r["multiplier"] is None
        assert r["cost"] is None  # never a guessed 100
        assert r["average_fill_price"] is not None  # the fill itself is known
    # Only the stock's fills are in the money totals.
    _, paid = _paid(sim, 32009, seeded["S1"][0])
    assert Decimal(doc["summary"]["gross_value_closed"]) == paid.quantize(CENT)


@pytest.mark.parametrize(
    ("quantity", "price", "multiplier", "worth", "shown"),
    [
        ("-5", "27.04", "100", "-13520.00", "100"),  # the put the issue counted as 27.04
        ("3", "4.00", "10", "120.00", "10"),
        ("40", "50.00", "1", "2000.00", "1"),
        ("5", "100.00", None, None, None),  # not learned: not guessed
    ],
)
def test_money_is_quantity_times_price_times_the_multiplier(
    quantity: str, price: str, multiplier: str | None, worth: str | None, shown: str | None
) -> None:
    m = None if multiplier is None else Decimal(multiplier)
    got = value(Decimal(quantity), Decimal(price), m)
    assert got == (None if worth is None else Decimal(worth))
    assert multiplier_text(m) == shown
    assert multiplier_text(ONE) == "1"
    assert needs_multiplier("OPTION")
    assert not needs_multiplier("COMMON_STOCK")
