"""The simulator as a rehearsal partner: the reads and order entry the official SDK offers,
in the spec's shapes, and a server that shrugs off a client going away."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from tests.spec_errors import validate_error_reply
from tests.spec_validation import validate_request, validate_response
from worker.simulator import Faults, RecordedRequest, Simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
        yield session


async def _call(
    session: aiohttp.ClientSession, method: str, path: str, **kw: Any
) -> tuple[int, dict[str, Any]]:
    async with session.request(method, path, **kw) as resp:
        return resp.status, await resp.json()


def _validate_all(sim: Simulator) -> int:
    """Every recorded exchange against the spec: answered requests and their replies, and
    every error envelope (some requests are wrong on purpose)."""
    for recorded in sim.requests:
        if recorded.response_status == 200:
            validate_request(recorded)
            validate_response(recorded)
        else:
            validate_error_reply(recorded)
    return len(sim.requests)


# Accounts, balances, executions.


async def test_accounts_are_listed_with_filters_and_pages(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    for account_id in (19816, 19817, 20001):
        sim.add_account(account_id)
    sim.config.forbidden_accounts = {20001}
    status, body = await _call(client, "GET", "/v1/accounts")
    assert status == 200
    assert [a["id"] for a in body["data"]] == [19816, 19817]  # the forbidden one is not listed
    status, body = await _call(client, "GET", "/v1/accounts", params={"account_id": "1981"})
    assert [a["id"] for a in body["data"]] == [19816, 19817]
    _, body = await _call(client, "GET", "/v1/accounts", params={"account_name": "ACCOUNT 19817"})
    assert [a["id"] for a in body["data"]] == [19817]
    _, first = await _call(client, "GET", "/v1/accounts", params={"page_size": "1"})
    token = first["metadata"]["next_page_token"]
    _, second = await _call(client, "GET", "/v1/accounts", params={"page_token": token})
    assert [a["id"] for a in first["data"] + second["data"]] == [19816, 19817]
    assert second["metadata"]["next_page_token"] is None
    status, body = await _call(client, "GET", "/v1/accounts/19817")
    assert (status, body["data"]["id"]) == (200, 19817)
    assert _validate_all(sim) == 6


async def test_balances_follow_the_fills(sim: Simulator, client: aiohttp.ClientSession) -> None:
    sim.add_position(19816, "GOOG", "25", price="100.00")
    sim.add_position(19816, "TSLA", "-10", price="200.00")
    sim.config.fill_delay_s = 3600
    _, before = await _call(client, "GET", "/v1/accounts/19816/balances")
    await _call(client, "DELETE", "/v1/accounts/19816/positions/GOOG")
    sim.fill_all()
    _, after = await _call(client, "GET", "/v1/accounts/19816/balances")
    b, a = before["data"], after["data"]
    assert (b["long_market_value"], b["short_market_value"]) == ("2500.00", "2000.00")
    assert (a["long_market_value"], a["short_market_value"]) == ("0.00", "2000.00")
    assert Decimal(a["settled_cash"]) - Decimal(b["settled_cash"]) == 2500  # the sale's proceeds
    assert a["equity"] == b["equity"]  # sold at the position's own price
    status, refused = await _call(
        client, "GET", "/v1/accounts/19816/balances", params={"top_margin_contributors_limit": "0"}
    )
    assert (status, refused["error"]["code"]) == (400, 400)
    status, _ = await _call(client, "GET", "/v1/accounts/424242/balances")
    assert status == 404
    _validate_all(sim)


async def test_executions_are_newest_first_with_filters_and_pages(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    goog = sim.add_position(19816, "GOOG", "25", price="101.50")
    sim.add_position(19816, "TSLA", "-10", price="200.00")
    sim.add_position(
        19816, "AAPL270115C00200000", "2", instrument_type="OPTION", price="3.10",
        underlying="AAPL",
    )  # fmt: skip
    sim.config.fill_delay_s = 3600
    orders = {}
    for name in ("GOOG", "TSLA", "AAPL270115C00200000"):
        _, body = await _call(client, "DELETE", f"/v1/accounts/19816/positions/{name}")
        orders[name] = body["data"][0]["id"]
        sim.fill_all()  # one at a time: three distinct transaction times
    _, body = await _call(client, "GET", "/v1/accounts/19816/executions")
    executions = body["data"]
    assert [e["order_id"] for e in executions] == [
        orders["AAPL270115C00200000"], orders["TSLA"], orders["GOOG"]
    ]  # fmt: skip
    newest_first = [e["transaction_time"] for e in executions]
    assert newest_first == sorted(newest_first, reverse=True)
    goog_fill = executions[2]
    assert (goog_fill["instrument_id"], goog_fill["side"]) == (goog, "SELL")
    assert (goog_fill["quantity"], goog_fill["price"]) == ("25", "101.50")
    [order] = [o for o in sim.orders_of(19816) if o["id"] == orders["GOOG"]]
    assert order["average_fill_price"] == "101.50"

    async def listed(**params: str) -> list[str]:
        status, body = await _call(client, "GET", "/v1/accounts/19816/executions", params=params)
        assert status == 200, body
        return [e["order_id"] for e in body["data"]]

    assert await listed(instrument_ids="TSLA") == [orders["TSLA"]]
    assert await listed(instrument_ids=goog.upper()) == [orders["GOOG"]]
    assert await listed(order_ids=f"{orders['GOOG']},{orders['TSLA']}") == [
        orders["TSLA"], orders["GOOG"]
    ]  # fmt: skip
    assert await listed(underlying_instrument_ids="AAPL") == [orders["AAPL270115C00200000"]]
    middle = executions[1]["transaction_time"]
    assert await listed(**{"from": middle}) == [orders["AAPL270115C00200000"], orders["TSLA"]]
    assert await listed(to=middle) == [orders["TSLA"], orders["GOOG"]]
    first = await listed(page_size="2")
    _, page = await _call(client, "GET", "/v1/accounts/19816/executions", params={"page_size": "2"})
    token = page["metadata"]["next_page_token"]
    rest = await listed(page_token=token)
    assert first + rest == [e["order_id"] for e in executions]
    status, _ = await _call(client, "GET", "/v1/accounts/19816/executions", params={"from": "x"})
    assert status == 400
    _validate_all(sim)


async def test_an_unknown_route_is_404_and_a_wrong_method_405_inside_the_envelope(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_position(19816, "GOOG", "25")
    for method, path, status in (
        ("GET", "/v1/no-such-thing", 404),
        ("GET", "/v2/accounts/19816", 404),
        ("POST", "/v1/clock", 405),
        ("PUT", "/v1/accounts/19816/positions", 405),
    ):
        async with client.request(method, path) as resp:
            raw = await resp.read()
            assert resp.status == status, raw
            assert resp.content_type == "application/json"
            if status == 405:
                assert "GET" in resp.headers["Allow"]
        validate_error_reply(RecordedRequest(method, path, "", {}, b"", {}, status, raw))
        assert method in json.loads(raw)["error"]["message"]


# One order.


async def test_an_order_is_read_by_id_always_and_by_client_id_while_open(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_position(19816, "GOOG", "25")
    sim.config.fill_delay_s = 3600
    order = {"id": "rehearsal-1", "symbol": "GOOG", "side": "SELL", "quantity": "5",
             "order_type": "MARKET", "time_in_force": "DAY"}  # fmt: skip
    status, body = await _call(client, "POST", "/v1/accounts/19816/orders", json=[order])
    assert status == 200, body
    order_id = body["data"][0]["id"]
    for name in (order_id, "rehearsal-1"):
        status, body = await _call(client, "GET", f"/v1/accounts/19816/orders/{name}")
        assert status == 200, body
        assert (body["data"]["id"], body["data"]["client_order_id"]) == (order_id, "rehearsal-1")
        assert body["data"]["status"] == "PENDING_NEW"
    sim.fill_all()
    status, body = await _call(client, "GET", f"/v1/accounts/19816/orders/{order_id}")
    assert (status, body["data"]["status"]) == (200, "FILLED")
    assert body["data"]["average_fill_price"] == "100.00"
    status, body = await _call(client, "GET", "/v1/accounts/19816/orders/rehearsal-1")
    assert (status, body["error"]["code"]) == (404, 404)  # closed: by its id only
    status, _ = await _call(client, "GET", "/v1/accounts/19816/orders/no-such-order")
    assert status == 404
    _validate_all(sim)


# Order entry opens positions.


async def test_order_entry_opens_a_position_in_any_instrument_the_simulator_knows(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_account(19816)
    sim.add_position(19817, "AAPL270115C00200000", "3", instrument_type="OPTION", price="4.20")
    sim.config.known_symbols = {"ZZZT"}
    sim.config.fill_delay_s = 3600

    def order(name: str, side: str, **kw: str) -> dict[str, str]:
        return {"symbol": name, "side": side, "quantity": "10", "order_type": "MARKET",
                "time_in_force": "DAY", **kw}  # fmt: skip

    batch = [
        order("NVDA", "BUY"),  # a listed ticker
        order("ZZZT", "SELL_SHORT"),  # a known symbol no account holds
        order("AAPL270115C00200000", "BUY"),  # held by another account
    ]
    status, body = await _call(client, "POST", "/v1/accounts/19816/orders", json=batch)
    assert status == 200, body
    sim.fill_all()
    assert sim.position_quantity(19816, "NVDA") == 10
    assert sim.position_quantity(19816, "ZZZT") == -10
    assert sim.position_quantity(19816, "AAPL270115C00200000") == 10
    assert sim.flipped_positions() == []  # opened from flat is not a flip
    _, listed = await _call(client, "GET", "/v1/accounts/19816/positions")
    by_symbol = {p["symbol"]: p for p in listed["data"]}
    assert by_symbol["AAPL270115C00200000"]["instrument_type"] == "OPTION"
    assert by_symbol["AAPL270115C00200000"]["avg_price"] == "4.20"
    _, fills = await _call(client, "GET", "/v1/accounts/19816/executions")
    prices = {e["symbol"]: e["price"] for e in fills["data"]}
    assert all(Decimal(p) > 0 for p in prices.values())
    assert prices["AAPL270115C00200000"] == "4.20"
    # The position opened can be closed like a seeded one.
    status, body = await _call(client, "DELETE", "/v1/accounts/19816/positions/NVDA")
    assert (status, body["data"][0]["side"]) == (200, "SELL")
    unknown = order("NOPE1", "BUY")
    by_unknown_id = {**order("X", "BUY"), "symbol": None,
                     "instrument_id": "0b7a5c1e-0000-4000-8000-000000000000"}  # fmt: skip
    unnamed = {k: v for k, v in order("X", "BUY").items() if k != "symbol"}
    for refused in (unknown, by_unknown_id, unnamed):
        status, body = await _call(client, "POST", "/v1/accounts/19816/orders", json=[refused])
        assert (status, body["error"]["code"]) == (400, 400), body
    assert sim.position_quantity(19816, "NOPE1") == 0
    _validate_all(sim)


async def test_an_opened_position_keeps_a_seeded_price(sim: Simulator) -> None:
    other = Simulator(sim.config)
    prices = []
    for simulator in (sim, other):
        account = simulator.book.add_account(19816)
        iid = simulator.book.tradable(account, "KO")
        assert iid is not None
        prices.append(account.positions[iid].price)
    assert prices[0] == prices[1]
    assert prices[0] > 0


# Times in force.


async def test_the_times_in_force_the_simulator_models_are_accepted(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_account(19816)
    sim.config.fill_delay_s = 3600
    sim.config.regular_close_at = datetime.now(UTC) + timedelta(hours=1)
    accepted = [
        ("MARKET", "DAY"), ("MARKET", "GOOD_TILL_CANCEL"), ("MARKET", "IMMEDIATE_OR_CANCEL"),
        ("MARKET", "FILL_OR_KILL"), ("MARKET", "AT_THE_CLOSE"), ("LIMIT", "DAY"),
        ("LIMIT", "GOOD_TILL_CANCEL"), ("LIMIT", "IMMEDIATE_OR_CANCEL"), ("LIMIT", "AT_THE_CLOSE"),
    ]  # fmt: skip
    batch = [
        {"symbol": "KO", "side": "BUY", "quantity": "1", "order_type": order_type,
         "time_in_force": tif, **({"limit_price": "1.00"} if order_type == "LIMIT" else {})}
        for order_type, tif in accepted
    ]  # fmt: skip
    status, body = await _call(client, "POST", "/v1/accounts/19816/orders", json=batch)
    assert status == 200, body
    assert [(o["order_type"], o["time_in_force"]) for o in body["data"]] == accepted
    sim.fill_all()
    # The five market orders filled; the IOC limit at 1.00 could not, and ended.
    assert sim.position_quantity(19816, "KO") == 5
    for order_type, tif in (
        ("MARKET", "GOOD_TILL_DATE"), ("MARKET", "AT_THE_OPENING"),
        ("LIMIT", "FILL_OR_KILL"), ("STOP", "DAY"),
    ):  # fmt: skip
        refused = {"symbol": "KO", "side": "BUY", "quantity": "1", "order_type": order_type,
                   "time_in_force": tif, "limit_price": "1.00", "stop_price": "2.00",
                   "expires_at": "2099-01-01T00:00:00Z"}  # fmt: skip
        status, body = await _call(client, "POST", "/v1/accounts/19816/orders", json=[refused])
        assert status == 400, body
        message = body["error"]["message"]
        assert f"{order_type} orders with time_in_force {tif}" in message
        assert "MARKET with DAY, GOOD_TILL_CANCEL" in message  # says what it does take
    _validate_all(sim)


async def test_a_fill_or_kill_fills_whole_or_not_at_all(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_position(19816, "KO", "100")
    sim.config.fill_delay_s = 3600
    sim.config.p_partial_fill = 1.0  # the market can fill only part of any order
    orders = [
        {"symbol": "KO", "side": "SELL", "quantity": "10", "order_type": "MARKET",
         "time_in_force": tif}
        for tif in ("FILL_OR_KILL", "IMMEDIATE_OR_CANCEL")
    ]  # fmt: skip
    _, body = await _call(client, "POST", "/v1/accounts/19816/orders", json=orders)
    fok, ioc = (o["id"] for o in body["data"])
    sim.fill_all()
    _, fok_now = await _call(client, "GET", f"/v1/accounts/19816/orders/{fok}")
    _, ioc_now = await _call(client, "GET", f"/v1/accounts/19816/orders/{ioc}")
    assert (fok_now["data"]["status"], fok_now["data"]["filled_quantity"]) == ("CANCELED", "0")
    assert (ioc_now["data"]["status"], ioc_now["data"]["filled_quantity"]) == ("CANCELED", "5")
    assert sim.position_quantity(19816, "KO") == 95
    _, fills = await _call(client, "GET", "/v1/accounts/19816/executions")
    assert [(e["order_id"], e["quantity"]) for e in fills["data"]] == [(ioc, "5")]
    _validate_all(sim)


# A client that goes away.


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _killed_client(sim: Simulator, raw: bytes, *, reset: bool, read: int = 0) -> None:
    """Send `raw`, read `read` bytes of the reply, then go away: RST when `reset`, else FIN."""
    port = int(sim.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(raw)
    await writer.drain()
    if read:
        await reader.readexactly(read)
    if reset:  # SO_LINGER 0: close() sends RST, as a killed process's socket may
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def test_a_client_that_goes_away_leaves_no_traceback(
    sim: Simulator, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.seed_book(1, 3000)  # a reply far larger than the client's receive buffer
    sim.add_position(19816, "GOOG", "25")
    key = sim.config.api_key
    half_sent = (
        f"POST /v1/accounts/19816/orders HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {key}"
        '\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n[{"side": "SE'
    ).encode()
    listing = (
        f"GET /v1/accounts/10001/positions HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {key}"
        "\r\n\r\n"
    ).encode()
    hanging = listing.replace(b"/10001/positions", b"/19816/positions")
    sim.config.faults = {"positions": Faults(p_hang_after=0.0)}

    def went_away() -> int:
        return sum("client went away" in r.getMessage() for r in caplog.records)

    await _killed_client(sim, half_sent, reset=True)  # mid-body, reset
    await _until(lambda: went_away() == 1, "the quiet line")
    await _killed_client(sim, half_sent, reset=False)  # mid-body, closed
    await _until(lambda: went_away() == 2, "the quiet line")
    await _killed_client(sim, b"GET /v1/accounts/19816/posi", reset=True)  # mid-request-line
    await _killed_client(sim, listing, reset=True, read=100)  # mid-reply
    sim.config.faults = {"positions": Faults(p_hang_after=1.0, hang_s=0.3)}
    await _killed_client(sim, hanging, reset=True)  # while the server holds the reply
    await _until(lambda: sim.stats.by_route["positions"] == 2, "both listings")
    await _until(lambda: sim.stats.in_flight == 0, "nothing in flight")
    sim.config.faults = {}
    status, _ = await _call(client, "GET", "/v1/accounts/19816/positions")
    assert status == 200  # still serving
    assert sim.stats.by_route["submit"] == 0  # a half-sent order is neither counted nor applied
    assert sim.orders_of(19816) == []
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]
    assert "Traceback" not in caplog.text
    assert went_away() <= 4  # at most one quiet line per client that went away


# A rehearsal through the official SDK.


async def test_a_rehearsal_through_the_official_sdk(sim: Simulator) -> None:
    sdk = pytest.importorskip(
        "clearstreet", reason="the official SDK (`clearstreet`, in the dev extra) is not installed"
    )
    sim.add_position(19816, "GOOG", "25", price="150.00")
    sim.add_account(19817)
    sim.config.fill_delay_s = 3600
    async with sdk.AsyncClearStreet(
        api_key=sim.config.api_key, base_url=sim.base_url, max_retries=0
    ) as cs:
        accounts = await cs.v1.accounts.get_accounts()
        assert [a.id for a in accounts.data] == [19816, 19817]
        assert (await cs.v1.accounts.get_account_by_id(19816)).data.id == 19816
        balances = (await cs.v1.accounts.get_account_balances(19816)).data
        assert balances.long_market_value == "3750.00"

        # Open a position in an instrument the account does not hold, good till cancelled.
        new = {"id": "rehearsal-nvda", "symbol": "NVDA", "side": "BUY", "quantity": "10",
               "order_type": "MARKET", "time_in_force": "GOOD_TILL_CANCEL"}  # fmt: skip
        [submitted] = (await cs.v1.orders.submit_orders(19816, orders=[new])).data
        by_client_id = await cs.v1.orders.get_order_by_id("rehearsal-nvda", account_id=19816)
        assert by_client_id.data.id == submitted.id
        assert by_client_id.data.time_in_force == "GOOD_TILL_CANCEL"
        sim.fill_all()
        filled = (await cs.v1.orders.get_order_by_id(submitted.id, account_id=19816)).data
        assert (filled.status, filled.filled_quantity) == ("FILLED", "10")
        assert filled.average_fill_price is not None
        [fill] = (await cs.v1.orders.get_executions(19816, order_ids=[submitted.id])).data
        assert (fill.side, fill.quantity, fill.price) == ("BUY", "10", filled.average_fill_price)
        positions = {
            p.symbol: p.quantity for p in (await cs.v1.positions.get_positions(19816)).data
        }
        assert positions == {"GOOG": "25", "NVDA": "10"}

        # Close both, as a desk would, and see the account flat.
        for symbol in ("GOOG", "NVDA"):
            await cs.v1.positions.close_position(symbol, account_id=19816, cancel_orders=True)
        sim.fill_all()
        assert (await cs.v1.positions.get_positions(19816)).data == []
        executions = (await cs.v1.orders.get_executions(19816)).data
        assert [e.side for e in executions] == ["SELL", "SELL", "BUY"]  # newest first
        orders = (await cs.v1.orders.get_orders(19816)).data
        assert len(orders) == 3
        with pytest.raises(sdk.NotFoundError) as missing:
            await cs.v1.orders.get_order_by_id("no-such-order", account_id=19816)
        assert missing.value.body["error"]["code"] == 404  # the envelope, as the API sends it
    assert sim.duplicate_closes() == []
    assert _validate_all(sim) >= 14
