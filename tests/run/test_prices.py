"""Arrival price and cost, on the simulator's book, counted at the server: each target's cost is
what the server's executions paid against the midpoint quoted before the first close."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support import liquidate, seed_held
from worker.inputs.targets import TargetSpec
from worker.simulator import SimConfig, Simulator
from worker.simulator.config import Faults
from worker.simulator.market import Liquidity, MarketConfig

CENT = Decimal("0.01")


@pytest.fixture
def sim_config() -> SimConfig:
    # A thin book: three levels of exactly 100 shares a side, so 250 shares walk it.
    return SimConfig(
        market=MarketConfig(
            depth=3,
            level_size=100,
            size_jitter=0,
            instruments={"S1": Liquidity(price="50.00", spread_bps=40)},
        )
    )


def _paid(sim: Simulator, account: int, iid: str) -> tuple[Decimal, Decimal]:
    """Quantity and money of the position's closing fills, from the server's executions."""
    closing = {o["id"] for o in sim.closing_orders(account, iid)}
    fills = [e for e in sim.book.accounts[account].executions if e.order_id in closing]
    return sum((e.quantity for e in fills), Decimal(0)), sum(
        (e.quantity * e.price for e in fills), Decimal(0)
    )


def _mid(sim: Simulator, iid: str, symbol: str) -> Decimal:
    book = sim.market.book(iid, symbol)
    return (book.bids[0].price + book.asks[0].price) / 2


@pytest.mark.parametrize("close_via", ["close_position", "submit_orders"])
async def test_every_cost_is_what_the_server_filled_against_the_arrival_midpoint(
    sim: Simulator, settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    held = seed_held(sim, 31001, [250, -150, 40]) + seed_held(sim, 31002, [-60], prefix="Q")
    symbols = {**{h[1]: f"S{k}" for k, h in enumerate(held[:3])}, held[3][1]: "Q0"}
    mids = {iid: _mid(sim, iid, symbols[iid]) for _, iid, _ in held}  # before the run
    specs = [TargetSpec(31001, None), TargetSpec(31002, None)]
    result, doc = await liquidate(sim, settings_for, tmp_path, specs, close_via=close_via)
    assert result.exit_code == 0, doc
    by_iid = {r["instrument_id"]: r for r in doc["results"]}
    gross = cost_sum = Decimal(0)
    for account, iid, quantity in held:
        r = by_iid[iid]
        filled, paid = _paid(sim, account, iid)
        assert filled == abs(quantity), r
        assert r["outcome"] == "closed", r
        mid = mids[iid]
        cost = mid * filled - paid if quantity > 0 else paid - mid * filled
        assert Decimal(r["arrival_midpoint"]) == mid
        assert Decimal(r["arrival_bid"]) < mid < Decimal(r["arrival_ask"])
        assert Decimal(r["filled_quantity"]) == filled
        assert Decimal(r["average_fill_price"]).quantize(CENT) == (paid / filled).quantize(CENT)
        assert Decimal(r["cost"]).quantize(CENT) == cost.quantize(CENT), r
        assert Decimal(r["cost_bps"]) == (cost / (mid * filled) * 10_000).quantize(CENT)
        assert Decimal(r["cost"]) > 0  # crossing the spread costs, walking the book more
        assert "price_note" not in r
        gross += paid
        cost_sum += cost
    # The 250-share sell walked three levels: the worst, in basis points and in money.
    walked = by_iid[held[0][1]]
    assert Decimal(walked["average_fill_price"]) < Decimal(walked["arrival_bid"])
    summary = doc["summary"]
    assert Decimal(summary["gross_value_closed"]) == gross.quantize(CENT)
    assert Decimal(summary["cost"]) == cost_sum.quantize(CENT)
    worst = max(held, key=lambda h: Decimal(by_iid[h[1]]["cost"]))
    assert summary["worst_cost"]["instrument"] == symbols[worst[1]]
    assert set(summary["cost_by_account"]) == {"31001", "31002"}
    # One snapshot request for the four instruments, before any close.
    snaps = [i for i, q in enumerate(sim.requests) if q.route == "snapshot"]
    closes = [i for i, q in enumerate(sim.requests) if q.route in ("close", "submit")]
    assert len(snaps) == 1
    assert snaps[0] < min(closes)


async def test_snapshots_are_read_a_hundred_instruments_a_request(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    seed_held(sim, 31003, [1] * 230)
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(31003, None)])
    assert result.exit_code == 0
    sizes = [
        len(q.query["instrument_ids"].split(",")) for q in sim.requests if q.route == "snapshot"
    ]
    assert sorted(sizes) == [30, 100, 100]
    assert all(r["arrival_midpoint"] is not None for r in doc["results"])


async def test_a_target_without_a_quote_still_closes_with_null_prices(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    # The snapshot endpoint never answers: no arrival price, and nothing for a guard to judge.
    sim.config.faults["snapshot"] = Faults(p_503=1.0, retry_after_s=0.0)
    held = seed_held(sim, 31004, [70])
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(31004, None)], max_attempts=2
    )
    assert result.exit_code == 0, doc
    (r,) = doc["results"]
    assert r["outcome"] == "closed"
    assert sim.position_quantity(31004, held[0][1]) == 0
    for name in ("arrival_bid", "arrival_ask", "arrival_midpoint", "arrival_age_s", "cost"):
        assert r[name] is None, name
    assert r["cost_bps"] is None
    assert r["price_note"] == "no arrival price"
    _, paid = _paid(sim, 31004, held[0][1])
    assert Decimal(r["average_fill_price"]) * 70 == paid  # the fill is still priced
    assert doc["summary"]["cost"] is None
    assert Decimal(doc["summary"]["gross_value_closed"]) == paid.quantize(CENT)
