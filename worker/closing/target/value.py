"""A target: one open position to close, and what a transition returns (`Next`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Protocol

from worker.api.models import Order
from worker.money import ONE
from worker.results import Arrival, TargetResult

NOT_STARTED = "run stopped before this target was sent"


class Next(Enum):
    """What happens to a target after a transition."""

    SETTLED = "settled"  # it has its outcome
    FOLLOW = "follow"  # a close was sent or found: read its position until flat
    WATCH = "watch"  # failed, its last close's fate unknown: read it, never send for it


@dataclass(frozen=True)
class CloseOrders:
    """The orders a close's reply (or a look) showed, the request that showed them, and whether
    they are an earlier run's (filled, before the plan read the position, into it)."""

    orders: Sequence[Order]
    request_id: str
    prior: bool = False


class JournalRecords(Protocol):
    """The journal's records a transition queues (`worker.journal.store.Journal`)."""

    def attempt_result(
        self,
        run_id: str,
        account_id: int,
        instrument_id: str,
        attempt: int,
        request_id: str | None,
        result: str,
    ) -> None: ...

    def orders(
        self,
        run_id: str,
        account_id: int,
        instrument_id: str,
        orders: Iterable[Order],
        request_id: str,
        *,
        reconciled: bool,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Target:
    """One open position to close."""

    account_id: int
    instrument: str  # as the operator named it, or the symbol when it came from a whole account
    instrument_id: str
    symbol: str
    instrument_type: str
    quantity: Decimal  # signed: long > 0, short < 0
    market_value: Decimal
    cancel_orders: bool
    arrival: Arrival | None = None  # the instrument's quote read before the first close
    # What one unit of quantity is worth per unit of price (`worker.money`): 1 for a share,
    # the contract's multiplier (the API's) for an option; None: it could not be learned.
    multiplier: Decimal | None = ONE
    # A run that took the job over: what the job's earlier orders had filled (signed) when
    # `quantity` was read, at one confirmed point (`worker.run.takeover`). None: not known.
    prior_fills: Decimal | None = None

    def with_arrival(self, arrival: Arrival | None) -> Target:
        """This target with its instrument's arrival quote: `dataclasses.replace(self,
        arrival=arrival)`, at a fifth of its cost (every planned target takes one)."""
        return Target(
            self.account_id,
            self.instrument,
            self.instrument_id,
            self.symbol,
            self.instrument_type,
            self.quantity,
            self.market_value,
            self.cancel_orders,
            arrival,
            self.multiplier,
            self.prior_fills,
        )

    @property
    def closing_side(self) -> str:
        return "SELL" if self.quantity > 0 else "BUY"

    def result(self) -> TargetResult:
        """A fresh result for this target, with nothing decided yet."""
        return TargetResult(
            self.account_id,
            self.instrument,
            self.instrument_id,
            self.symbol,
            side="LONG" if self.quantity > 0 else "SHORT",
            quantity=sys.intern(str(self.quantity)),  # one per target, few distinct
            arrival=self.arrival,
            multiplier=self.multiplier,
        )
