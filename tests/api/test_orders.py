"""submit_orders and the cancels, through `TradingApi` against the simulator, counted at the server.

The promise under test: a client id is unique per account, so a submission re-sent after an
unknown outcome cannot create a second order; what it created is found again by its client id.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from tests.spec_errors import validate_error_reply
from tests.spec_validation import validate_request, validate_response
from tests.support import FakeClock, api_for
from worker.api.client import NewOrder, TradingApi
from worker.closing.client_ids import client_order_id
from worker.errors import ApiError, Conflict, NotFound, OutcomeUnknown, RateLimited, Rejected
from worker.simulator import Faults, SimConfig, Simulator

NEW_YORK = ZoneInfo("America/New_York")
ACCOUNT = 19816
# The statuses each operation's spec describes; other replies are checked by hand.
SPEC_STATUSES = {
    "submit": {200, 400, 403, 422, 500},
    "cancel": {200, 400, 403, 404, 500},
    "orders": {200, 403, 500},
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 24, 11, 0, tzinfo=NEW_YORK))  # a Tuesday, 11:00 ET


@pytest.fixture
def sim_config(clock: FakeClock) -> SimConfig:
    return SimConfig(fill_delay_s=0.5, clock=clock)


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[TradingApi]:
    sim.add_position(ACCOUNT, "GOOG", "25")
    sim.add_position(ACCOUNT, "TSLA", "-40", price="200.00")
    async with api_for(
        sim.base_url, api_key=sim.config.api_key, request_timeout=0.3
    ) as trading_api:
        yield trading_api


def cid(symbol: str, generation: int = 0) -> str:
    return client_order_id("test-job", ACCOUNT, symbol, generation)


async def sell_goog(sim: Simulator, api: TradingApi, **kw: Any) -> Any:
    order = NewOrder(
        client_id=kw.pop("client_id", cid("GOOG")),
        instrument_id=sim.instrument_id(ACCOUNT, "GOOG"),
        side="SELL",
        quantity=Decimal(kw.pop("quantity", "25")),
        **kw,
    )
    return await api.submit_order(ACCOUNT, order)


def check_against_spec(sim: Simulator, *, requests: bool = True) -> int:
    """Every request validates; every 200 against its operation, every error reply's envelope."""
    checked = 0
    for recorded in sim.requests:
        if requests:
            validate_request(recorded)
        if recorded.response_status >= 400 and recorded.response_content_type.endswith("json"):
            validate_error_reply(recorded)
            checked += 1
        elif recorded.response_status in SPEC_STATUSES.get(recorded.route, {200}):
            validate_response(recorded)
            checked += 1
    return checked


