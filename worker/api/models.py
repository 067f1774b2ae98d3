"""Shapes of what the API returns (pydantic, checked at the HTTP boundary) and enums used inside.

Quantities and prices stay `Decimal`: the API sends them as strings and so do our reports.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

# Orders in these states can still fill: a close is underway and must not be sent again.
WORKING_STATUSES = frozenset(
    {
        "PENDING_NEW",
        "NEW",
        "PARTIALLY_FILLED",
        "PENDING_CANCEL",
        "PENDING_REPLACE",
        "REPLACED",
        "SUSPENDED",
        "CALCULATED",
        "STOPPED",
        "OTHER",
    }
)
# Orders in these states will never fill further: a close that ended here left the rest open.
DEAD_STATUSES = frozenset({"CANCELED", "REJECTED", "EXPIRED"})


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Order(_ApiModel):
    id: str
    client_order_id: str
    account_id: int
    side: str
    quantity: Decimal
    order_type: str
    status: str
    filled_quantity: Decimal
    created_at: datetime
    symbol: str | None = None
    instrument_id: str | None = None
    instrument_type: str | None = None  # COMMON_STOCK, OPTION, ...: what prices it per unit
    time_in_force: str | None = None
    details: list[str] | None = None  # execution, rejection or cancellation details
    average_fill_price: Decimal | None = None  # volume-weighted over its fills; null before one
    limit_price: Decimal | None = None  # a LIMIT order's, as last set (a replace moves it)

    @property
    def working(self) -> bool:
        return self.status in WORKING_STATUSES

    @property
    def dead(self) -> bool:
        return self.status in DEAD_STATUSES


class Execution(_ApiModel):
    """One fill of an order (the account's ledger): newest first in a listing."""

    id: str
    order_id: str
    side: str  # BUY, SELL, SELL_SHORT, OTHER
    quantity: Decimal
    transaction_time: datetime
    instrument_id: str | None = None
    symbol: str | None = None
    price: Decimal | None = None


class Position(_ApiModel):
    account_id: int
    instrument_id: str
    symbol: str
    instrument_type: str
    quantity: Decimal
    market_value: Decimal
    position_type: str
    # An option's underlying (what a named instrument the account does not hold is matched
    # against); null for an equity. The spec gives no multiplier on a Position: that is the
    # contract's (`OptionsContract`).
    underlying_instrument_id: str | None = None

    @property
    def closing_side(self) -> str:
        """The side a close sends: selling a long, buying back a short."""
        return "SELL" if self.quantity > 0 else "BUY"


T = TypeVar("T")


class Metadata(_ApiModel):
    request_id: str
    next_page_token: str | None = None


class Envelope(_ApiModel, Generic[T]):
    """Every 2xx reply: `data`, and `metadata.request_id`."""

    data: T
    metadata: Metadata


class Instrument(_ApiModel):
    id: str
    symbol: str


class OptionsContract(_ApiModel):
    """`get_option_contracts`: what a contract's quantity is worth per unit of its price."""

    id: str
    symbol: str  # OSI
    multiplier: Decimal  # 100 for standard options; other values for adjusted contracts
    underlying_instrument_id: str | None = None


class SnapshotQuote(_ApiModel):
    """`last_quote` of a snapshot: a side is null when the quote is one-sided. `timestamp` is
    not in the spec (the simulator adds it): optional, None when the server gives none."""

    bid: Decimal | None = None
    ask: Decimal | None = None
    bid_size: int | None = None
    ask_size: int | None = None
    midpoint: Decimal | None = None
    timestamp: datetime | None = None


class MarketDataSnapshot(_ApiModel):
    instrument_id: str
    symbol: str
    last_quote: SnapshotQuote | None = None


class Clock(_ApiModel):
    clock: datetime


class SessionTimes(_ApiModel):
    open: datetime
    close: datetime


class TradingSessions(_ApiModel):
    regular: SessionTimes | None = None


class MarketStatus(_ApiModel):
    day_type: str
    is_open: bool


class MarketHours(_ApiModel):
    date: str
    timezone: str
    current_time: datetime
    status: MarketStatus
    today_sessions: TradingSessions
