"""`replace_order`: PATCH /v1/accounts/{account_id}/orders/{order_id} (ReplaceOrderRequest).

A new `limit_price` or `quantity` (above what has filled) on an open order, which keeps its id; an
order no longer open is never replaced (400 by its id, 404 by a client id).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from worker.simulator.config import SimConfig
from worker.simulator.replies import error, ok
from worker.simulator.state import WORKING, Book, SimAccount

_MODELLED = ("limit_price", "quantity")
_OTHERS = ("stop_price", "limit_offset", "trailing_offset", "trailing_offset_type")


class ReplaceDesk:
    def __init__(self, book: Book, config: SimConfig) -> None:
        self.book = book
        self.config = config

    async def replace(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        try:
            body = await request.json()
        except ValueError as exc:
            return error(400, f"Failed to parse the request body as JSON: {exc}")
        if not isinstance(body, dict):
            return error(400, "expected a ReplaceOrderRequest object")
        wanted = request.match_info["order_id"]
        self.book.apply_fills(account)
        order = next((o for o in account.orders if o.id == wanted), None)
        if order is None:
            order = next(
                (o for o in account.orders
                 if o.client_order_id == wanted and o.status in WORKING), None
            )  # fmt: skip
        if order is None:
            return error(404, f"Order {wanted} not found for account {account.id}")
        if order.status not in WORKING:
            return error(400, f"Order {order.id} is {order.status} and cannot be replaced")
        problem = _check(body, order.order_type, order.filled_quantity)
        if isinstance(problem, str):
            return error(400, problem)
        limit, quantity = problem
        if limit is not None:
            order.limit_price = limit
        if quantity is not None:
            order.quantity = quantity
        order.updated_at = self.config.clock()
        if order.order_type == "LIMIT" and self.book.prices_limits(
            order.symbol, getattr(order, "time_in_force", "DAY")
        ):
            self.book.match_now(account, order)
        reply = order.to_api()
        if order.status in WORKING:
            reply["status"] = "PENDING_REPLACE"
        return ok(reply)


def _check(
    body: dict[str, Any], order_type: str, filled: Decimal
) -> tuple[str | None, Decimal | None] | str:
    """The new limit price and quantity, or what is wrong with the request."""
    given = {k: v for k, v in body.items() if v is not None}
    if not given:
        return "At least one field must be provided"
    others = sorted(k for k in given if k not in _MODELLED)
    if others:
        known = [k for k in others if k in _OTHERS]
        if known:
            return f"the simulator replaces only limit_price and quantity, not {', '.join(known)}"
        return f"unknown field `{others[0]}`"
    limit = given.get("limit_price")
    if limit is not None:
        if order_type != "LIMIT":
            return f"limit_price cannot be set on a {order_type} order"
        if not isinstance(limit, str) or not _positive(limit):
            return "limit_price must be a positive decimal string"
    raw = given.get("quantity")
    quantity = None
    if raw is not None:
        if not isinstance(raw, str) or not _positive(raw):
            return "Order quantity must be greater than zero"
        quantity = Decimal(raw)
        if quantity <= filled:
            return f"quantity {raw} must be above the filled quantity {filled}"
    return limit, quantity


def _positive(text: str) -> bool:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return False
    return value.is_finite() and value > 0
