"""The fan-out: a bounded pool of workers closing targets, and the stop deadline.

Each target goes to exactly one worker; once a stop is requested no new target starts, and those
running get `grace_s` before they are cancelled and reported as unknown. A target is never lost:
every one ends with an outcome, even when a worker dies. A target its close settles is recorded
here (`Bookkeeper.record`); one to follow or watch is handed over (`Handover`), and recorded once
following yields it settled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from worker.closing import target as life
from worker.closing.follow import Follower
from worker.closing.protect import Protector
from worker.closing.send import CloseContext, close_target
from worker.closing.target import NOT_STARTED, Next, Target
from worker.errors import JournalError, Unauthorized
from worker.observe import events
from worker.results import TargetResult
from worker.run.bookkeeping import Bookkeeper
from worker.run.intents_ahead import IntentsAhead


@dataclass(frozen=True)
class Pool:
    """How many closes are in flight at once, and how long those running get after a stop."""

    workers: int
    grace_s: float


@dataclass(frozen=True)
class Handover:
    """Where a sent close goes: following settles it; the protected style watches its limit."""

    follower: Follower
    protector: Protector | None = None

    def hand_over(self, target: Target, result: TargetResult, step: Next) -> None:
        self.follower.follow(target, result, step)
        if self.protector is not None:
            self.protector.watch(target, result)


async def fan_out(
    ctx: CloseContext,
    targets: Sequence[Target],
    pool: Pool,
    books: Bookkeeper,
    handover: Handover | None = None,
) -> list[TargetResult]:
    """Close every target; one result each, in the targets' order.

    Each target's close returns what is next for it (`Next`); one to follow or watch goes to
    `handover`, which settles it. Without one it is left without an outcome.
    """
    fan = _FanOut(ctx, targets, pool, books, handover)
    fan.earlier_orders()
    tasks = [asyncio.create_task(fan.worker()) for _ in range(min(len(targets), pool.workers))]
    await fan.supervise(tasks)
    fan.settle_the_rest()
    return fan.results


class _FanOut:
    """One fan-out's state: each target's result, whether it started, whether it was handed on."""

    def __init__(
        self,
        ctx: CloseContext,
        targets: Sequence[Target],
        pool: Pool,
        books: Bookkeeper,
        handover: Handover | None,
    ) -> None:
        self._ctx, self._targets, self._pool = ctx, targets, pool
        self._books, self._handover = books, handover
        self.results = [t.result() for t in targets]
        self._started = [False] * len(targets)
        self._handed = [False] * len(targets)  # to following, which settles them
        self._queue = iter(range(len(targets)))
        self._ahead = IntentsAhead(ctx, targets, self.results, block=pool.workers)

    def earlier_orders(self) -> None:
        """A takeover: the job's earlier orders are in each result first."""
        ctx = self._ctx
        if not ctx.earlier_orders:
            return
        for target, result in zip(self._targets, self.results, strict=True):
            earlier = ctx.earlier_orders.get((target.account_id, target.instrument_id.lower()))
            if earlier is not None:
                life.earlier_orders(ctx.journal, ctx.run_id, target, result, *earlier)

    async def worker(self) -> None:
        # The shared iterator hands each index to exactly one worker: no await between next()s.
        for i in self._queue:
            if self._ctx.stopping.is_set():
                life.skipped(self.results[i])
                step = Next.SETTLED
            else:
                self._started[i] = True
                step = await self._close(i)
            if self._handover is not None and step is not Next.SETTLED:
                self._handed[i] = True
                self._handover.hand_over(self._targets[i], self.results[i], step)
            else:
                self._books.record(self.results[i])

    async def _close(self, i: int) -> Next:
        """One target's close, sent once the intents ahead of it are on disk."""
        target, result = self._targets[i], self.results[i]
        try:
            await self._ahead.ready(i)
            with events.bound_target(target.account_id, target.instrument):
                return await close_target(self._ctx, target, result)
        except Unauthorized as err:
            step = life.failed(result, f"credentials rejected: {err}")
            self._books.stop(f"credentials rejected mid-run: {err}")
            return step
        except JournalError as err:
            # Its intent is not on disk, so this attempt was not sent; no other may be.
            step = _unrecorded(result, err)
            self._books.stop(str(err))
            return step
        except asyncio.CancelledError:
            _cancelled(result)
            raise

    async def supervise(self, pool: list[asyncio.Task[None]]) -> None:
        """Until every worker is done: a worker's fault stops the run as SIGTERM does, and a
        stop gives those running `grace_s` before they are cancelled."""
        stop = self._ctx.stopping
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
                if bug is not None:  # a fault of ours, not a target's outcome
                    events.internal_error(bug)
                    self._books.stop(f"internal error: {type(bug).__name__}: {bug}")
            if stop_waiter in done and deadline is None:
                events.stop_requested(self._pool.grace_s)
                deadline = time.monotonic() + self._pool.grace_s
            if deadline is not None and time.monotonic() >= deadline:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
        stop_waiter.cancel()

    def settle_the_rest(self) -> None:
        """What the stop deadline cut off, settled (not recorded: the run's end records every
        outcome again when a stop came)."""
        for i, result in enumerate(self.results):
            if self._started[i] and not self._handed[i]:
                _cancelled(result)
            elif result.outcome is None and not self._handed[i]:  # never reached
                life.skipped(result)


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
