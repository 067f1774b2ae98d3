"""Send a position its close, exactly once: the path from a target to its orders.

    its own order still works? -> adopt it (`worker.closing.adopt`): follow it, send nothing
    earlier run sent a close?  -> look first (unless it sent under a client id: resend it)
    resting orders to cancel?  -> the sender cancels them first (submit_orders)
    an earlier run's order worked at the takeover's read, not adopted?
                               -> send nothing from that read: follow (it may have filled since)
    for each attempt (tenacity, at most MAX_ATTEMPTS):
        last attempt's fate unknown?  -> look (close_position; a client id is simply sent
                                         again); evidence of the close, flat, or busy -> follow
        stopping?                     -> end without sending
        record the intent (committed) -> send the close -> follow
    the last attempt's fate unknown?  -> one more look decides, or the target fails as unknown

A target handed on to following leaves here with no outcome: `closing.follow` reads its position
until it is flat. Whether an error allows a re-send, or needs a look first, is `worker.api.policy`'s
call; how a close is sent and found is the sender's (`worker.closing.modes`, CLOSE_VIA).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from tenacity import RetryCallState

from worker.api.models import Order
from worker.api.policy import RetryPolicy, aborts_run, looks_after_last, needs_look_before_resend
from worker.api.reads import Reader
from worker.closing import target as life
from worker.closing.evidence import Finding, Verdict, look
from worker.closing.modes import Sender
from worker.closing.sizing import after_earlier_orders, after_others_orders
from worker.closing.target import Next, Target
from worker.errors import (
    ApiError,
    LiquidatorError,
    LockLost,
    NotSent,
    OutcomeUnknown,
)
from worker.journal.store import Intent, Journal, Prior
from worker.observe import events
from worker.observe.counters import RunCounters
from worker.results import TargetResult


class _FateNotEstablished(LiquidatorError):
    """The look after an unknown outcome failed: the close may or may not have happened."""


@dataclass(frozen=True)
class CloseContext:
    run_id: str
    reader: Reader
    policy: RetryPolicy
    journal: Journal
    stopping: asyncio.Event
    server_now: Callable[[], datetime]
    lookback: timedelta  # how far before an attempt its orders may be stamped (clock skew)
    priors: dict[tuple[int, str], Prior]
    sender: Sender
    counters: RunCounters = field(default_factory=RunCounters)  # the run's, for its metrics
    # Per account, the orders that could still fill before the fan-out, of any age: others'
    # orders on a target's closing side are counted before its close is sized.
    working_before: dict[int, list[Order]] = field(default_factory=dict)
    # The accounts whose orders that snapshot read: no order older than it can work unseen.
    read_accounts: frozenset[int] = frozenset()
    # A run that took the job over: per position (account, instrument id in lower case), the
    # job's orders from earlier runs of it, and the read that found them (`run.takeover`).
    earlier_orders: dict[tuple[int, str], tuple[list[Order], str]] = field(default_factory=dict)


async def close_target(ctx: CloseContext, target: Target, result: TargetResult) -> Next:
    """Fill in `result` (made by the caller, so it survives cancellation); return what is next
    for it: settled, followed to flat (a close was sent or found), or watched."""
    adopted = ctx.sender.adopted(target)
    if adopted is not None:
        return life.adopted(
            ctx.journal, ctx.run_id, target, result, adopted.orders, adopted.request_id
        )
    # Priors are keyed in lower case: UUIDs are case-insensitive, spelled as each listing likes.
    prior = ctx.priors.get((target.account_id, target.instrument_id.lower()))
    # An earlier run's submission is resumed by its client id (sent again: 409 is found).
    if prior is not None and not (ctx.sender.idempotent and prior.generation is not None):
        try:
            # The earlier run's orders predate the snapshot: here evidence is side and quantity.
            ctx.counters.looks += 1
            finding = await look(
                ctx.reader, target, prior.since, reference=target.quantity, preexisting=()
            )
        except ApiError as err:
            return life.failed(result, f"an earlier run sent a close; could not check it: {err}")
        step = _settled_by(finding, ctx, target, result, why="an earlier run's close", prior=True)
        if step is not None:
            return step
    return await _close_with_retries(ctx, target, result)


async def _close_with_retries(ctx: CloseContext, target: Target, result: TargetResult) -> Next:
    since = ctx.server_now() - ctx.lookback
    unknown: OutcomeUnknown | None = None
    # The position as it stood when the last attempt was sent: what its close must match.
    reference = target.quantity

    def on_retry(state: RetryCallState, wait_s: float) -> None:
        err = state.outcome.exception() if state.outcome else None
        ctx.counters.retries += 1
        events.close_retry(
            account_id=target.account_id,
            instrument=target.instrument,
            attempt=state.attempt_number,
            reason=str(err),
            wait_s=wait_s,
            request_id=err.request_id if isinstance(err, ApiError) else None,
        )

    async def attempt() -> Next:
        """One try. After an unknown outcome it looks before it may send again."""
        nonlocal unknown, reference
        if unknown is not None and needs_look_before_resend(unknown, idempotent=idempotent):
            finding = await _look(ctx, target, result, since, reference)
            step = _settled_by(finding, ctx, target, result, why="a look after an unanswered close")
            if step is not None:
                return step
            unknown = None
            if finding.position is not None:
                reference = finding.position  # closed as it is now, never by a stale side
        if ctx.stopping.is_set():
            return life.stopped(result)
        if result.attempts == 0:
            await ctx.sender.prepare(target)  # e.g. its resting orders would not cancel
            earlier = ctx.earlier_orders.get((target.account_id, target.instrument_id.lower()))
            reference = after_earlier_orders(target, reference, earlier)
            others = ctx.working_before.get(target.account_id, [])
            reference = after_others_orders(target, reference, others, ctx.sender.idempotent)
            reference = ctx.sender.first_size(target, reference)
            if reference == 0:
                return Next.FOLLOW  # nothing sent: following waits for those orders, then decides
        try:
            sent = await send_one_close(ctx, target, result, since, reference)
        except OutcomeUnknown as err:
            unknown = err
            raise
        return Next.FOLLOW if sent is not None else life.stopped(result)

    idempotent = ctx.sender.idempotent
    try:
        return await ctx.policy.close(attempt, on_retry, idempotent=idempotent)
    except _FateNotEstablished as err:
        return life.failed(result, str(err))
    except ApiError as err:
        if aborts_run(err):
            raise
        return await _after_last_error(ctx, target, result, since, err)


async def _after_last_error(
    ctx: CloseContext, target: Target, result: TargetResult, since: datetime, err: ApiError
) -> Next:
    """Attempts are over: `worker.api.policy` says whether one more look decides the target."""
    if not looks_after_last(err):
        return life.failed(result, str(err), err)
    await ctx.policy.before_last_look(err, idempotent=ctx.sender.idempotent)
    try:
        finding = await _look(ctx, target, result, since, target.quantity)
    except _FateNotEstablished as look_err:
        return life.failed(result, str(look_err), err)
    step = _settled_by(finding, ctx, target, result, why="a look after the last attempt")
    if step is not None:
        return step
    if not isinstance(err, OutcomeUnknown):
        return life.failed(result, f"refused, and the position is still open: {err}", err)
    return life.failed(result, f"not closed after {result.attempts} attempts: {err}", err)


async def send_one_close(
    ctx: CloseContext,
    target: Target,
    result: TargetResult,
    since: datetime,
    position: Decimal,
) -> list[Order] | None:
    """Record the intent, send one close of `position` (signed, as last read), note its orders.

    The one step every close goes through (first close, re-send, residue close). Returns the
    reply's orders; None when a stop came first and nothing was sent. Raises `ApiError`.
    """
    intent = next_intent(ctx, target, result, since)
    await ctx.journal.record_intent(ctx.run_id, intent)
    life.sending(result, intent.attempt)
    try:
        sent = await ctx.sender.send(target, intent.client_id, position, ctx.stopping)
    except LockLost:
        life.not_sent(result)  # it never left this host
        raise
    except ApiError as err:
        if isinstance(err, NotSent) and ctx.stopping.is_set():
            life.stopped_unsent(ctx.journal, ctx.run_id, target, result)
            return None
        life.send_failed(ctx.journal, ctx.run_id, target, result, err)
        raise
    # A 409 on this run's first send of the target: the order under that id was created by an
    # earlier run, before this run's plan read the position.
    prior = sent.found and result.attempts == 1
    shown = life.CloseOrders(sent.orders, sent.request_id, prior=prior)
    life.sent(ctx.journal, ctx.run_id, target, result, shown, found=sent.found)
    return sent.orders


def next_intent(ctx: CloseContext, target: Target, result: TargetResult, since: datetime) -> Intent:
    """What the journal must hold before the target's next close is sent (its client id, if
    the sender sends under one). The fan-out records the first ones ahead (`run.intents_ahead`)."""
    named = ctx.sender.client_id(target, result)
    client_id, generation = named if named is not None else (None, 0)
    return Intent(
        target.account_id, target.instrument_id, result.attempts + 1, since, client_id, generation
    )


async def _look(
    ctx: CloseContext, target: Target, result: TargetResult, since: datetime, reference: Decimal
) -> Finding:
    """Look after an unknown outcome; `_FateNotEstablished` when the account cannot be read."""
    ctx.counters.looks += 1
    try:
        return await ctx.sender.look(target, result, since, reference)
    except ApiError as err:
        raise _FateNotEstablished(
            f"outcome unknown: the close may have been applied (request_ids:"
            f" {', '.join(result.request_ids) or 'none'}) and the account could not be read to"
            f" find out: {err}"
        ) from None


def _settled_by(
    finding: Finding,
    ctx: CloseContext,
    target: Target,
    result: TargetResult,
    *,
    why: str,
    prior: bool = False,
) -> Next | None:
    """What is next when the look ends this target's sending; None: sending goes on.

    A look before this run sent anything that finds the position flat settles it here.
    """
    life.looked(result, finding.request_id)
    if finding.verdict is Verdict.CLOSED:
        shown = life.CloseOrders(finding.orders, finding.request_id, prior=prior)
        return life.found(ctx.journal, ctx.run_id, target, result, shown)
    if finding.verdict is Verdict.BUSY:
        return life.busy(result)  # nothing is sent while an order can still fill
    if finding.verdict is Verdict.FLAT:
        return life.read_flat(result, why)
    return None
