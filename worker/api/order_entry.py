"""Order entry: closing a position, submitting orders (one, or a batch), cancelling and
re-pricing them. None of these is idempotent by itself; the caller knows what a failure means
(`worker.api.policy`, `worker.closing`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal
from urllib.parse import quote

import aiohttp

from worker import jsonbytes
from worker.api.envelope import ORDER, ORDERS, Reply
from worker.api.models import Order
from worker.api.transport import Transport
from worker.errors import OutcomeUnknown

Side = Literal["BUY", "SELL"]
TimeInForce = Literal["DAY", "AT_THE_CLOSE", "IMMEDIATE_OR_CANCEL"]
OrderType = Literal["MARKET", "LIMIT"]

# A close's body is one of two documents. aiohttp's BytesPayload is immutable and reusable, so
# each is built once instead of JSON-encoded on every close (~15 us of CPU a close).
_CLOSE_BODY = {
    flag: aiohttp.BytesPayload(
        json.dumps({"cancel_orders": flag}).encode(), content_type="application/json"
    )
    for flag in (False, True)
}


@dataclass(frozen=True, slots=True)
class NewOrder:
    """One order to submit, alone (`submit_order`) or in a batch (`submit_orders`): MARKET, or
    LIMIT (CLOSE_STYLE=protected); the spec's order fields."""

    client_id: str
    instrument_id: str
    side: Side
    quantity: Decimal  # positive
    limit_price: Decimal | None = None  # a LIMIT order at this price; None: MARKET
    time_in_force: TimeInForce | None = None  # None: the batch's

    def as_body(self, time_in_force: TimeInForce) -> dict[str, str]:
        body = {
            "id": self.client_id,
            "instrument_id": self.instrument_id,
            "side": self.side,
            "quantity": _decimal_text(self.quantity),
            "order_type": "MARKET" if self.limit_price is None else "LIMIT",
            "time_in_force": self.time_in_force or time_in_force,
        }
        if self.limit_price is not None:
            body["limit_price"] = _price_text(self.limit_price)
        return body


class OrderEntry(Transport):
    """The endpoints that change something at the server."""

    async def close_position(
        self,
        account_id: int,
        instrument_id: str,
        *,
        cancel_orders: bool,
        unless: asyncio.Event | None = None,
    ) -> Reply[list[Order]]:
        """DELETE one position. Not idempotent: the caller must know what a failure means.

        If `unless` is set by the time a request slot is free, nothing is sent (`NotSent`).
        """
        raw = await self._call(
            "DELETE",
            f"/v1/accounts/{account_id}/positions/{instrument_id}",
            body=_CLOSE_BODY[cancel_orders],
            unless=unless,
        )
        return self._parse(ORDERS, raw)

    async def submit_order(
        self, account_id: int, order: NewOrder, *, unless: asyncio.Event | None = None
    ) -> Reply[Order]:
        """POST one order under its client `id` (submit_orders): MARKET, or LIMIT at its
        `limit_price` when one is given; DAY unless it says otherwise.

        The server keeps client ids unique per account, so sending the same `client_id` again
        cannot create a second order: a 409 (`Conflict`) says one with that id already exists.
        If `unless` is set by the time a request slot is free, nothing is sent (`NotSent`).
        """
        if order.quantity <= 0:
            raise ValueError(f"an order's quantity must be positive, not {order.quantity}")
        body = aiohttp.BytesPayload(
            jsonbytes.dumps([order.as_body("DAY")]), content_type="application/json"
        )
        raw = await self._call(
            "POST", f"/v1/accounts/{account_id}/orders", body=body, unless=unless
        )
        reply = self._parse(ORDERS, raw)
        if len(reply.data) != 1:
            # A 200 that does not show the one order sent: whether it exists is not known.
            raise self._scrub.error(
                OutcomeUnknown(
                    f"POST /v1/accounts/{account_id}/orders: reply lists {len(reply.data)} orders",
                    status=200,
                    request_id=reply.request_id,
                )
            )
        return Reply(reply.data[0], reply.request_id)

    async def submit_orders(
        self,
        account_id: int,
        orders: Sequence[NewOrder],
        *,
        time_in_force: TimeInForce = "DAY",
        unless: asyncio.Event | None = None,
    ) -> Reply[list[Order]]:
        """POST orders in one request, each under its own client `id` (a batch).

        The reply is returned as the server gave it: the spec says nothing about a batch's
        limits or atomicity, so what a short or mixed reply means is decided by the caller
        (`worker.closing.batch`). If `unless` is set by the time a request slot is free,
        nothing is sent (`NotSent`).
        """
        if not orders:
            raise ValueError("a batch needs at least one order")
        body = [o.as_body(time_in_force) for o in orders]
        for o in orders:
            if o.quantity <= 0:
                raise ValueError(f"an order's quantity must be positive, not {o.quantity}")
        payload = aiohttp.BytesPayload(jsonbytes.dumps(body), content_type="application/json")
        raw = await self._call(
            "POST", f"/v1/accounts/{account_id}/orders", body=payload, unless=unless
        )
        return self._parse(ORDERS, raw)

    async def cancel_open_orders(
        self, account_id: int, instrument_ids: Sequence[str]
    ) -> Reply[list[Order]]:
        """DELETE the open orders on these instruments (cancel_all_open_orders).

        The reply lists the orders whose cancellation was requested (typically PENDING_CANCEL):
        they may still fill until the server says CANCELED. The server answers 404
        (`NotFound`) when no open order matches. Never call it without instruments: that
        would cancel every open order of the account.
        """
        if not instrument_ids:
            raise ValueError("cancel_open_orders needs at least one instrument")
        params = {"instrument_ids": ",".join(instrument_ids)}
        raw = await self._call("DELETE", f"/v1/accounts/{account_id}/orders", params=params)
        return self._parse(ORDERS, raw)

    async def cancel_open_order(self, account_id: int, order_id: str) -> Reply[Order]:
        """DELETE one open order, named by its `id` or its client id (cancel_open_order)."""
        raw = await self._call("DELETE", f"/v1/accounts/{account_id}/orders/{order_id}")
        return self._parse(ORDER, raw)

    async def replace_order(
        self, account_id: int, order_id: str, *, limit_price: Decimal
    ) -> Reply[Order]:
        """PATCH an open order's limit price (replace_order, ReplaceOrderRequest). The order
        keeps its id and client id: a replace never creates an order. 400/404: it is no longer
        open (or never was)."""
        body = aiohttp.BytesPayload(
            jsonbytes.dumps({"limit_price": _price_text(limit_price)}),
            content_type="application/json",
        )
        path = f"/v1/accounts/{account_id}/orders/{quote(order_id, safe='')}"
        return self._parse(ORDER, await self._call("PATCH", path, body=body))


def _price_text(value: Decimal) -> str:
    """A limit price as the API spells it: "99.95", "0.5007", never "9.995E+1"."""
    return format(value, "f")


def _decimal_text(value: Decimal) -> str:
    """A quantity as the API spells it: "25", "0.5", never "2.5E+1"."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
