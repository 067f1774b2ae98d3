"""Follow every sent close until its position reads zero at the server, or FLAT_TIMEOUT passes.

One task per account polls in three stages: read (`closing.follow_read`: the account's orders,
positions and fills), decide (`closing.follow_decide`: per target, flat, wait or a residue
close, as a value) and act (`closing.follow_act`: the residue close, through the same journaled
step as every close, and the settlement). This module is the loop: when to read, how long to
pause, and when time is up. It never sends while stopping. Each settled result comes out of
`Follower.settled` as a value, in the order the targets settled.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from datetime import datetime

from worker.api.models import WORKING_STATUSES
from worker.api.policy import REAL_TIME, TimeSource
from worker.closing.books import Books
from worker.closing.evidence import Step
from worker.closing.follow_act import Acts, Handback, SendClose, send_residue
from worker.closing.follow_decide import Decider, anchor
from worker.closing.follow_read import AccountReads, Read
from worker.closing.followed import (
    Followed,
    FollowSettings,
    job_fills,
    resting_pause,
    signed_fill,
    wave_pause,
)
from worker.closing.send import CloseContext
from worker.closing.stop import CutOff, FirstReason, Grace
from worker.closing.target import Next, Target
from worker.errors import ApiError, Unauthorized
from worker.observe import events
from worker.results import Fate, TargetResult

__all__ = ["SETTLE_S", "FollowSettings", "Follower"]

# The fan-out's end cuts a pause under way: the run's end waits on that poll. A fill it finds
# still on its way is read again this much later (then pauses double while nothing settles).
SETTLE_S = 0.05


class Follower:
    def __init__(
        self,
        ctx: CloseContext,
        settings: FollowSettings,
        *,
        since: datetime,
        send_close: SendClose | None = None,
        stopped_by: FirstReason | None = None,
        timing: TimeSource = REAL_TIME,
    ) -> None:
        """`send_close`: how a residue close is sent (`follow_act.send_residue` unless given);
        `stopped_by`: told why, when following stops the run (the credentials rejected)."""
        clock, sleep = timing.clock, timing.sleep
        self._ctx = ctx
        self._settings = settings
        self._stopped_by = stopped_by
        self._clock = clock
        self._sleep = sleep
        self._pending: dict[int, dict[str, Followed]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._pokes: dict[int, asyncio.Event] = {}  # read this account now (`poke`)
        self._last_look = asyncio.Event()  # stopping, and the fan-out is over: one more read
        self._all_sent = asyncio.Event()  # the fan-out is over
        # Each result as it settles; None once `finish` has settled every one.
        self._settled: asyncio.Queue[TargetResult | None] = asyncio.Queue()
        self._grace = Grace(ctx.stopping, settings.grace_s, clock, sleep)
        self._reads = AccountReads(ctx, settings, since=since, clock=clock)
        self._decider = Decider(ctx, settings, clock)
        self._act = Acts(
            ctx,
            self._pending,
            send_close=send_close or functools.partial(send_residue, ctx),
            grace=self._grace,
            clock=clock,
            handback=Handback(self._settled, stopped_by),
        )

    def follow(self, target: Target, result: TargetResult, step: Next = Next.FOLLOW) -> None:
        """Hand over a target that was sent a close (or found one); its result has no outcome.

        `Next.WATCH`: it already failed (its last close's fate unknown), and is only watched.
        """
        pending = self._pending.setdefault(target.account_id, {})
        watch_only = step is Next.WATCH
        followed = Followed(
            target,
            result,
            self._clock() + self._settings.timeout_s,
            Books.of(target, result),
            watch_only=watch_only,
            first_unsent=result.attempts == 0,
            position_ref=target.quantity,
            # An earlier run's orders (found by a look, a 409 on the first send, or adopted)
            # filled so far before the plan read the position: those fills are in it. A
            # takeover knows what they had filled at that read (`Target.prior_fills`).
            fills_ref=job_fills(result, prior_only=True)
            if target.prior_fills is None
            else target.prior_fills,
        )
        # Others' orders on the instrument that could still fill before the fan-out: their
        # fills from then on move the position too (counted, cancel_orders off).
        for o in self._ctx.working_before.get(target.account_id, []):
            if (o.instrument_id or "").lower() == target.instrument_id.lower():
                followed.others_ref[o.id] = followed.others_now[o.id] = signed_fill(o)
        anchor(followed, self._ctx.sender)
        if watch_only or (result.fate is Fate.UNKNOWN and not result.orders):
            # Its last close may have landed unseen: find it, or prove it did nothing, first.
            followed.unresolved = followed.position_ref or target.quantity
            followed.quiet_until = self._clock() + self._ctx.policy.settle_s
        pending[target.instrument_id] = followed
        task = self._tasks.get(target.account_id)
        if task is None or task.done():
            self._tasks[target.account_id] = asyncio.create_task(
                self._follow_account(target.account_id)
            )

    async def settled(self) -> AsyncIterator[TargetResult]:
        """Each followed target's result once it settles, in that order, as it happens; the
        iteration ends once `finish` has settled every target."""
        while (result := await self._settled.get()) is not None:
            yield result

    def all_sent(self) -> None:
        """The fan-out is over: a pause under way ends now."""
        self._all_sent.set()

    def working_orders(self) -> int:
        """The orders of the targets still followed that were working when last read."""
        return sum(
            1
            for pending in self._pending.values()
            for followed in pending.values()
            if not followed.watch_only
            for order in followed.result.orders
            if order.status in WORKING_STATUSES
        )

    def poke(self, account_id: int) -> None:
        """Read the account now, not after the pause under way (protected: its limits were
        cancelled, and their rests wait on that read)."""
        self._pokes.setdefault(account_id, asyncio.Event()).set()

    def others_working(self, account_id: int, instrument_id: str) -> bool:
        """Whether another's order may work on the instrument, as the last working-orders read
        (or the orders snapshot before the fan-out) showed: a cancel by instrument would take
        it too. True when the target is not followed (nothing read)."""
        followed = self._pending.get(account_id, {}).get(instrument_id)
        if followed is None:
            return True
        return any(i not in followed.others_done for i in followed.others_now)

    def last_look(self) -> None:
        """The run is stopping and nothing is in flight: read once more, then settle."""
        self._last_look.set()

    def abandon(self) -> None:
        """End following now (the run itself failed); `finish` then settles what is left."""
        for task in self._tasks.values():
            task.cancel()

    async def finish(self) -> None:
        """Wait until every followed target has an outcome. Cancelling ends following at once."""
        try:
            while any(not t.done() for t in self._tasks.values()):
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            for account_id, task in self._tasks.items():
                self._account_ended(account_id, task)
            self._settled.put_nowait(None)

    def _account_ended(self, account_id: int, task: asyncio.Task[None]) -> None:
        """An account's task is over: its fault stops the run, and what it left is not flat."""
        bug = None if task.cancelled() else task.exception()
        if isinstance(bug, Unauthorized):
            if self._stopped_by is not None:
                self._stopped_by(f"credentials rejected mid-run: {bug}")
        elif bug is not None:
            events.internal_error(bug)
            if self._stopped_by is not None:
                self._stopped_by(f"internal error: {type(bug).__name__}: {bug}")
        for followed in list(self._pending.get(account_id, {}).values()):
            self._act.not_flat(followed, "following was cut off before the position read flat")

    async def _follow_account(self, account_id: int) -> None:
        pending = self._pending[account_id]
        pause = self._settings.first_pause_s
        poked = self._pokes.setdefault(account_id, asyncio.Event())
        ended = False  # the fan-out was over when the last read began
        while pending:
            # The fan-out's end cuts a pause short, or, if it came during the last read (or
            # before this follower's first), skips the next: the run's end waits on this read.
            cut = not ended and self._all_sent.is_set() and not self._last_look.is_set()
            if not cut and not self._last_look.is_set():
                longest = max(pause, self._held_pause(pending))
                wait = min(longest, max(0.0, self._next_deadline(pending) - self._clock()))
                cut = not await self._pause(wait, poked) and not self._last_look.is_set()
            was_poked = poked.is_set()
            poked.clear()
            ended = self._all_sent.is_set()
            final = self._last_look.is_set()
            before = len(pending)
            read = list(pending)  # targets handed over during the read wait for the next one
            try:
                got = await self._grace.within(
                    self._reads.read(account_id, pending, read, final=final)
                )
            except CutOff:
                self._act.cut_off(pending, read)
                self._expire(pending, "")
                continue
            except Unauthorized:
                raise
            except ApiError as err:
                self._act.unread(pending, read, err, final=final)
                self._expire(pending, f"the account could not be read: {err}")
                continue
            await self._decide_all(pending, read, got)
            if final:
                self._act.after_last_read(pending, read)
            self._expire(pending, "")
            # Pauses grow while nothing settles (slow fills); a poll that settled some, or
            # found new targets handed over meanwhile, is followed promptly by the next one.
            # Read at once after the fan-out, the last fills get one more read SETTLE_S on.
            settled = len(pending) < before or len(pending) > len(read)
            if settled or was_poked:
                pause = self._settings.first_pause_s
            elif cut:
                pause = min(SETTLE_S, self._settings.first_pause_s)
            else:
                pause = min(pause * 2, self._settings.max_pause_s)

    async def _decide_all(self, pending: dict[str, Followed], read: list[str], got: Read) -> None:
        """Decided together: the residues one poll finds (a protected deadline's rests) then
        reach the batcher at once and go out in as few POSTs as can be."""
        decided = await asyncio.gather(
            *(self._decide_and_act(pending[iid], iid, got) for iid in read),
            return_exceptions=True,
        )
        for outcome in decided:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _decide_and_act(self, followed: Followed, iid: str, got: Read) -> None:
        decision = await self._decider.decide(
            followed, got.position(iid), got.orders_of(iid), got.request_id, got.fills_of(iid)
        )
        if decision.step is Step.FLAT:
            self._act.flat(followed, by_unfound_close=decision.by_unfound_close)
        elif decision.step is Step.RESIDUE:
            await self._act.residue(followed, decision.position)

    def _held_pause(self, pending: dict[str, Followed]) -> float:
        """How long nothing is worth reading while every target rests or waits for a wave."""
        if self._ctx.stopping.is_set():
            return 0.0
        now = self._clock()
        resting = resting_pause(pending.values(), self._settings.resting_pause_s)
        return max(resting, wave_pause(pending.values(), self._ctx.sender, now))

    async def _pause(self, seconds: float, poked: asyncio.Event) -> bool:
        """Sleep between polls; False when the last look or the fan-out's end cut it short (a
        poke ends it too, and the poll goes as after a full pause)."""
        told = [self._last_look]
        if not self._all_sent.is_set():  # (once over, it cuts nothing more)
            told.append(self._all_sent)
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        waits = [asyncio.ensure_future(event.wait()) for event in (*told, poked)]
        try:
            await asyncio.wait({sleeping, *waits}, return_when=asyncio.FIRST_COMPLETED)
            return not any(event.is_set() for event in told)
        finally:
            sleeping.cancel()
            for wait in waits:
                wait.cancel()

    def _next_deadline(self, pending: dict[str, Followed]) -> float:
        soonest = min(f.deadline for f in pending.values())
        if self._ctx.stopping.is_set():
            soonest = min(soonest, self._grace.ends())
        return soonest

    def _expire(self, pending: dict[str, Followed], why: str) -> None:
        """Settle every target whose time is up as not flat."""
        if not pending:
            return
        now = self._clock()
        stopped = self._ctx.stopping.is_set() and now >= self._next_deadline(pending)
        self._act.expire(pending, why, now=now, stopped=stopped, timeout_s=self._settings.timeout_s)
