"""The transitions while a close is in flight: sent, failed to send, adopted, looked for and
found, and followed (the position read, residue closes counted). Each returns `Next`; those that
settle go through `worker.closing.target.settling`."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from worker.api.models import Order
from worker.closing.target.orders import note_order, record_orders
from worker.closing.target.settling import settle
from worker.closing.target.value import CloseOrders, JournalRecords, Next, Target
from worker.errors import ApiError, NotSent, RateLimited, Rejected
from worker.observe import events
from worker.results import Fate, Outcome, TargetResult


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
    shown: CloseOrders,
    *,
    found: bool,
) -> Next:
    """The close was applied (its reply, or its client id's order found): follow it to flat."""
    orders, request_id = shown.orders, shown.request_id
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
    record_orders(journal, run_id, target, result, shown, reconciled=found)
    iid = target.instrument_id.lower()
    if not any(o.instrument_id is None or o.instrument_id.lower() == iid for o in orders):
        result.unanswered += 1  # a reply that shows no order of this close: its order is unknown
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
    result.unanswered += result.fate is Fate.UNKNOWN
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
    record_orders(journal, run_id, target, result, CloseOrders(orders, request_id), reconciled=True)
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
    shown = CloseOrders(orders, request_id, prior=True)
    record_orders(journal, run_id, target, result, shown, reconciled=True)


def closed_earlier(result: TargetResult, orders: Sequence[Order], request_id: str) -> Next:
    """Read flat before this run sent anything, after the job's orders from an earlier run:
    `closed` by them when they filled, with them and their cost; else already flat."""
    result.reconciled = True
    if request_id:
        result.request_ids.append(request_id)
    for order in orders:
        note_order(result, order, own=False, prior=True)
    if any(Decimal(o.filled_quantity) != 0 for o in result.orders):
        return settle(result, Outcome.CLOSED, None, why="closed by an earlier run's orders")
    return settle(
        result, Outcome.ALREADY_FLAT, None, why="flat; the earlier run's orders filled nothing"
    )


def looked(result: TargetResult, request_id: str) -> None:
    """A look at the server (orders and position) was answered."""
    result.request_ids.append(request_id)


def found(
    journal: JournalRecords, run_id: str, target: Target, result: TargetResult, shown: CloseOrders
) -> Next:
    """A look found the close (evidence it is ours): no re-send, follow it."""
    result.reconciled = True
    result.fate = Fate.APPLIED
    record_orders(
        journal,
        run_id,
        target,
        result,
        shown,
        reconciled=True,
    )
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
    return settle(result, Outcome.ALREADY_FLAT, None, why=f"{why}: no closing order, position flat")


# -- following ----------------------------------------------------------------------------


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
    result.unanswered += 1