async def post_raw(sim: Simulator, body: Any) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(f"{sim.base_url}/v1/accounts/{ACCOUNT}/orders", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_market_order_fills_after_the_delay_and_flattens_the_position(
    sim: Simulator, api: TradingApi, clock: FakeClock
) -> None:
    reply = await sell_goog(sim, api)
    order = reply.data
    assert (order.client_order_id, order.side, order.quantity) == (cid("GOOG"), "SELL", 25)
    assert (order.order_type, order.time_in_force, order.status) == ("MARKET", "DAY", "PENDING_NEW")
    assert reply.request_id
    assert sim.position_quantity(ACCOUNT, "GOOG") == 25  # not yet filled
    clock.advance(0.5)
    assert sim.position_quantity(ACCOUNT, "GOOG") == 0
    [at_server] = sim.orders_of(ACCOUNT)
    assert at_server["status"] == "FILLED"
    assert sim.flipped_positions() == []
    assert check_against_spec(sim) == 1


async def test_a_reused_client_id_is_refused_with_409_and_creates_nothing(
    sim: Simulator, api: TradingApi, clock: FakeClock
) -> None:
    await sell_goog(sim, api)
    with pytest.raises(Conflict) as refused:
        await sell_goog(sim, api)
    assert refused.value.status == 409
    assert refused.value.request_id
    clock.advance(1)
    with pytest.raises(Conflict):  # still taken once the first order has filled
        await sell_goog(sim, api)
    assert len(sim.orders_of(ACCOUNT)) == 1
    assert sim.position_quantity(ACCOUNT, "GOOG") == 0  # sold once, not short
    assert sim.stats.status_counts[409] == 2
    conflict = next(r for r in sim.requests if r.response_status == 409)
    body = json.loads(conflict.response_body)
    assert body["error"]["code"] == 409
    assert isinstance(body["error"]["message"], str)
    assert body["metadata"]["request_id"]
    assert "data" not in body
    check_against_spec(sim)


async def test_a_new_generation_is_a_new_order(
    sim: Simulator, api: TradingApi, clock: FakeClock
) -> None:
    await sell_goog(sim, api, quantity="10")
    clock.advance(1)
    await sell_goog(sim, api, quantity="15", client_id=cid("GOOG", 1))
    clock.advance(1)
    assert len(sim.orders_of(ACCOUNT)) == 2
    assert sim.position_quantity(ACCOUNT, "GOOG") == 0


async def test_a_batch_naming_one_id_twice_creates_nothing(sim: Simulator, api: TradingApi) -> None:
    order = {
        "id": "dup-1", "symbol": "GOOG", "side": "SELL", "quantity": "5",
        "order_type": "MARKET", "time_in_force": "DAY",
    }  # fmt: skip
    status, body = await post_raw(sim, [order, {**order, "quantity": "6"}])
    assert status == 409
    assert body["error"]["code"] == 409
    assert sim.orders_of(ACCOUNT) == []


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"order_type": None}, 422),  # missing field
        ({"side": "SIDEWAYS"}, 422),
        ({"quantity": "0"}, 400),
        ({"quantity": "-5"}, 400),
        ({"quantity": "lots"}, 400),
        ({"id": "x" * 65}, 400),
        ({"symbol": "NOPE"}, 400),
        ({"order_type": "LIMIT"}, 400),  # no limit_price
    ],
)
async def test_a_malformed_submission_is_refused_and_creates_nothing(
    sim: Simulator, api: TradingApi, change: dict[str, Any], status: int
) -> None:
    order = {
        "id": "bad-1", "symbol": "GOOG", "side": "SELL", "quantity": "5",
        "order_type": "MARKET", "time_in_force": "DAY",
    }  # fmt: skip
    order.update(change)
    order = {k: v for k, v in order.items() if v is not None}
    good = {**order, "id": "good-1", "quantity": "1", "order_type": "MARKET", "symbol": "GOOG"}
    got, body = await post_raw(sim, [good, order])  # one bad order spoils the batch
    assert got == status, body
    assert body["error"]["code"] == status
    assert sim.orders_of(ACCOUNT) == []
    check_against_spec(sim, requests=False)  # malformed on purpose; the refusal is not


@pytest.mark.parametrize("fault", ["p_drop_after", "p_hang_after", "p_500_after"])
async def test_a_resend_after_an_unknown_outcome_is_a_409_and_the_order_is_found_by_client_id(
    sim: Simulator, api: TradingApi, clock: FakeClock, fault: str
) -> None:
    sim.config.faults = {"submit": Faults(**{fault: 1.0}, hang_s=0.6)}
    with pytest.raises(OutcomeUnknown):
        await sell_goog(sim, api)
    sim.config.faults = {}
    with pytest.raises(Conflict):
        await sell_goog(sim, api)
    found = await api.orders_by_client_id(ACCOUNT, [cid("GOOG"), cid("TSLA")])
    [order] = found.data
    assert order.client_order_id == cid("GOOG")
    assert order.quantity == 25
    clock.advance(1)
    assert sim.position_quantity(ACCOUNT, "GOOG") == 0
    assert sim.duplicate_closes() == []
    assert sim.flipped_positions() == []
    assert sim.stats.by_route["submit"] == 2


@pytest.mark.parametrize(
    ("fault", "raised"),
    [("p_503", OutcomeUnknown), ("p_drop_before", OutcomeUnknown), ("p_429", RateLimited)],
)
async def test_a_submission_refused_before_applying_creates_nothing(
    sim: Simulator, api: TradingApi, fault: str, raised: type[ApiError]
) -> None:
    sim.config.faults = {"submit": Faults(**{fault: 1.0}, retry_after_s=0.01)}
    with pytest.raises(raised):
        await sell_goog(sim, api)
    assert sim.orders_of(ACCOUNT) == []
    assert sim.stats.faults_injected[fault.removeprefix("p_")] == 1
    sim.config.faults = {}
    await sell_goog(sim, api)  # the id was never taken
    assert len(sim.orders_of(ACCOUNT)) == 1


