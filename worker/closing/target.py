"""A target and the one owner of its result: every change to a `TargetResult` is made here.

Each transition sets outcome, fate and error together, emits its event, queues its journal record
and returns what happens next (`Next`) for the caller to pass on. Nothing here sends a request or
decides whether to retry, and no other module assigns a result's fields.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Protocol

from worker.api.models import Order
from worker.errors import ApiError, NotSent, RateLimited, Rejected
from worker.money import ONE, money
from worker.observe import events
from worker.results import Arrival, Fate, OrderSummary, Outcome, TargetResult

NOT_STARTED = "run stopped before this target was sent"


class Next(Enum):
    """What happens to a target after a transition."""

    SETTLED = "settled"  # it has its outcome
    FOLLOW = "follow"  # a close was sent or found: read its position until flat
    WATCH = "watch"  # failed, its last close's fate unknown: read it, never send for it


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


# -- orders --------------------------------------------------------------------------------


def note_order(
    result: TargetResult, order: Order, *, own: bool, adopted: bool = False, prior: bool = False
) -> None:
    """Add an order, or refresh the status of one already listed (own stays own).

    `prior`: created before this run sent anything for the target (an earlier run's, found by a
    look, a 409 on the first send, or adopted), so its fills so far are in the plan's read."""
    for known in result.orders:
        if known.id == order.id:
            known.status, known.filled_quantity = order.status, str(order.filled_quantity)
            known.own = known.own or own
            known.adopted = known.adopted or adopted
            if order.average_fill_price is not None:
                known.average_fill_price = str(order.average_fill_price)
            if order.limit_price is not None:
                known.limit_price = str(order.limit_price)
            return
    result.orders.append(_summary(order, own=own, adopted=adopted, prior=prior))


def _summary(
    order: Order, *, own: bool, adopted: bool = False, prior: bool = False
) -> OrderSummary:
    return OrderSummary(
        order.id,
        order.side,
        # Interned: a run holds one per order, and few distinct quantities.
        sys.intern(str(order.quantity)),
        order.status,
        sys.intern(str(order.filled_quantity)),
        own,
        order.client_order_id,
        adopted,
        prior or adopted,
        None if order.average_fill_price is None else str(order.average_fill_price),
        sys.intern(order.order_type),
        None if order.limit_price is None else str(order.limit_price),
    )


def canceled_by_close(target: Target, result: TargetResult, ended: Iterable[Order]) -> None:
    """cancel_orders: others' orders that worked on the instrument before the run's close and
    read CANCELED after it were cancelled by it (close_position cancels them at the server,
    submit_orders before its close). Each is named: an event, and the report's list."""
    if not target.cancel_orders:
        return
    for order in ended:
        if order.status != "CANCELED" or any(o.id == order.id for o in result.canceled_orders):
            continue
        result.canceled_orders = (*result.canceled_orders, _summary(order, own=False))
        events.order_canceled_by_close(
            order, account_id=target.account_id, instrument=target.instrument
        )


def record_orders(
    journal: JournalRecords,
    run_id: str,
    target: Target,
    result: TargetResult,
    orders: Sequence[Order],
    request_id: str,
    *,
    reconciled: bool,
    prior: bool = False,
) -> None:
    """Orders of a close (in its reply, or found): listed, journaled, and logged."""
    for order in orders:
        # A reply may echo another instrument's order (a mixed-up reply): journaled and
        # logged below, but not this target's close.
        if (
            order.instrument_id is None
            or order.instrument_id.lower() == target.instrument_id.lower()
        ):
            note_order(result, order, own=not reconciled, prior=prior)
    journal.orders(
        run_id, target.account_id, target.instrument_id, orders, request_id, reconciled=reconciled
    )
    for order in orders:
        events.close_order(
            order,
            account_id=target.account_id,
            instrument_id=target.instrument_id,
            request_id=request_id,
            attempt=result.attempts,
            reconciled=reconciled,
            arrival=result.quote_fields(),
        )


# -- planning ------------------------------------------------------------------------------


def planned_flat(
    result: TargetResult,
    why: str | None = None,
    *,
    request_id: str | None = None,
    instrument_id: str | None = None,
    symbol: str | None = None,
) -> Next:
    """Held nothing at planning: already flat, nothing sent. `why` is said (`target_settled`)."""
    if request_id:
        result.request_ids.append(request_id)
    if instrument_id is not None:
        result.instrument_id, result.symbol = instrument_id, symbol
    return _settle(result, Outcome.ALREADY_FLAT, None, why=why)


