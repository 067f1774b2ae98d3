"""The transitions that settle a target: planned (already flat, not held, guarded, skipped,
market closed), failed or stopped, and read flat or not flat when following ends."""

from __future__ import annotations

from decimal import Decimal

from worker.closing.target.settling import settle
from worker.closing.target.value import NOT_STARTED, Next
from worker.errors import ApiError
from worker.observe import events
from worker.results import Fate, Outcome, TargetResult

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
    return settle(result, Outcome.ALREADY_FLAT, None, why=why)


def not_held(
    result: TargetResult, why: str, *, request_id: str, instrument_id: str, symbol: str
) -> Next:
    """A named instrument the API knows and the account does not hold (nor held earlier in
    this job): nothing sent; `why` names what the account holds on that underlying. It is its
    error too, so the summary and the report show it."""
    result.request_ids.append(request_id)
    result.instrument_id, result.symbol = instrument_id, symbol
    return settle(result, Outcome.NOT_HELD, why, why=why)


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
    return settle(result, Outcome.GUARDED, why, why=why)


def skipped(result: TargetResult, why: str = NOT_STARTED) -> Next:
    """Never sent: the run ended or stopped before this target's turn."""
    return settle(result, Outcome.SKIPPED, why)


def market_closed(result: TargetResult, why: str) -> Next:
    """The run was skipped: the market is closed."""
    return settle(result, Outcome.MARKET_CLOSED, why)


# -- failing and stopping ------------------------------------------------------------------


def failed(result: TargetResult, error: str, err: ApiError | None = None) -> Next:
    """Failed: said at once (`close_failed`), with the status and request_id when known."""
    settle(result, Outcome.FAILED, error)
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
    result.unanswered += 1
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


# -- following ended ------------------------------------------------------------------------


def flat(result: TargetResult, *, by_unfound_close: bool = False) -> Next:
    """Read flat after the job's close: closed when an order of the run filled."""
    result.remaining_quantity = None
    if any(Decimal(o.filled_quantity) != 0 for o in result.orders):
        return settle(result, Outcome.CLOSED, None)
    if by_unfound_close:
        # Flat after a close of the job's whose reply was lost and whose order no listing
        # showed: not `already_flat` (the job sent a close), and said so.
        why = "read flat after a close whose reply was lost; its order was not listed"
        return settle(result, Outcome.CLOSED, why, why=why)
    # No order of this run filled: it was not this run that closed it.
    why = "read flat after the close was refused or found nothing to close"
    return settle(result, Outcome.ALREADY_FLAT, None, why=why)


def not_flat(result: TargetResult, why: str, *, watched: bool = False) -> Next:
    """Still open when following ended (FLAT_TIMEOUT, a stop, reads that failed)."""
    statuses = ", ".join(f"{o.id} {o.status}" for o in result.orders) or "no orders"
    remaining = result.remaining_quantity or "unknown"
    earlier = f"; before: {result.error}" if watched and result.error else ""
    settle(result, Outcome.NOT_FLAT, f"{why}; remaining {remaining}; orders: {statuses}{earlier}")
    events.target_not_flat(
        account_id=result.account_id,
        instrument=result.instrument,
        remaining_quantity=result.remaining_quantity,
        error=result.error or why,
    )
    return Next.SETTLED
