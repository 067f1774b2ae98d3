"""The simulator's answers to a batch of orders (POST .../orders), one behaviour per setting,
driven over loopback HTTP with a plain ClientSession and counted at the server: what was booked,
what each reply says, and every reply in the spec's shapes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from tests.spec_errors import validate_error_reply
from tests.spec_validation import validate_request, validate_response
from worker.simulator import Faults, SimConfig, Simulator, serve

ACCOUNT = 19816
ORDERS = f"/v1/accounts/{ACCOUNT}/orders"
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "SPY", "QQQ", "JPM")


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(fill_delay_s=3600)  # nothing fills unless a test says so


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    for symbol in SYMBOLS:
        sim.add_position(ACCOUNT, symbol, "100")
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
        yield session


def _order(symbol: str, client_id: str | None, quantity: str = "10") -> dict[str, Any]:
    order = {"symbol": symbol, "side": "SELL", "quantity": quantity, "order_type": "MARKET",
             "time_in_force": "DAY"}  # fmt: skip
    if client_id is not None:
        order["id"] = client_id
    return order


def _batch(count: int, prefix: str = "c") -> list[dict[str, Any]]:
    return [_order(SYMBOLS[i % len(SYMBOLS)], f"{prefix}-{i}") for i in range(count)]


async def _post(
    client: aiohttp.ClientSession, batch: list[dict[str, Any]], **kw: Any
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    async with client.post(ORDERS, json=batch, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


def _booked(sim: Simulator) -> list[str]:
    """The client ids of the orders the server holds for the account, in booking order."""
    return [o["client_order_id"] for o in sim.orders_of(ACCOUNT)]


def _validate_all(sim: Simulator) -> int:
    """Every answered exchange against the spec (a dropped connection or a proxy's HTML page
    is not the API's answer and has no shape to check)."""
    checked = 0
    for recorded in sim.requests:
        if recorded.response_content_type != "application/json":
            continue
        if recorded.response_status == 200:
            validate_request(recorded)
            validate_response(recorded)
        else:
            validate_error_reply(recorded)
        checked += 1
    return checked


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# Today's behaviour by default: any size, checked whole, booked whole; counted at the server.


async def test_by_default_a_large_batch_is_booked_whole_and_its_size_counted(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    batch = _batch(250)
    status, body, _ = await _post(client, batch)
    assert status == 200, body
    assert [o["client_order_id"] for o in body["data"]] == [o["id"] for o in batch]
    assert _booked(sim) == [o["id"] for o in batch]
    await _post(client, _batch(3, prefix="d"))
    assert sim.stats.submit_batch_sizes == [250, 3]
    assert sim.stats.batch_size_counts() == {250: 1, 3: 1}
    assert sim.stats.by_route["submit"] == 2  # requests per route, counted at arrival
    assert sim.stats.orders_dropped == []
    assert _validate_all(sim) == 2


# A batch larger than the server takes.


@pytest.mark.parametrize("refusal", [413, 400])
async def test_a_batch_over_max_batch_is_refused_whole_with_the_limit_named(
    sim: Simulator, client: aiohttp.ClientSession, refusal: int
) -> None:
    sim.config.max_batch = 5
    sim.config.max_batch_status = refusal
    status, body, _ = await _post(client, _batch(6))
    assert (status, body["error"]["code"]) == (refusal, refusal)
    assert "at most 5" in body["error"]["message"]
    assert body["error"]["details"] == [{"type": "BATCH_TOO_LARGE", "max_orders": 5, "orders": 6}]
    assert _booked(sim) == []  # nothing booked
    status, body, _ = await _post(client, _batch(5))
    assert (status, len(body["data"])) == (200, 5)
    assert _booked(sim) == [f"c-{i}" for i in range(5)]
    assert sim.stats.submit_batch_sizes == [6, 5]
    assert _validate_all(sim) == 2


# One order of a batch refused.


async def test_an_atomic_batch_with_one_refused_order_books_nothing_and_names_it(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.refuse_instruments = {"tsla"}  # by symbol, any case
    batch = [_order("AAPL", "a-0"), _order("TSLA", "a-1"), _order("MSFT", "a-2")]
    status, body, _ = await _post(client, batch)
    assert (status, body["error"]["code"]) == (422, 422)
    assert "TSLA" in body["error"]["message"]
    assert body["error"]["details"] == [
        {"type": "BATCH_ORDER", "index": 1, "client_order_id": "a-1"}
    ]
    assert _booked(sim) == []
    # By instrument id too.
    sim.config.refuse_instruments = {sim.instrument_id(ACCOUNT, "MSFT")}
    status, body, _ = await _post(client, batch)
    assert status == 422
    assert body["error"]["details"][-1] == {
        "type": "BATCH_ORDER",
        "index": 2,
        "client_order_id": "a-2",
    }
    # A risk refusal and a bad value name their order the same way, after the spec's details.
    sim.config.refuse_instruments = set()
    sim.config.buying_power = Decimal("500")
    buy = {**_order("MSFT", "a-2"), "side": "BUY"}
    status, body, _ = await _post(client, [_order("AAPL", "a-0"), buy])
    assert status == 400
    assert [d.get("type") or d.get("reason") for d in body["error"]["details"]] == [
        "BUYING_POWER", "BUYING_POWER", "BATCH_ORDER"
    ]  # fmt: skip
    assert body["error"]["details"][-1]["index"] == 1
    sim.config.buying_power = None
    status, body, _ = await _post(client, [_order("AAPL", "a-0"), _order("TSLA", "a-1", "0")])
    assert status == 400
    assert body["error"]["details"] == [
        {"type": "BATCH_ORDER", "index": 1, "client_order_id": "a-1"}
    ]
    assert _booked(sim) == []
    # The rest, sent without the refused order, is booked.
    status, body, _ = await _post(client, [batch[0], batch[2]])
    assert status == 200
    assert _booked(sim) == ["a-0", "a-2"]
    assert _validate_all(sim) == 5


async def test_a_non_atomic_batch_books_the_rest_and_the_refused_order_rejected(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.batch_atomic = False
    sim.config.refuse_instruments = {"TSLA"}
    batch = [_order("AAPL", "n-0"), _order("TSLA", "n-1"), _order("MSFT", "n-2")]
    status, body, _ = await _post(client, batch)
    assert status == 200, body
    replied = body["data"]
    assert [(o["client_order_id"], o["status"]) for o in replied] == [
        ("n-0", "PENDING_NEW"), ("n-1", "REJECTED"), ("n-2", "PENDING_NEW")
    ]  # fmt: skip
    assert "TSLA" in replied[1]["details"][0]  # the engine's message, in the order itself
    assert replied[1]["leaves_quantity"] == "0"
    sim.fill_all()
    assert sim.position_quantity(ACCOUNT, "AAPL") == 90
    assert sim.position_quantity(ACCOUNT, "TSLA") == 100  # the rejected order never fills
    assert sim.closing_orders(ACCOUNT, "TSLA") == []
    # The rejected order exists: its client id is taken, and it can be read.
    status, _, _ = await _post(client, [batch[1]])
    assert status == 409
    async with client.get(f"{ORDERS}/{replied[1]['id']}") as resp:
        assert (await resp.json())["data"]["status"] == "REJECTED"
    # A refusal of the whole request (a bad value) still refuses the whole batch.
    status, body, _ = await _post(client, [_order("SPY", "n-3"), _order("QQQ", "n-4", "0")])
    assert status == 400
    assert _booked(sim) == ["n-0", "n-1", "n-2"]
    assert _validate_all(sim) == 4


# Partial acceptance: fewer orders in the reply than were sent, no reason given.


async def test_every_nth_order_is_left_out_and_a_resend_of_it_is_booked(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.drop_every_nth = 3
    batch = _batch(7)
    status, body, _ = await _post(client, batch)
    assert status == 200
    kept = ["c-0", "c-1", "c-3", "c-4", "c-6"]
    assert [o["client_order_id"] for o in body["data"]] == kept
    assert _booked(sim) == kept  # the left-out ones were not created
    assert sim.stats.orders_dropped == ["c-2", "c-5"]
    async with client.get(f"{ORDERS}/c-2") as resp:
        assert resp.status == 404
    status, body, _ = await _post(client, [_order("JPM", "c-7"), batch[2], batch[5]])
    assert status == 200  # a re-send under the same ids: booked, although c-5 is third again
    assert [o["client_order_id"] for o in body["data"]] == ["c-7", "c-2", "c-5"]
    assert sorted(_booked(sim)) == sorted([*(o["id"] for o in batch), "c-7"])
    assert _validate_all(sim) == 3


async def test_with_drop_again_a_left_out_order_is_left_out_on_every_resend(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.drop_every_nth = 2
    sim.config.drop_again = True
    status, body, _ = await _post(client, _batch(4))
    assert [o["client_order_id"] for o in body["data"]] == ["c-0", "c-2"]
    for _ in range(3):
        status, body, _ = await _post(client, [_order("MSFT", "c-1"), _order("AMZN", "c-3")])
        assert (status, body["data"]) == (200, [])  # accepted, and nothing created
    status, body, _ = await _post(client, [_order("JPM", "new"), _order("MSFT", "c-1")])
    assert [o["client_order_id"] for o in body["data"]] == ["new"]
    assert _booked(sim) == ["c-0", "c-2", "new"]
    assert sim.stats.orders_dropped == ["c-1", "c-3"] * 4 + ["c-1"]
    assert _validate_all(sim) == 5


async def test_random_drops_from_a_batch_are_seeded(sim: Simulator) -> None:
    left_out = []
    for _ in range(2):
        other = Simulator(SimConfig(seed=11, fill_delay_s=3600, p_drop_from_batch=0.3))
        for symbol in SYMBOLS:
            other.add_position(ACCOUNT, symbol, "100")
        runner, _ = await serve(other)
        try:
            headers = {"Authorization": f"Bearer {other.config.api_key}"}
            async with aiohttp.ClientSession(other.base_url, headers=headers) as session:
                status, body, _ = await _post(session, _batch(40))
        finally:
            await runner.cleanup()
        assert status == 200
        assert len(body["data"]) == len(_booked(other)) == 40 - len(other.stats.orders_dropped)
        left_out.append(other.stats.orders_dropped)
    assert left_out[0] == left_out[1]  # the same seed leaves the same orders out
    assert left_out[0] == [  # seed 11 leaves out these 15 of 40 (p 0.3)
        *("c-1", "c-2", "c-4", "c-8", "c-9", "c-10", "c-21", "c-23"),
        *("c-25", "c-27", "c-31", "c-34", "c-36", "c-37", "c-39"),
    ]


# 409: some client id exists already.


async def test_a_batch_with_existing_client_ids_is_refused_whole_naming_every_one(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    await _post(client, _batch(2))
    batch = [_order("AAPL", "c-0"), _order("NVDA", "x-1"), _order("MSFT", "c-1"),
             _order("META", "x-3"), _order("SPY", "x-1")]  # fmt: skip
    status, body, _ = await _post(client, batch)
    assert (status, body["error"]["code"]) == (409, 409)
    assert "'c-0', 'c-1', 'x-1'" in body["error"]["message"]
    assert [(d["index"], d["client_order_id"]) for d in body["error"]["details"]] == [
        (0, "c-0"), (2, "c-1"), (4, "x-1")
    ]  # fmt: skip
    assert _booked(sim) == ["c-0", "c-1"]  # nothing of the refused batch booked
    status, body, _ = await _post(client, [_order("AAPL", "c-0")])
    assert body["error"]["message"] == f"Duplicate order id 'c-0' for account {ACCOUNT}"
    assert _validate_all(sim) == 3


# An unknown outcome: the route's faults act on the whole batch, all of it applied or none.


@pytest.mark.parametrize(
    "fault",
    ["p_drop_before", "p_drop_after", "p_hang_after", "p_500_after", "p_502_html",
     "p_apply_late"],
)  # fmt: skip
async def test_an_unknown_outcome_applies_all_of_a_batch_or_none_and_a_resend_never_doubles(
    sim: Simulator, client: aiohttp.ClientSession, fault: str
) -> None:
    sim.config.faults = {"submit": Faults(**{fault: 1.0}, hang_s=0.3, apply_late_s=0.3)}
    batch = _batch(6)
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):  # an unknown outcome
        await _post(client, batch, timeout=aiohttp.ClientTimeout(total=0.1))
    await _until(lambda: sim.stats.in_flight == 0, "the server to finish the request")
    booked = _booked(sim)
    applied = fault != "p_drop_before"
    if fault != "p_502_html":  # a proxy's 502 applies it half of the time, by the seed
        assert booked == ([o["id"] for o in batch] if applied else [])
    assert booked in ([], [o["id"] for o in batch])  # all or nothing
    sim.config.faults = {}
    status, body, _ = await _post(client, batch)  # the same batch, the same ids
    if booked:
        assert status == 409
        assert [d["client_order_id"] for d in body["error"]["details"]] == [o["id"] for o in batch]
    else:
        assert status == 200
    assert sorted(_booked(sim)) == sorted(o["id"] for o in batch)  # each order exactly once
    # Counted when order entry reads the batch: not when dropped or refused before that.
    assert sim.stats.submit_batch_sizes == [6] * (1 + bool(booked))
    _validate_all(sim)


# The server's own rate limit.


async def test_the_rate_limit_answers_429_with_retry_after_and_books_nothing_for_it(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.rate_limit = 3  # requests a second, over all routes
    replies = await asyncio.gather(*(_post(client, [_order("AAPL", f"r-{i}")]) for i in range(6)))
    statuses = sorted(status for status, _, _ in replies)
    assert statuses == [200, 200, 200, 429, 429, 429]
    for status, body, headers in replies:
        if status == 429:
            assert body["error"]["code"] == 429
            assert 0 < float(headers["Retry-After"]) <= 1.0
    accepted = {body["data"][0]["client_order_id"] for status, body, _ in replies if status == 200}
    assert set(_booked(sim)) == accepted
    assert sim.stats.by_route["submit"] == 6  # every request counted at arrival
    assert sim.stats.faults_injected["rate_limited"] == 3
    assert sim.stats.submit_batch_sizes == [1, 1, 1]  # only the answered ones reach order entry
    async with client.get("/v1/clock") as resp:
        assert resp.status == 429  # the limit spans every route
    assert _validate_all(sim) == 7