def not_held(
    result: TargetResult, why: str, *, request_id: str, instrument_id: str, symbol: str
) -> Next:
    """A named instrument the API knows and the account does not hold (nor held earlier in
    this job): nothing sent; `why` names what the account holds on that underlying. It is its
    error too, so the summary and the report show it."""
    result.request_ids.append(request_id)
    result.instrument_id, result.symbol = instrument_id, symbol
    return _settle(result, Outcome.NOT_HELD, why, why=why)


def unknown_instrument(result: TargetResult, err: ApiError) -> Next:
    """A named instrument the API does not know: a typo, failed, nothing sent."""
    if err.request_id:
        result.request_ids.append(err.request_id)
    return failed(result, f"unknown instrument {result.instrument!r}: {err}", err)


def unreadable(result: TargetResult, err: ApiError, why: str | None = None) -> Next:
    """The account (or an instrument at planning) could not be read: failed, nothing sent."""
    if err.request_id:
        result.request_ids.append(err.request_id)
    result.attempts = 1
    return failed(result, why or f"could not list the account's positions: {err}", err)


def guarded(result: TargetResult, why: str) -> Next:
    """A guard refused to send a blind market order for it (no quote, a wide spread, an old
    quote, a notional above the cap): nothing sent, the book not flat, the reason said."""
    return _settle(result, Outcome.GUARDED, why, why=why)


def skipped(result: TargetResult, why: str = NOT_STARTED) -> Next:
    """Never sent: the run ended or stopped before this target's turn."""
    return _settle(result, Outcome.SKIPPED, why)


def market_closed(result: TargetResult, why: str) -> Next:
    """The run was skipped: the market is closed."""
    return _settle(result, Outcome.MARKET_CLOSED, why)


# -- sending -------------------------------------------------------------------------------


def sending(result: TargetResult, attempt: int) -> None:
    """The attempt whose intent is now on disk is about to leave this host."""
    result.attempts = attempt


def not_sent(result: TargetResult) -> None:
    """The attempt never left this host (a stop, or the lock lost before it went out)."""
    result.attempts -= 1
    result.fate = Fate.NOT_SENT


def sent(
    journal: JournalRecords,
    run_id: str,
    target: Target,
    result: TargetResult,
    orders: Sequence[Order],
    request_id: str,
    *,
    found: bool,
    prior: bool = False,
) -> Next:
    """The close was applied (its reply, or its client id's order found): follow it to flat."""
    result.request_ids.append(request_id)
    result.fate = Fate.APPLIED
    journal.attempt_result(
        run_id,
        target.account_id,
        target.instrument_id,
        result.attempts,
        request_id,
        "found" if found else "ok",
    )
    record_orders(
        journal, run_id, target, result, orders, request_id, reconciled=found, prior=prior
    )
    return Next.FOLLOW


def stopped_unsent(
    journal: JournalRecords, run_id: str, target: Target, result: TargetResult
) -> None:
    """A stop came before the attempt left this host: it never happened."""
    attempt = result.attempts
    not_sent(result)
    journal.attempt_result(
        run_id, target.account_id, target.instrument_id, attempt, None, "stopped"
    )


def send_failed(
    journal: JournalRecords, run_id: str, target: Target, result: TargetResult, err: ApiError
) -> None:
    """The attempt failed: refused (the server did nothing), unknown, or not sent."""
    result.fate = fate_of(err)
    if err.request_id:
        result.request_ids.append(err.request_id)
    journal.attempt_result(
        run_id,
        target.account_id,
        target.instrument_id,
        result.attempts,
        err.request_id,
        type(err).__name__,
    )


def fate_of(err: ApiError) -> Fate:
    if isinstance(err, NotSent):
        return Fate.NOT_SENT
    if isinstance(err, RateLimited | Rejected):
        return Fate.REFUSED
    return Fate.UNKNOWN


def adopted(
    journal: JournalRecords,
    run_id: str,
    target: Target,
    result: TargetResult,
    orders: Sequence[Order],
    request_id: str,
) -> Next:
    """The job's own orders, left working by an earlier run, are this target's close."""
    result.reconciled = True
    result.fate = Fate.APPLIED
    for order in orders:
        note_order(result, order, own=False, adopted=True)
        events.order_adopted(
            order, account_id=target.account_id, instrument=target.instrument, request_id=request_id
        )
    record_orders(journal, run_id, target, result, orders, request_id, reconciled=True)
    return Next.FOLLOW


