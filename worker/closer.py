"""Close one position, exactly once: the path from a target to its orders.

    earlier run sent a close?  -> look first; closed or flat ends here
    for each attempt (tenacity from the first failure on, at most MAX_ATTEMPTS):
        last attempt's fate unknown?  -> look; closed or flat ends here
        stopping?                     -> end without sending
        record the intent (committed) -> send the close -> closed
    the last attempt's fate unknown?  -> one more look decides, or the target fails as unknown

Whether an error allows a re-send, or needs a look first, is `worker.policy`'s call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenacity import RetryCallState

from worker import events
from worker.api import TradingApi
from worker.errors import ApiError, LiquidatorError, NotFound, NotSent, OutcomeUnknown
from worker.journal import Journal, Prior
from worker.models import Order, Outcome
from worker.plan import Target
from worker.policy import RetryPolicy, aborts_run, needs_look_before_resend
from worker.reads import Reader
from worker.reconcile import Finding, Verdict, look
from worker.report import OrderSummary, TargetResult


class _FateNotEstablished(LiquidatorError):
    """The look after an unknown outcome failed: the close may or may not have happened."""


@dataclass(frozen=True)
class CloseContext:
    run_id: str
    api: TradingApi
    reader: Reader
    policy: RetryPolicy
    journal: Journal
    stopping: asyncio.Event
    server_now: Callable[[], datetime]
    lookback: timedelta  # how far before an attempt its orders may be stamped (clock skew)
    priors: dict[tuple[int, str], Prior]


async def close_target(ctx: CloseContext, target: Target, result: TargetResult) -> TargetResult:
    """Fill in `result` (made by the caller, so it survives cancellation) and return it."""
    prior = ctx.priors.get((target.account_id, target.instrument_id))
    if prior is not None:
        try:
            finding = await look(ctx.reader, target, prior.since)
        except ApiError as err:
            return _failed(result, f"an earlier run sent a close; could not check it: {err}")
        if _settled_by(finding, ctx, target, result, why="an earlier run's close"):
            return result
    return await _close_with_retries(ctx, target, result)


async def _close_with_retries(
    ctx: CloseContext, target: Target, result: TargetResult
) -> TargetResult:
    since = ctx.server_now() - ctx.lookback
    unknown: OutcomeUnknown | None = None

    def on_retry(state: RetryCallState, wait_s: float) -> None:
        err = state.outcome.exception() if state.outcome else None
        ctx.reader.tally.retries += 1
        events.close_retry(
            account_id=target.account_id,
            instrument=target.instrument,
            attempt=state.attempt_number,
            reason=str(err),
            wait_s=wait_s,
            request_id=err.request_id if isinstance(err, ApiError) else None,
        )

    async def attempt() -> TargetResult:
        """One try. After an unknown outcome it looks before it may send again."""
        nonlocal unknown
        if unknown is not None:
            if await _look_settles(ctx, target, result, since):
                return result
            unknown = None
        if ctx.stopping.is_set():
            return _stopped(result)
        try:
            sent = await _send_close(ctx, target, result, since)
        except OutcomeUnknown as err:
            unknown = err
            raise
        return sent if sent is not None else _stopped(result)

    try:
        return await ctx.policy.close(attempt, on_retry)
    except _FateNotEstablished as err:
        return _failed(result, str(err))
    except ApiError as err:
        if aborts_run(err):
            raise
        return await _after_last_error(ctx, target, result, since, err)


async def _after_last_error(
    ctx: CloseContext, target: Target, result: TargetResult, since: datetime, err: ApiError
) -> TargetResult:
    """Attempts are over. A close that may have happened, a 404 or a 409 gets one last look.

    404: the position may have gone flat meanwhile. 409 (duplicate): a close may be pending.
    """
    if not (needs_look_before_resend(err) or isinstance(err, NotFound) or err.status == 409):
        return _failed(result, str(err), err)
    if needs_look_before_resend(err):
        await ctx.policy.sleep(ctx.policy.settle_s)
    try:
        if await _look_settles(ctx, target, result, since):
            return result
    except _FateNotEstablished as look_err:
        return _failed(result, str(look_err), err)
    if not needs_look_before_resend(err):
        return _failed(result, f"refused, and the position is still open: {err}", err)
    return _failed(result, f"not closed after {result.attempts} attempts: {err}", err)


async def _send_close(
    ctx: CloseContext, target: Target, result: TargetResult, since: datetime
) -> TargetResult | None:
    """Record the intent, send the close. None: a stop came first and nothing was sent."""
    attempt = result.attempts + 1
    await ctx.journal.intent(ctx.run_id, target.account_id, target.instrument_id, attempt, since)
    result.attempts = attempt
    try:
        reply = await ctx.api.close_position(
            target.account_id,
            target.instrument_id,
            cancel_orders=target.cancel_orders,
            unless=ctx.stopping,
        )
    except ApiError as err:
        if isinstance(err, NotSent) and ctx.stopping.is_set():
            result.attempts -= 1  # it never left this host
            ctx.journal.attempt_result(
                ctx.run_id, target.account_id, target.instrument_id, attempt, None, "stopped"
            )
            return None
        if err.request_id:
            result.request_ids.append(err.request_id)
        ctx.journal.attempt_result(
            ctx.run_id,
            target.account_id,
            target.instrument_id,
            attempt,
            err.request_id,
            type(err).__name__,
        )
        raise
    result.request_ids.append(reply.request_id)
    ctx.journal.attempt_result(
        ctx.run_id, target.account_id, target.instrument_id, attempt, reply.request_id, "ok"
    )
    _record_orders(ctx, target, result, reply.data, reply.request_id, reconciled=False)
    return result.settle(Outcome.CLOSED)


async def _look_settles(
    ctx: CloseContext, target: Target, result: TargetResult, since: datetime
) -> bool:
    """Look after an unknown outcome. True when that settles the target (closed or flat)."""
    try:
        finding = await look(ctx.reader, target, since)
    except ApiError as err:
        raise _FateNotEstablished(
            f"outcome unknown: the close may have been applied (request_ids:"
            f" {', '.join(result.request_ids) or 'none'}) and the account could not be read to"
            f" find out: {err}"
        ) from None
    return _settled_by(finding, ctx, target, result, why="a look after an unanswered close")


def _settled_by(
    finding: Finding, ctx: CloseContext, target: Target, result: TargetResult, *, why: str
) -> bool:
    result.request_ids.append(finding.request_id)
    if finding.verdict is Verdict.CLOSED:
        result.reconciled = True
        _record_orders(ctx, target, result, finding.orders, finding.request_id, reconciled=True)
        result.settle(Outcome.CLOSED)
        return True
    if finding.verdict is Verdict.FLAT:
        result.reconciled = True
        result.settle(Outcome.ALREADY_FLAT)
        events.target_settled(
            account_id=target.account_id,
            instrument=target.instrument,
            outcome=str(Outcome.ALREADY_FLAT),
            why=f"{why}: no closing order, position flat",
        )
        return True
    return False


def _record_orders(
    ctx: CloseContext,
    target: Target,
    result: TargetResult,
    orders: list[Order],
    request_id: str,
    *,
    reconciled: bool,
) -> None:
    result.orders.extend(OrderSummary.of(o) for o in orders)
    ctx.journal.orders(
        ctx.run_id,
        target.account_id,
        target.instrument_id,
        orders,
        request_id,
        reconciled=reconciled,
    )
    for order in orders:
        events.close_order(
            order,
            account_id=target.account_id,
            instrument_id=target.instrument_id,
            request_id=request_id,
            attempt=result.attempts,
            reconciled=reconciled,
        )


def _stopped(result: TargetResult) -> TargetResult:
    if result.attempts == 0:
        return result.settle(Outcome.SKIPPED, "run stopped before this target was sent")
    return _failed(result, "run stopped before the close could be sent again")


def _failed(result: TargetResult, error: str, err: ApiError | None = None) -> TargetResult:
    result.settle(Outcome.FAILED, error)
    events.close_failed(
        account_id=result.account_id,
        instrument=result.instrument,
        status=err.status if err is not None else None,
        error=error,
        request_id=(err.request_id if err is not None else None)
        or (result.request_ids[-1] if result.request_ids else None),
        attempts=result.attempts,
    )
    return result