async def test_an_order_is_found_by_client_id_after_it_filled(
    sim: Simulator, api: TradingApi, clock: FakeClock
) -> None:
    sent = (await sell_goog(sim, api)).data
    clock.advance(1)
    # An engine id that happens to be asked for is not taken for a client id.
    found = await api.orders_by_client_id(ACCOUNT, [cid("GOOG"), sent.id])
    [order] = found.data
    assert (order.id, order.status) == (sent.id, "FILLED")
    assert (await api.orders_by_client_id(ACCOUNT, [cid("GOOG", 1)])).data == []
    assert next(r.query["order_ids"] for r in sim.requests if r.route == "orders").count(",") == 1


async def test_at_the_close_orders_rest_until_the_regular_close_then_fill(
    sim: Simulator, api: TradingApi, clock: FakeClock
) -> None:
    sim.config.regular_close_at = datetime(2026, 11, 24, 15, 0, tzinfo=NEW_YORK)
    order = (await sell_goog(sim, api, time_in_force="AT_THE_CLOSE")).data
    assert (order.time_in_force, order.status) == ("AT_THE_CLOSE", "NEW")
    clock.advance(3 * 3600 + 59 * 60)  # 14:59
    assert sim.position_quantity(ACCOUNT, "GOOG") == 25
    [resting] = (await api.orders_by_client_id(ACCOUNT, [cid("GOOG")])).data
    assert resting.working
    clock.advance(60)  # 15:00, the close
    assert sim.position_quantity(ACCOUNT, "GOOG") == 0
    [filled] = sim.orders_of(ACCOUNT)
    assert (filled["status"], filled["time_in_force"]) == ("FILLED", "AT_THE_CLOSE")
    check_against_spec(sim)


async def test_at_the_close_follows_an_early_close(
    sim: Simulator, api: TradingApi, clock: FakeClock
) -> None:
    sim.config.market_day = "EARLY_CLOSE"  # 13:00 New York
    await sell_goog(sim, api, time_in_force="AT_THE_CLOSE")
    clock.advance(2 * 3600 - 1)  # 12:59:59
    assert sim.position_quantity(ACCOUNT, "GOOG") == 25
    clock.advance(1)
    assert sim.position_quantity(ACCOUNT, "GOOG") == 0


@pytest.mark.parametrize("when", ["after_the_close", "holiday"])
async def test_at_the_close_is_refused_when_there_is_no_close_left_today(
    sim: Simulator, api: TradingApi, clock: FakeClock, when: str
) -> None:
    if when == "holiday":
        sim.config.market_day = "HOLIDAY"
    else:
        clock.advance(5 * 3600)  # 16:00
    with pytest.raises(Rejected) as refused:
        await sell_goog(sim, api, time_in_force="AT_THE_CLOSE")
    assert refused.value.status == 400
    assert "market is closed" in str(refused.value)
    assert sim.orders_of(ACCOUNT) == []


async def test_a_self_match_is_refused_with_the_servers_reason(
    sim: Simulator, api: TradingApi
) -> None:
    sim.config.self_match_check = True
    sim.add_resting_order(ACCOUNT, "GOOG", "BUY", "10", "90.00")
    with pytest.raises(Rejected) as refused:
        await sell_goog(sim, api)
    assert refused.value.status == 400
    assert "Self-Match: would cross own orders" in str(refused.value)
    assert len(sim.orders_of(ACCOUNT)) == 1  # the resting order only
    assert check_against_spec(sim) == 1


async def test_buying_back_a_short_beyond_buying_power_is_refused(
    sim: Simulator, api: TradingApi
) -> None:
    sim.config.buying_power = Decimal("5000")  # TSLA: 40 x 200.00 = 8,000
    with pytest.raises(Rejected) as refused:
        await api.submit_order(
            ACCOUNT,
            NewOrder(
                client_id=cid("TSLA"),
                instrument_id=sim.instrument_id(ACCOUNT, "TSLA"),
                side="BUY",
                quantity=Decimal(40),
            ),
        )
    assert "Buying Power: required > available" in str(refused.value)
    assert sim.orders_of(ACCOUNT) == []
    await sell_goog(sim, api)  # a sell needs no buying power
    assert check_against_spec(sim) == 2