def earlier_orders(
    journal: JournalRecords,
    run_id: str,
    target: Target,
    result: TargetResult,
    orders: Sequence[Order],
    request_id: str,
) -> None:
    """The job's orders from earlier runs of it, read before this run sends anything for the
    target: listed in its result from the start (their fills so far are in the plan's read)."""
    result.reconciled = True
    record_orders(journal, run_id, target, result, orders, request_id, reconciled=True, prior=True)


def closed_earlier(result: TargetResult, orders: Sequence[Order], request_id: str) -> Next:
    """Read flat before this run sent anything, after the job's orders from an earlier run:
    `closed` by them when they filled, with them and their cost; else already flat."""
    result.reconciled = True
    if request_id:
        result.request_ids.append(request_id)
    for order in orders:
        note_order(result, order, own=False, prior=True)
    if any(Decimal(o.filled_quantity) != 0 for o in result.orders):
        return _settle(result, Outcome.CLOSED, None, why="closed by an earlier run's orders")
    return _settle(
        result, Outcome.ALREADY_FLAT, None, why="flat; the earlier run's orders filled nothing"
    )


def looked(result: TargetResult, request_id: str) -> None:
    """A look at the server (orders and position) was answered."""
    result.request_ids.append(request_id)


def found(
    journal: JournalRecords,
    run_id: str,
    target: Target,
    result: TargetResult,
    orders: Sequence[Order],
    request_id: str,
    *,
    prior: bool = False,
) -> Next:
    """A look found the close (evidence it is ours): no re-send, follow it."""
    result.reconciled = True
    result.fate = Fate.APPLIED
    record_orders(journal, run_id, target, result, orders, request_id, reconciled=True, prior=prior)
    return Next.FOLLOW


def busy(result: TargetResult) -> Next:
    """A look found an order that can still fill: nothing is sent, following decides."""
    result.reconciled = True
    return Next.FOLLOW


def read_flat(result: TargetResult, why: str) -> Next:
    """A look found the position flat: after this run's close, following confirms it; before
    any, it was already flat."""
    result.reconciled = True
    if result.attempts > 0:
        return Next.FOLLOW
    return _settle(
        result, Outcome.ALREADY_FLAT, None, why=f"{why}: no closing order, position flat"
    )


def failed(result: TargetResult, error: str, err: ApiError | None = None) -> Next:
    """Failed: said at once (`close_failed`), with the status and request_id when known."""
    _settle(result, Outcome.FAILED, error)
    events.close_failed(
        account_id=result.account_id,
        instrument=result.instrument,
        status=err.status if err is not None else None,
        error=error,
        request_id=(err.request_id if err is not None else None)
        or (result.request_ids[-1] if result.request_ids else None),
        attempts=result.attempts,
    )
    return next_of(result)


def stopped(result: TargetResult) -> Next:
    """A stop came before the next attempt: skipped if nothing was sent, else failed."""
    if result.attempts == 0:
        return skipped(result)
    return failed(result, "run stopped before the close could be sent again")


def cut_off(result: TargetResult, *, not_sent: str, unknown: str) -> Next:
    """A target that did not finish (a stop's deadline, a journal failure): skipped if nothing
    was sent, else failed with its outcome unknown. One already settled keeps its outcome."""
    if result.outcome is not None:
        return Next.SETTLED
    if result.attempts == 0:
        return skipped(result, not_sent)
    result.fate = Fate.UNKNOWN
    return failed(
        result,
        f"outcome unknown: {unknown}"
        f" (request_ids: {', '.join(result.request_ids) or 'none'}); the next run checks it",
    )


def next_of(result: TargetResult) -> Next:
    """Sent a close or found one: follow. Failed while its last close may yet have been
    applied: watch (report what the server did, never send). Otherwise settled."""
    if result.outcome is None:
        return Next.FOLLOW
    if result.outcome is Outcome.FAILED and result.attempts > 0 and result.fate is Fate.UNKNOWN:
        return Next.WATCH
    return Next.SETTLED


# -- following -----------------------------------------------------------------------------


def position_read(result: TargetResult, position: Decimal | None) -> None:
    """The position as last read (None once flat)."""
    result.remaining_quantity = None if position is None else str(position)


def residue_begun(result: TargetResult) -> int:
    """A residue close is about to be sent: it counts, and its number is returned."""
    result.residue_closes += 1
    return result.residue_closes


