"""What a target ended as: the outcome vocabulary, the fate of its last request, the result type.

Plain data, rendered by the report, metrics and terminal. Only `worker.closing.target` writes a
`TargetResult`'s fields; nothing here decides an outcome. `closed` means the position was read
flat at the server after the worker's close, with the orders that did it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from worker.money import ONE, multiplier_text

FILLED = frozenset({"FILLED", "DONE_FOR_DAY"})
# The side that closes a position, by the planned position's side (`TargetResult.side`).
_CLOSING_SIDE = {"LONG": "SELL", "SHORT": "BUY"}


class Outcome(StrEnum):
    CLOSED = "closed"  # read flat at the server after the worker's close
    ALREADY_FLAT = "already_flat"  # held nothing; nothing was sent
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_FLAT = "not_flat"  # still open when FLAT_TIMEOUT (or the stop) came
    MARKET_CLOSED = "market_closed"  # the run was skipped: the market is closed
    GUARDED = "guarded"  # not sent: a guard refused its blind market order (the reason in error)
    # A named instrument the account does not hold, and never did in this job (nothing sent;
    # the error names what the account holds on that underlying). FAIL_ON_NOT_HELD: exit 1.
    NOT_HELD = "not_held"


class Fate(StrEnum):
    """What is known of the last close request sent for a target."""

    NOT_SENT = "not_sent"  # nothing left this host
    REFUSED = "refused"  # the server said no, and did nothing
    UNKNOWN = "unknown"  # it may or may not have been applied
    APPLIED = "applied"  # a reply, or an order found with evidence, says it was


@dataclass(slots=True)
class OrderSummary:
    """What the report keeps of an order: small, because a run may hold 100,000 of them."""

    id: str
    side: str
    quantity: str
    status: str
    filled_quantity: str = "0"
    own: bool = True  # in a close reply; False: found at the server (a look, or following)
    client_order_id: str = ""  # submit_orders: the id the worker derived (lq-...-gN)
    adopted: bool = False  # the job's own order, left working by an earlier run and followed
    # Created before this run sent anything for the target (an earlier run's, found by a look,
    # a 409 on the first send, or adopted): its fills so far are in the plan's positions read.
    prior: bool = False
    average_fill_price: str | None = None  # as the server last gave it; None before a fill
    order_type: str = "MARKET"  # LIMIT: a protected close (CLOSE_STYLE=protected)
    limit_price: str | None = None  # a LIMIT order's, as last read (re-prices move it)
    # Its stamp (the order system's clock): following lists the instrument's orders from the
    # earliest of the job's on (`closing.follow_read`). Not in the report.
    created_at: datetime | None = None

    @property
    def limit_price_value(self) -> Decimal | None:
        return None if self.limit_price is None else Decimal(self.limit_price)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "side": self.side,
            "quantity": self.quantity,
            "status": self.status,
            "filled_quantity": self.filled_quantity,
            "own": self.own,
            "client_order_id": self.client_order_id,
            "adopted": self.adopted,
            "average_fill_price": self.average_fill_price,
            "order_type": self.order_type,
            "limit_price": self.limit_price,
        }


@dataclass(frozen=True, slots=True)
class Arrival:
    """The instrument's quote read before the first close: what a target's cost is measured
    against. One per instrument, shared by its targets. A side is None when the quote is
    one-sided; `age_s` is None when the server gives no quote time."""

    bid: Decimal | None
    ask: Decimal | None
    midpoint: Decimal | None
    age_s: float | None
    # The quote as every event and the report show it (`arrival_*`, and `price_note` without a
    # midpoint): rendered once per instrument, not once per order and target. Read only.
    shown: dict[str, Any] = field(init=False, repr=False, compare=False)
    # (ask - bid) / midpoint in bps; None when one-sided or without a midpoint. Once per
    # instrument too: the guards ask it of every target.
    spread_bps: Decimal | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spread = None
        if self.bid is not None and self.ask is not None and self.midpoint:
            spread = (self.ask - self.bid) / self.midpoint * 10_000
        object.__setattr__(self, "spread_bps", spread)
        shown: dict[str, Any] = {
            "arrival_bid": _text(self.bid),
            "arrival_ask": _text(self.ask),
            "arrival_midpoint": _text(self.midpoint),
            "arrival_age_s": None if self.age_s is None else round(self.age_s, 3),
        }
        if self.midpoint is None:
            shown["price_note"] = NO_ARRIVAL_PRICE
        object.__setattr__(self, "shown", shown)


@dataclass(slots=True)
class TargetResult:
    account_id: int
    instrument: str  # as named: a symbol, a UUID, or "*" for an account that could not be read
    instrument_id: str | None = None
    symbol: str | None = None
    outcome: Outcome | None = None
    orders: list[OrderSummary] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    error: str | None = None
    reconciled: bool = False
    fate: Fate = Fate.NOT_SENT
    side: str | None = None  # the planned position's side: LONG or SHORT
    quantity: str | None = None  # the planned position's signed quantity
    remaining_quantity: str | None = None  # at the last read, when not flat
    residue_closes: int = 0
    # Prices (see docs/prices.md): the arrival quote (None: no arrival price), and, once
    # settled with fills, the volume-weighted fill of its closing orders and the cost of that
    # against the arrival midpoint (positive: money given up). Decimal strings.
    arrival: Arrival | None = None
    filled_quantity: str | None = None
    average_fill_price: str | None = None
    cost: str | None = None
    cost_bps: str | None = None
    # cancel_orders: others' orders on the instrument the run's close cancelled (read CANCELED
    # after it, working before it). Not closing orders of the run: never in `orders`.
    canceled_orders: tuple[OrderSummary, ...] = ()  # (a tuple: most results have none)
    # The contract multiplier its money figures use (`worker.money`): 1 for a share; None: an
    # option whose multiplier could not be learned (its cost and value unknown).
    multiplier: Decimal | None = ONE
    # Closes sent whose order stayed unknown (no reply, or one showing no order of it): an
    # order the job does not know may be one of them (`worker.closing.ledger.is_late_close`).
    # Not reported.
    unanswered: int = 0

    @property
    def extra_orders(self) -> bool:
        """More than one closing order filled: a double close, shown, never hidden.

        A closing order is on a side the worker closed this position on: the plan's closing
        side, and the side of each of its own orders (a close back after a double). So a close
        applied late, found beside the re-send, counts, even when every close on the plan's side
        was found by look-ups and the job's only answered order is the one that closed the
        double back; a desk's order on the other side (buying into the long being sold) is
        listed but closes nothing of ours.
        """
        if len(self.orders) < 2:  # (most targets: asked for every result, several times)
            return False
        sides = {o.side for o in self.orders if o.own}
        if self.side in _CLOSING_SIDE:
            sides.add(_CLOSING_SIDE[self.side])
        closing = [o for o in self.orders if not sides or o.side in sides]  # no side known: all
        return sum(o.status in FILLED for o in closing) > 1

    @property
    def remaining(self) -> Decimal | None:
        return None if self.remaining_quantity is None else Decimal(self.remaining_quantity)

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "instrument": self.instrument,
            "instrument_id": self.instrument_id,
            "symbol": self.symbol,
            "outcome": str(self.outcome) if self.outcome else None,
            "fate": str(self.fate),
            "side": self.side,
            "quantity": self.quantity,
            "remaining_quantity": self.remaining_quantity,
            "orders": [o.as_json() for o in self.orders],
            "extra_orders": self.extra_orders,
            "residue_closes": self.residue_closes,
            "request_ids": self.request_ids,
            "attempts": self.attempts,
            "error": self.error,
            "reconciled": self.reconciled,
            **self.price_fields(),
            "canceled_orders": [o.as_json() for o in self.canceled_orders],
        }

    def price_fields(self) -> dict[str, Any]:
        """The arrival quote and the cost, as the report and the events show them."""
        quote = self.quote_fields()
        fields: dict[str, Any] = {
            "arrival_bid": quote["arrival_bid"],
            "arrival_ask": quote["arrival_ask"],
            "arrival_midpoint": quote["arrival_midpoint"],
            "arrival_age_s": quote["arrival_age_s"],
            "filled_quantity": self.filled_quantity,
            "average_fill_price": self.average_fill_price,
            "cost": self.cost,
            "cost_bps": self.cost_bps,
            "multiplier": multiplier_text(self.multiplier),
        }
        if "price_note" in quote:
            fields["price_note"] = quote["price_note"]
        return fields

    def quote_fields(self) -> dict[str, Any]:
        """The arrival quote alone, as `price_fields` shows it (`close_order`'s). Read only."""
        return _NO_QUOTE if self.arrival is None else self.arrival.shown


NO_ARRIVAL_PRICE = "no arrival price"
_NO_QUOTE: dict[str, Any] = {
    "arrival_bid": None,
    "arrival_ask": None,
    "arrival_midpoint": None,
    "arrival_age_s": None,
    "price_note": NO_ARRIVAL_PRICE,
}


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
