"""What an order event reads of an order, and the fields it writes of one."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

__all__ = ["Order"]


class Order(Protocol):
    """What an order event reads of an order (`worker.api.models.Order` has it): events take
    values, never the API's types."""

    @property
    def id(self) -> str: ...
    @property
    def client_order_id(self) -> str: ...
    @property
    def account_id(self) -> int: ...
    @property
    def side(self) -> str: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def order_type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def filled_quantity(self) -> Decimal: ...
    @property
    def symbol(self) -> str | None: ...
    @property
    def instrument_id(self) -> str | None: ...
    @property
    def time_in_force(self) -> str | None: ...
    @property
    def average_fill_price(self) -> Decimal | None: ...
    @property
    def limit_price(self) -> Decimal | None: ...


def price_text(price: Decimal | None) -> str | None:
    """A LIMIT order's limit price as the API writes it; None for a market order."""
    return None if price is None else str(price)


def order_fields(order: Order) -> dict[str, Any]:
    return {
        "account_id": order.account_id,
        "instrument_id": order.instrument_id,
        "symbol": order.symbol,
        "order_id": order.id,
        "client_order_id": order.client_order_id,
        "side": order.side,
        "quantity": str(order.quantity),
        "filled_quantity": str(order.filled_quantity),
        "order_type": order.order_type,
        "limit_price": price_text(order.limit_price),
        "time_in_force": order.time_in_force,
        "status": order.status,
    }
