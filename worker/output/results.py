"""What a target ended as: the outcome vocabulary, the fate of its last request, the result type.

Plain data, rendered by the report, metrics and terminal. Only `worker.closing.target` writes a
`TargetResult`'s fields; nothing here decides an outcome. `closed` means the position was read
flat at the server after the worker's close, with the orders that did it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

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
        }


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

    @property
    def extra_orders(self) -> bool:
        """More than one closing order filled: a double close, shown, never hidden.

        A closing order is on a side the worker closed this position on: the side of its own
        orders, or, with none of its own listed (all found by look-ups), the plan's closing
        side. So a close applied late, found beside the re-send, counts; a desk's order on the
        other side (buying into the long being sold) is listed but closes nothing of ours.
        """
        if len(self.orders) < 2:  # (most targets: asked for every result, several times)
            return False
        sides = {o.side for o in self.orders if o.own}
        if not sides and self.side in _CLOSING_SIDE:
            sides = {_CLOSING_SIDE[self.side]}
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
        }


def summarize(results: Iterable[TargetResult]) -> dict[str, int]:
    """Targets by outcome (every outcome, zeros included), and how many had extra orders."""
    counts: Counter[str] = Counter()
    extra = 0
    for r in results:
        counts[str(r.outcome)] += 1
        extra += r.extra_orders
    summary = {"targets": sum(counts.values())}
    summary.update({str(o): counts.get(str(o), 0) for o in Outcome})
    summary["extra_orders"] = extra
    return summary