async def test_cancel_open_orders_cancels_only_the_named_instruments(
    sim: Simulator, api: TradingApi
) -> None:
    goog = sim.add_resting_order(ACCOUNT, "GOOG", "SELL", "10", "999.00")
    tsla = sim.add_resting_order(ACCOUNT, "TSLA", "BUY", "5", "1.00")
    reply = await api.cancel_open_orders(ACCOUNT, [sim.instrument_id(ACCOUNT, "GOOG")])
    assert [(o.id, o.status) for o in reply.data] == [(goog, "PENDING_CANCEL")]
    statuses = {o["id"]: o["status"] for o in sim.orders_of(ACCOUNT)}
    assert statuses == {goog: "CANCELED", tsla: "NEW"}
    with pytest.raises(NotFound):  # nothing open left there: the spec's 404
        await api.cancel_open_orders(ACCOUNT, [sim.instrument_id(ACCOUNT, "GOOG")])
    await api.cancel_open_orders(ACCOUNT, ["TSLA"])  # by symbol, too
    assert {o["status"] for o in sim.orders_of(ACCOUNT)} == {"CANCELED"}
    recorded = [r for r in sim.requests if r.route == "cancel"]
    assert next(r.query for r in recorded) == {"instrument_ids": sim.instrument_id(ACCOUNT, "GOOG")}
    assert check_against_spec(sim) == 3


async def test_cancel_all_open_orders_filters_by_side_and_type(sim: Simulator) -> None:
    sim.add_position(ACCOUNT, "GOOG", "25")
    sell = sim.add_resting_order(ACCOUNT, "GOOG", "SELL", "10", "999.00")
    buy = sim.add_resting_order(ACCOUNT, "GOOG", "BUY", "10", "1.00")
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    url = f"{sim.base_url}/v1/accounts/{ACCOUNT}/orders"
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.delete(url, params={"side": "BUY", "type": "LIMIT"}) as resp:
            assert resp.status == 200
            assert [o["id"] for o in (await resp.json())["data"]] == [buy]
        async with session.delete(url, params={"side": "LEFT"}) as resp:
            assert resp.status == 400
    statuses = {o["id"]: o["status"] for o in sim.orders_of(ACCOUNT)}
    assert statuses == {sell: "NEW", buy: "CANCELED"}
    check_against_spec(sim, requests=False)  # side=LEFT is off-spec on purpose


async def test_cancel_one_open_order_by_its_client_id(
    sim: Simulator, api: TradingApi, clock: FakeClock
) -> None:
    sim.config.regular_close_at = datetime(2026, 11, 24, 15, 0, tzinfo=NEW_YORK)
    await sell_goog(sim, api, time_in_force="AT_THE_CLOSE")
    reply = await api.cancel_open_order(ACCOUNT, cid("GOOG"))
    assert (reply.data.client_order_id, reply.data.status) == (cid("GOOG"), "PENDING_CANCEL")
    with pytest.raises(NotFound):
        await api.cancel_open_order(ACCOUNT, cid("GOOG"))
    clock.advance(5 * 3600)  # past the close: a cancelled order never fills
    assert sim.position_quantity(ACCOUNT, "GOOG") == 25
    assert sim.orders_of(ACCOUNT)[0]["status"] == "CANCELED"
    check_against_spec(sim)


async def test_faults_apply_to_the_cancel_route(sim: Simulator, api: TradingApi) -> None:
    sim.add_resting_order(ACCOUNT, "GOOG", "SELL", "10", "999.00")
    sim.config.faults = {"cancel": Faults(p_drop_after=1.0)}
    with pytest.raises(OutcomeUnknown):
        await api.cancel_open_orders(ACCOUNT, ["GOOG"])
    assert sim.orders_of(ACCOUNT)[0]["status"] == "CANCELED"  # applied, reply lost
    assert sim.stats.faults_injected["drop_after"] == 1


async def test_the_quantity_goes_out_as_a_plain_decimal_string(
    sim: Simulator, api: TradingApi
) -> None:
    await sell_goog(sim, api, quantity="2.50E+1")
    [sent] = json.loads(next(r.body for r in sim.requests if r.route == "submit"))
    assert sent == {
        "id": cid("GOOG"),
        "instrument_id": sim.instrument_id(ACCOUNT, "GOOG"),
        "side": "SELL",
        "quantity": "25",
        "order_type": "MARKET",
        "time_in_force": "DAY",
    }


async def test_calls_that_cannot_be_right_are_refused_before_sending(
    sim: Simulator, api: TradingApi
) -> None:
    with pytest.raises(ValueError, match="positive"):
        await sell_goog(sim, api, quantity="0")
    with pytest.raises(ValueError, match="at least one instrument"):
        await api.cancel_open_orders(ACCOUNT, [])  # would cancel the whole account's orders
    with pytest.raises(ValueError, match="1 to 1,000"):
        await api.orders_by_client_id(ACCOUNT, [])
    assert sim.stats.requests == 0
