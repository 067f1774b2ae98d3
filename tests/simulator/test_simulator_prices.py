"""The simulator's prices over real loopback HTTP: quotes (the snapshot endpoint), a book with
depth that a large order walks, limit orders that fill only when marketable, replace_order,
halts, and fill prices in average_fill_price and the executions. Every exchange is checked
against the spec."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from tests.spec_errors import validate_error_reply
from tests.spec_validation import validate_request, validate_response
from worker.simulator import SimClock, SimConfig, Simulator
from worker.simulator.market import Liquidity, MarketConfig
from worker.simulator.state import api_time, instrument_uuid

ACCOUNT = 19816
ORDERS = f"/v1/accounts/{ACCOUNT}/orders"


@pytest.fixture
def sim_config() -> SimConfig:
    # The server's own clock, standing still until a test moves it: fills come due without
    # sleeping, and times in replies are exact.
    return SimConfig(fill_delay_s=0.5, clock=SimClock(speed=0, start=1_761_917_400.0))


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
        yield session


def _thin_book(**kw: Any) -> MarketConfig:
    """Three levels a side of exactly 100 shares, 5 bps (0.05 at 100.00) apart, spread 10 bps."""
    values: dict[str, Any] = {"depth": 3, "level_size": 100, "size_jitter": 0.0}
    values.update(kw)
    return MarketConfig(**values)


def _advance(sim: Simulator, seconds: float) -> None:
    clock = sim.config.clock
    assert isinstance(clock, SimClock)
    clock.advance(seconds)


async def _call(
    session: aiohttp.ClientSession, method: str, path: str, **kw: Any
) -> tuple[int, dict[str, Any]]:
    async with session.request(method, path, **kw) as resp:
        return resp.status, await resp.json()


async def _snapshot(client: aiohttp.ClientSession, ids: str) -> list[dict[str, Any]]:
    status, body = await _call(
        client, "GET", "/v1/market-data/snapshot", params={"instrument_ids": ids}
    )
    assert status == 200, body
    data: list[dict[str, Any]] = body["data"]
    return data


async def _order(client: aiohttp.ClientSession, order_id: str) -> dict[str, Any]:
    status, body = await _call(client, "GET", f"{ORDERS}/{order_id}")
    assert status == 200, body
    order: dict[str, Any] = body["data"]
    return order


async def _submit(client: aiohttp.ClientSession, **order: str) -> dict[str, Any]:
    body = {"side": "SELL", "order_type": "MARKET", "time_in_force": "DAY", **order}
    status, reply = await _call(client, "POST", ORDERS, json=[body])
    assert status == 200, reply
    submitted: dict[str, Any] = reply["data"][0]
    return submitted


async def _executions(client: aiohttp.ClientSession, order_id: str) -> list[dict[str, Any]]:
    status, body = await _call(
        client, "GET", f"/v1/accounts/{ACCOUNT}/executions", params={"order_ids": order_id}
    )
    assert status == 200, body
    executions: list[dict[str, Any]] = body["data"]
    return executions


def _validate_all(sim: Simulator) -> int:
    for recorded in sim.requests:
        if recorded.response_status == 200:
            validate_request(recorded)
            validate_response(recorded)
        else:
            validate_error_reply(recorded)
    return len(sim.requests)


def _paid(executions: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(e["price"]) * Decimal(e["quantity"]) for e in executions), Decimal(0))


# Quotes.


async def test_snapshots_quote_around_the_seeded_price(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book(instruments={"MSFT": Liquidity(price="250.00", spread_bps=40)})
    sim.add_position(ACCOUNT, "AAPL", "100", price="100.00")
    msft = instrument_uuid("MSFT")  # no account holds it: a listed ticker, asked by UUID
    aapl, other = await _snapshot(client, f"AAPL,{msft}")
    assert aapl["instrument_id"] == instrument_uuid("AAPL")
    assert aapl["symbol"] == "AAPL"
    # 10 bps around 100.00: 99.95 / 100.05, 100 shares each.
    assert aapl["last_quote"] == {
        "bid": "99.95", "bid_size": 100, "ask": "100.05", "ask_size": 100, "midpoint": "100",
        "timestamp": api_time(sim.config.clock()),
    }  # fmt: skip
    assert aapl["last_trade"] == {"price": "100.00", "size": 0}
    assert aapl["session"] == {"previous_close": "100.00", "change": "0.00",
                               "change_percent": "0.0000"}  # fmt: skip
    # A per-instrument price and spread: 40 bps around 250.00.
    assert (other["symbol"], other["instrument_id"]) == ("MSFT", msft)
    quote = other["last_quote"]
    assert (quote["bid"], quote["ask"], quote["midpoint"]) == ("249.50", "250.50", "250")

    # A quote made old on purpose, for the worker's age guard.
    sim.config.market.quote_age_s = {"AAPL": 30.0}
    (aged,) = await _snapshot(client, "aapl")
    assert aged["last_quote"]["timestamp"] == api_time(sim.config.clock() - 30.0)

    status, body = await _call(client, "GET", "/v1/market-data/snapshot")
    assert (status, body["error"]["message"]) == (400, "At least one instrument_id is required")
    status, _ = await _call(
        client, "GET", "/v1/market-data/snapshot", params={"instrument_ids": "NOPE"}
    )
    assert status == 404
    assert sim.stats.by_route["snapshot"] == 4
    assert _validate_all(sim) == 4


async def test_without_a_book_fills_stay_at_the_seeded_price(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_position(ACCOUNT, "AAPL", "500", price="123.45")
    (snap,) = await _snapshot(client, "AAPL")
    assert snap["last_quote"]["midpoint"] == "123.45"  # a quote, though no book (depth 0)
    order = await _submit(client, symbol="AAPL", quantity="500")
    _advance(sim, 1.0)
    done = await _order(client, order["id"])
    assert (done["status"], done["average_fill_price"]) == ("FILLED", "123.45")
    (execution,) = await _executions(client, order["id"])
    assert (execution["price"], execution["quantity"]) == ("123.45", "500")
    (after,) = await _snapshot(client, "AAPL")
    assert after["last_trade"] == {"price": "123.45", "size": 500}
    assert after["cumulative_volume"] == 500
    _validate_all(sim)


# The book.


async def test_a_large_market_order_walks_a_thin_book_and_fills_worse(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book()
    sim.add_position(ACCOUNT, "AAPL", "250", price="100.00")
    status, body = await _call(client, "DELETE", f"/v1/accounts/{ACCOUNT}/positions/AAPL")
    assert status == 200, body
    order_id = body["data"][0]["id"]
    _advance(sim, 1.0)
    order = await _order(client, order_id)
    # 100 @ 99.95, 100 @ 99.90, 50 @ 99.85: (9995 + 9990 + 4992.50) / 250 = 99.91.
    assert (order["status"], order["filled_quantity"]) == ("FILLED", "250")
    assert order["average_fill_price"] == "99.91"
    executions = await _executions(client, order_id)
    assert sorted((e["price"], e["quantity"]) for e in executions) == [
        ("99.85", "50"), ("99.90", "100"), ("99.95", "100"),
    ]  # fmt: skip
    assert _paid(executions) == Decimal(order["average_fill_price"]) * 250
    assert sim.position_quantity(ACCOUNT, "AAPL") == 0
    # The book stays thin (no refill): the best bid is what is left of the third level.
    (snap,) = await _snapshot(client, "AAPL")
    assert (snap["last_quote"]["bid"], snap["last_quote"]["bid_size"]) == ("99.85", 50)
    assert snap["last_trade"] == {"price": "99.85", "size": 50}
    _validate_all(sim)


async def test_seeded_levels_give_the_average_to_the_cent(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = MarketConfig(depth=6, level_size=80, level_step_bps=7)  # jittered sizes
    sim.add_position(ACCOUNT, "NVDA", "-300", price="187.33")
    levels = sim.market.book(instrument_uuid("NVDA"), "NVDA").asks
    expected, left = Decimal(0), Decimal(300)
    for level in levels:  # the buy walks the asks, best first
        part = min(left, level.size)
        expected, left = expected + part * level.price, left - part
    assert left == 0
    assert len({lv.size for lv in levels}) > 1  # seeded sizes, not all alike
    order = await _submit(client, symbol="NVDA", side="BUY", quantity="300")
    _advance(sim, 1.0)
    done = await _order(client, order["id"])
    average = Decimal(done["average_fill_price"])
    assert average.quantize(Decimal("0.01")) == (expected / 300).quantize(Decimal("0.01"))
    assert abs(average - expected / 300) < Decimal("0.000001")  # shown to six places
    assert average > Decimal("187.33")  # a buy fills above the seeded price
    executions = await _executions(client, order["id"])
    assert _paid(executions) == expected
    assert abs(_paid(executions) - average * 300) < Decimal("0.0003")


async def test_a_book_run_dry_ends_the_rest_and_refills_later(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book(depth=2, refill_s=60.0)
    sim.add_position(ACCOUNT, "AAPL", "300", price="100.00")
    order = await _submit(client, symbol="AAPL", quantity="300")
    _advance(sim, 1.0)
    done = await _order(client, order["id"])
    assert (done["status"], done["filled_quantity"]) == ("CANCELED", "200")
    assert done["average_fill_price"] == "99.925"  # (9995 + 9990) / 200, not rounded away
    (snap,) = await _snapshot(client, "AAPL")
    quote = snap["last_quote"]  # one-sided: no bid left
    assert (quote["bid"], quote["bid_size"], quote["midpoint"]) == (None, None, None)
    assert quote["ask"] == "100.05"
    _advance(sim, 60.0)
    (snap,) = await _snapshot(client, "AAPL")
    assert (snap["last_quote"]["bid"], snap["last_quote"]["bid_size"]) == ("99.95", 100)
    _validate_all(sim)


# Limit orders and replace_order.


async def test_a_limit_rests_until_marketable_and_a_replace_fills_it(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book()
    sim.add_position(ACCOUNT, "AAPL", "100", price="100.00")
    order = await _submit(
        client, id="protected-1", symbol="AAPL", quantity="100", order_type="LIMIT",
        limit_price="100.10",
    )  # fmt: skip
    _advance(sim, 1.0)
    resting = await _order(client, order["id"])
    assert (resting["status"], resting["filled_quantity"]) == ("NEW", "0")
    assert resting["average_fill_price"] is None
    assert sim.position_quantity(ACCOUNT, "AAPL") == 100

    # Re-priced to the bid, by client id: marketable, it fills at once at the bid.
    status, body = await _call(
        client, "PATCH", f"{ORDERS}/protected-1", json={"limit_price": "99.95"}
    )
    assert status == 200, body
    replaced = body["data"]
    assert (replaced["id"], replaced["status"]) == (order["id"], "FILLED")
    assert (replaced["limit_price"], replaced["average_fill_price"]) == ("99.95", "99.95")
    assert sim.position_quantity(ACCOUNT, "AAPL") == 0
    (execution,) = await _executions(client, order["id"])
    assert (execution["price"], execution["quantity"]) == ("99.95", "100")

    # A final order cannot be replaced; the count is at the server.
    status, body = await _call(client, "PATCH", f"{ORDERS}/{order['id']}", json={"quantity": "5"})
    assert (status, body["error"]["message"]) == (
        400, f"Order {order['id']} is FILLED and cannot be replaced",
    )  # fmt: skip
    status, _ = await _call(client, "PATCH", f"{ORDERS}/protected-1", json={"quantity": "5"})
    assert status == 404  # a client id names an order only while it is open
    assert sim.stats.by_route["replace"] == 3
    _validate_all(sim)


async def test_a_limit_fills_partly_at_its_limit_and_the_rest_when_the_quote_moves(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book()
    sim.add_position(ACCOUNT, "AAPL", "250", price="100.00")
    order = await _submit(
        client, symbol="AAPL", quantity="250", order_type="LIMIT", limit_price="99.90"
    )
    _advance(sim, 1.0)
    partly = await _order(client, order["id"])
    # Bids down to its limit: 100 @ 99.95 and 100 @ 99.90; 99.85 is below it.
    assert (partly["status"], partly["filled_quantity"]) == ("PARTIALLY_FILLED", "200")
    assert (partly["leaves_quantity"], partly["average_fill_price"]) == ("50", "99.925")
    # The book moves up 0.10: the bid left (50 @ 99.85) is now 50 @ 99.95, above the limit.
    sim.market.move(instrument_uuid("AAPL"), "AAPL", "100.10")
    _advance(sim, 0.1)
    done = await _order(client, order["id"])
    assert (done["status"], done["filled_quantity"]) == ("FILLED", "250")
    executions = await _executions(client, order["id"])
    assert sorted((e["price"], e["quantity"]) for e in executions) == [
        ("99.90", "100"), ("99.95", "100"), ("99.95", "50"),
    ]  # fmt: skip
    assert _paid(executions) == Decimal("24982.50")  # 9995 + 9990 + 50 × 99.95
    assert done["average_fill_price"] == "99.93"  # 24982.50 / 250
    assert sim.position_quantity(ACCOUNT, "AAPL") == 0
    _validate_all(sim)


async def test_an_ioc_limit_takes_what_the_book_holds_to_its_limit_and_the_rest_ends(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book()
    sim.add_position(ACCOUNT, "AAPL", "250", price="100.00")
    order = await _submit(
        client, symbol="AAPL", quantity="250", order_type="LIMIT", limit_price="99.90",
        time_in_force="IMMEDIATE_OR_CANCEL",
    )  # fmt: skip
    _advance(sim, 1.0)
    done = await _order(client, order["id"])
    # Bids down to its limit: 100 @ 99.95 and 100 @ 99.90; the 50 left never rest.
    assert (done["status"], done["filled_quantity"]) == ("CANCELED", "200")
    assert done["time_in_force"] == "IMMEDIATE_OR_CANCEL"
    sim.market.move(instrument_uuid("AAPL"), "AAPL", "100.10")  # the bid moves past its limit
    _advance(sim, 0.1)
    assert (await _order(client, order["id"]))["filled_quantity"] == "200"  # it does not rest
    assert sim.position_quantity(ACCOUNT, "AAPL") == 50
    executions = await _executions(client, order["id"])
    assert sorted((e["price"], e["quantity"]) for e in executions) == [
        ("99.90", "100"), ("99.95", "100"),
    ]  # fmt: skip
    _validate_all(sim)


async def test_replace_checks_what_it_is_asked(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book()
    sim.config.fill_delay_s = 3600  # the market order stays working
    sim.add_position(ACCOUNT, "AAPL", "100", price="100.00")
    market = await _submit(client, symbol="AAPL", quantity="10")
    limit = await _submit(
        client, symbol="AAPL", quantity="10", order_type="LIMIT", limit_price="101.00"
    )
    path = f"{ORDERS}/{limit['id']}"
    for body, message in (
        ({}, "At least one field must be provided"),
        ({"limit_price": None}, "At least one field must be provided"),
        ({"stop_price": "90.00"},
         "the simulator replaces only limit_price and quantity, not stop_price"),
        ({"quantity": "0"}, "Order quantity must be greater than zero"),
    ):  # fmt: skip
        status, reply = await _call(client, "PATCH", path, json=body)
        assert (status, reply["error"]["message"]) == (400, message)
    status, reply = await _call(
        client, "PATCH", f"{ORDERS}/{market['id']}", json={"limit_price": "99.00"}
    )
    assert (status, reply["error"]["message"]) == (
        400, "limit_price cannot be set on a MARKET order",
    )  # fmt: skip
    status, reply = await _call(client, "PATCH", path, json={"quantity": "20"})
    assert status == 200
    assert (reply["data"]["quantity"], reply["data"]["status"]) == ("20", "PENDING_REPLACE")
    status, _ = await _call(client, "PATCH", f"{ORDERS}/no-such-order", json={"quantity": "1"})
    assert status == 404
    _validate_all(sim)


# Halts.


async def test_a_halted_instrument_has_no_quote_and_its_orders_wait(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book(halted={"AAPL"})
    sim.add_position(ACCOUNT, "AAPL", "100", price="100.00")
    (snap,) = await _snapshot(client, "AAPL")
    assert snap["last_quote"] is None
    assert snap["last_trade"]["price"] == "100.00"
    order = await _submit(client, symbol="AAPL", quantity="100")
    _advance(sim, 5.0)
    waiting = await _order(client, order["id"])
    assert (waiting["status"], waiting["filled_quantity"]) == ("NEW", "0")
    assert sim.position_quantity(ACCOUNT, "AAPL") == 100
    sim.market.resume("AAPL")  # the halt ends: it fills against the book
    done = await _order(client, order["id"])
    assert (done["status"], done["average_fill_price"]) == ("FILLED", "99.95")
    _validate_all(sim)


async def test_a_halted_instrument_can_reject_market_orders(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = MarketConfig(halted={"aapl"}, halted_orders="reject")  # no book either
    sim.add_position(ACCOUNT, "AAPL", "100", price="100.00")
    status, body = await _call(client, "DELETE", f"/v1/accounts/{ACCOUNT}/positions/AAPL")
    assert status == 200
    _advance(sim, 1.0)
    order = await _order(client, body["data"][0]["id"])
    assert (order["status"], order["filled_quantity"]) == ("REJECTED", "0")
    assert sim.position_quantity(ACCOUNT, "AAPL") == 100
    (snap,) = await _snapshot(client, "AAPL")
    assert snap["last_quote"] is None
    _validate_all(sim)


async def test_drift_moves_the_quote_the_same_way_for_the_same_seed(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = _thin_book(drift_bps=10.0)
    sim.add_position(ACCOUNT, "AAPL", "100", price="100.00")
    (first,) = await _snapshot(client, "AAPL")
    _advance(sim, 20.0)
    (later,) = await _snapshot(client, "AAPL")
    assert first["last_quote"]["midpoint"] == "100"
    assert later["last_quote"]["midpoint"] != "100"
    twin = Simulator(SimConfig(clock=SimClock(start=0.0), market=_thin_book(drift_bps=10.0)))
    twin.add_position(ACCOUNT, "AAPL", "100", price="100.00")
    book = twin.market.book(instrument_uuid("AAPL"), "AAPL")
    twin_clock = twin.config.clock
    assert isinstance(twin_clock, SimClock)
    twin_clock.advance(20.0)
    book = twin.market.book(instrument_uuid("AAPL"), "AAPL")
    assert str(book.midpoint) == later["last_quote"]["midpoint"]
