"""The fan-out: a bounded pool of workers closing targets, and the stop deadline.

Each target goes to exactly one worker; once a stop is requested no new target starts, and those
running get `grace_s` before they are cancelled and reported as unknown. A target is never lost:
every one ends with an outcome, even when a worker dies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from worker.closing import target as life
from worker.closing.send import CloseContext, close_target
from worker.closing.target import NOT_STARTED, Next, Target
from worker.errors import JournalError, Unauthorized
from worker.observe import events
from worker.results import TargetResult
from worker.run.intents_ahead import IntentsAhead


async def fan_out(
    ctx: CloseContext,
    targets: Sequence[Target],
    *,
    workers: int,
    grace_s: float,
    on_result: Callable[[TargetResult], None] | None = None,
    on_abort: Callable[[str], None] | None = None,
    follow: Callable[[Target, TargetResult, Next], None] | None = None,
) -> list[TargetResult]:
    """Close every target; one result each, in the targets' order.

    Each target's close returns what is next for it (`Next`); one to follow or watch is handed
    to `follow`, which settles it. Without `follow` (tests of the fan-out alone) it is left
    without an outcome.
    """
    stop = ctx.stopping
    results = [t.result() for t in targets]
    if ctx.earlier_orders:  # a takeover: the job's earlier orders are in each result first
        for target, result in zip(targets, results, strict=True):
            earlier = ctx.earlier_orders.get((target.account_id, target.instrument_id.lower()))
            if earlier is not None:
                life.earlier_orders(ctx.journal, ctx.run_id, target, result, *earlier)
    started = [False] * len(targets)
    handed = [False] * len(targets)  # to following, which settles them
    queue = iter(range(len(targets)))
    ahead = IntentsAhead(ctx, targets, results, block=workers)

    async def worker() -> None:
        # The shared iterator hands each index to exactly one worker: no await between next()s.
        for i in queue:
            step = Next.SETTLED
            if stop.is_set():
                life.skipped(results[i])
            else:
                started[i] = True
                try:
                    await ahead.ready(i)
                    with events.bound_target(targets[i].account_id, targets[i].instrument):
                        step = await close_target(ctx, targets[i], results[i])
                except Unauthorized as err:
                    step = life.failed(results[i], f"credentials rejected: {err}")
                    if on_abort is not None:
                        on_abort(f"credentials rejected mid-run: {err}")
                    stop.set()
                except JournalError as err:
                    # Its intent is not on disk, so this attempt was not sent; no other may be.
                    step = _unrecorded(results[i], err)
                    if on_abort is not None:
                        on_abort(str(err))
                    stop.set()
                except asyncio.CancelledError:
                    _cancelled(results[i])
                    raise
                if follow is not None and step is not Next.SETTLED:
                    handed[i] = True
                    follow(targets[i], results[i], step)
                    continue
            if on_result is not None:
                on_result(results[i])

    pool: list[asyncio.Task[object]] = [
        asyncio.create_task(worker()) for _ in range(min(len(targets), workers))
    ]
    stop_waiter: asyncio.Task[object] = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[object]] = {*pool, stop_waiter}
    deadline: float | None = None
    while pending - {stop_waiter}:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, pending = await asyncio.wait(
            pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done - {stop_waiter}:
            bug = task.exception()
            if bug is not None:  # a fault of ours, not a target's outcome: stop as for SIGTERM
                events.internal_error(bug)
                if on_abort is not None:
                    on_abort(f"internal error: {type(bug).__name__}: {bug}")
                stop.set()
        if stop_waiter in done and deadline is None:
            events.stop_requested(grace_s)
            deadline = time.monotonic() + grace_s
        if deadline is not None and time.monotonic() >= deadline:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            break
    stop_waiter.cancel()
    for i, result in enumerate(results):
        if started[i] and not handed[i]:
            _cancelled(result)
        elif result.outcome is None and not handed[i]:  # never reached before the cancel
            life.skipped(result)
    return results


def _cancelled(result: TargetResult) -> Next:
    """A target cut off by the stop deadline: skipped if nothing was sent, else unknown."""
    return life.cut_off(
        result,
        not_sent=NOT_STARTED,
        unknown="the run stopped while this close was unanswered or being checked",
    )


def _unrecorded(result: TargetResult, err: JournalError) -> Next:
    """A target whose next send the journal could not record: that send never happened."""
    return life.cut_off(
        result, not_sent=f"not sent: {err}", unknown=f"an earlier attempt was sent, then {err}"
    )