def residue_uncounted(result: TargetResult) -> None:
    """A residue close that provably changed nothing (never sent, refused, nothing created)."""
    result.residue_closes -= 1


def residue_unknown(result: TargetResult) -> None:
    """A residue close cut off by the stop with its reply pending: it may yet be applied."""
    result.fate = Fate.UNKNOWN


def flat(result: TargetResult, *, by_unfound_close: bool = False) -> Next:
    """Read flat after the job's close: closed when an order of the run filled."""
    result.remaining_quantity = None
    if any(Decimal(o.filled_quantity) != 0 for o in result.orders):
        return _settle(result, Outcome.CLOSED, None)
    if by_unfound_close:
        # Flat after a close of the job's whose reply was lost and whose order no listing
        # showed: not `already_flat` (the job sent a close), and said so.
        why = "read flat after a close whose reply was lost; its order was not listed"
        return _settle(result, Outcome.CLOSED, why, why=why)
    # No order of this run filled: it was not this run that closed it.
    why = "read flat after the close was refused or found nothing to close"
    return _settle(result, Outcome.ALREADY_FLAT, None, why=why)


def not_flat(result: TargetResult, why: str, *, watched: bool = False) -> Next:
    """Still open when following ended (FLAT_TIMEOUT, a stop, reads that failed)."""
    statuses = ", ".join(f"{o.id} {o.status}" for o in result.orders) or "no orders"
    remaining = result.remaining_quantity or "unknown"
    earlier = f"; before: {result.error}" if watched and result.error else ""
    _settle(result, Outcome.NOT_FLAT, f"{why}; remaining {remaining}; orders: {statuses}{earlier}")
    events.target_not_flat(
        account_id=result.account_id,
        instrument=result.instrument,
        remaining_quantity=result.remaining_quantity,
        error=result.error or why,
    )
    return Next.SETTLED


def _settle(
    result: TargetResult, outcome: Outcome, error: str | None, *, why: str | None = None
) -> Next:
    """The one place an outcome is set; `why`: said as `target_settled` (the one emitter).
    A target whose closing orders filled is priced here, and says so (`target_cost`)."""
    result.outcome = outcome
    result.error = error
    _price(result)
    if why is not None:
        events.target_settled(
            account_id=result.account_id,
            instrument=result.instrument,
            outcome=str(outcome),
            why=why,
            prices=result.price_fields(),
        )
    if result.filled_quantity is not None:
        events.target_cost(
            account_id=result.account_id,
            instrument=result.instrument,
            outcome=str(outcome),
            prices=result.price_fields(),
        )
    return Next.SETTLED


_PRICE_PLACES = Decimal("0.000001")
_BPS_PLACES = Decimal("0.01")


def _price(result: TargetResult) -> None:
    """The volume-weighted fill of the orders that closed it (its closing side's filled
    orders), and what that cost against the arrival midpoint: (mid - avg) x qty for a sell,
    (avg - mid) x qty for a buy, each times the contract multiplier (`worker.money`), so
    positive is money given up; bps of mid x qty. Left None without fills, the average (and
    cost) None when a filled order has no price, and the cost None when the multiplier is not
    known."""
    closing = _CLOSING_SIDES.get(result.side or "")
    filled = [
        o
        for o in result.orders
        if Decimal(o.filled_quantity) != 0 and (closing is None or o.side == closing)
    ]
    if not filled:
        return
    quantity = sum((abs(Decimal(o.filled_quantity)) for o in filled), Decimal(0))
    result.filled_quantity = str(quantity)
    if any(o.average_fill_price is None for o in filled):
        return
    paid = sum(
        (abs(Decimal(o.filled_quantity)) * Decimal(o.average_fill_price or 0) for o in filled),
        Decimal(0),
    )
    result.average_fill_price = format((paid / quantity).quantize(_PRICE_PLACES).normalize(), "f")
    mid = result.arrival.midpoint if result.arrival is not None else None
    if mid is None or not mid:
        return
    # Per unit of price: (mid - avg) x qty, as money once through the multiplier.
    given_up = mid * quantity - paid if filled[0].side == "SELL" else paid - mid * quantity
    cost = money(given_up, result.multiplier)
    if cost is None:
        return
    result.cost = format(cost, "f")
    result.cost_bps = str((given_up / (mid * quantity) * 10_000).quantize(_BPS_PLACES))


_CLOSING_SIDES = {"LONG": "SELL", "SHORT": "BUY"}
