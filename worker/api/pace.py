"""How fast requests may go: a bound on requests in flight and on requests per second.

Every request takes a `Pacer.slot(priority)`: sends are spaced evenly, a 429 halves the pace for
the whole run (recovering additively) and its capped Retry-After pauses every send, and a stop ends
that pause at once. When requests wait, the next turn goes to the most urgent class (`CHANGE`:
order entry, cancels, escalations; then `REPLACE`; then `READ`), first come first served within a
class: under a rate limit, reads share what changes leave, so a deadline's cancels and rests never
queue behind following's polls. This module never decides whether a request is retried.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from worker.api.policy import REAL_TIME, RETRY_AFTER_CAP_S, TimeSource
from worker.errors import RateLimited

# Spacing is 2% wider than 1/rate: clock jitter and late wake-ups then cannot put rate+1 sends
# into one second at the server.
_SPACING_MARGIN = 1.02
_MIN_RATE = 1.0
# After a decrease, wait this long before reacting to another 429: the ones already in flight
# were sent at the old pace and say nothing new.
_DECREASE_COOLDOWN_S = 1.0
_RECOVERY_PERIOD_S = 1.0

# Priority classes, most urgent first.
CHANGE = 0  # order entry, cancels, escalations' rests
REPLACE = 1  # re-prices
READ = 2  # everything that only reads
# At least one turn in this many goes to a waiting read, however many changes wait.
READ_SHARE = 10

PaceListener = Callable[[float | None, float, str], None]
"""Called as (old_rate, new_rate, reason) when the pace changes."""


class Pacer:
    def __init__(
        self,
        concurrency: int,
        rate_limit: float,
        *,
        timing: TimeSource = REAL_TIME,
        on_change: PaceListener | None = None,
        retry_after_cap_s: float = RETRY_AFTER_CAP_S,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._concurrency = concurrency
        self._in_flight = 0
        self._freed = asyncio.Event()  # a place in flight was given back
        # Senders waiting for a turn, one queue per priority class, served by one pump task.
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque(), deque())
        self._turns_without_read = 0
        self._pump: asyncio.Task[None] | None = None
        self._retry_after_cap_s = retry_after_cap_s
        self._stop = stop
        # Retry-After: no send before this (clock() time), unless a stop came.
        self._hold_until = float("-inf")
        self._ceiling = rate_limit if rate_limit > 0 else None
        self.rate: float | None = self._ceiling  # current requests/second; None = unlimited
        self._clock = timing.clock
        self._sleep = timing.sleep
        self._on_change = on_change
        self._next_send = 0.0
        self._last_change = timing.clock()
        self._last_decrease = float("-inf")
        self._recovery_step = 1.0
        self._recent_sends: deque[float] = deque()
        self.decreases = 0

    def slot(self, priority: int = READ) -> _Slot:
        """Hold one of the in-flight places, sent no sooner than the pace allows and after
        every waiting sender of a more urgent class."""
        return _Slot(self, priority)

    @property
    def waiting(self) -> int:
        """Senders waiting for a turn now."""
        return sum(1 for queue in self._waiting for f in queue if not f.done())

    async def _take_turn(self, priority: int) -> None:
        """Return holding a place in flight, at this sender's turn."""
        now = self._clock()
        if (
            not any(self._waiting)
            and self._in_flight < self._concurrency
            and now >= self._hold_until
            and now >= self._next_send
        ):
            self._grant(now)  # nobody waits and the pace allows it: no queue, no task
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[priority].append(turn)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._serve())
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # granted as it was cancelled: give the place back
            raise

    async def _serve(self) -> None:
        """Give turns, one spacing apart, to the most urgent waiting sender."""
        while any(self._waiting):
            # The hold first, then a place in flight, then a turn in the spacing: senders
            # released together by the end of a hold still go out one spacing apart.
            await self._wait_out_hold()
            while self._in_flight >= self._concurrency:
                self._freed.clear()
                await self._freed.wait()
            now = self._clock()
            if self._next_send > now:
                await self._sleep(self._next_send - now)
                continue  # a more urgent sender may have come meanwhile; a hold may have too
            turn = self._next_turn()
            if turn is None:
                return
            self._grant(now)
            turn.set_result(None)
            await asyncio.sleep(0)  # the sender goes out now, at its turn, not after the queue

    def _next_turn(self) -> asyncio.Future[None] | None:
        """The most urgent waiting sender (a read after READ_SHARE - 1 turns without one)."""
        for queue in self._waiting:
            while queue and queue[0].done():
                queue.popleft()  # cancelled while waiting
        reads = self._waiting[READ]
        if reads and self._turns_without_read >= READ_SHARE - 1:
            self._turns_without_read = 0
            return reads.popleft()
        for priority, queue in enumerate(self._waiting):
            if queue:
                self._turns_without_read = 0 if priority == READ else self._turns_without_read + 1
                return queue.popleft()
        return None

    def _grant(self, now: float) -> None:
        self._in_flight += 1
        if self.rate is not None:
            self._next_send = max(now, self._next_send) + _SPACING_MARGIN / self.rate
        self._recent_sends.append(now)
        while self._recent_sends[0] < now - 1.0:
            self._recent_sends.popleft()

    def _release(self) -> None:
        self._in_flight -= 1
        self._freed.set()

    async def _wait_out_hold(self) -> None:
        """Until the server's Retry-After has passed, or a stop is requested."""
        stop = self._stop
        while stop is None or not stop.is_set():
            left = self._hold_until - self._clock()
            if left <= 0:
                return
            if stop is None:
                await self._sleep(left)
                continue
            pause = asyncio.ensure_future(self._sleep(left))
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait((pause, stopped), return_when=asyncio.FIRST_COMPLETED)
            finally:
                pause.cancel()
                stopped.cancel()

    def _slow_down(self, retry_after: float | None) -> None:
        now = self._clock()
        if retry_after:
            hold = min(retry_after, self._retry_after_cap_s)
            self._hold_until = max(self._hold_until, now + hold)
        # Measured from the last decrease: recoveries must not hold off the next one.
        if now - self._last_decrease < _DECREASE_COOLDOWN_S:
            return
        self._last_decrease = now
        current = self.rate if self.rate is not None else float(len(self._recent_sends))
        new = max(_MIN_RATE, current / 2)
        # Recover to the old pace in about ten periods, then probe above it slowly.
        self._recovery_step = max(1.0, (current - new) / 10)
        self.decreases += 1
        self._set(new, "rate_limited", now)

    def _maybe_recover(self) -> None:
        if self.rate is None or self.rate == self._ceiling:
            return
        now = self._clock()
        if now - self._last_change < _RECOVERY_PERIOD_S:
            return
        new = self.rate + self._recovery_step
        if self._ceiling is not None:
            new = min(new, self._ceiling)
        self._set(new, "recovering", now)

    def _set(self, new: float, reason: str, now: float) -> None:
        old, self.rate, self._last_change = self.rate, new, now
        if self._on_change is not None:
            self._on_change(old, new, reason)


class _Slot:
    """`Pacer.slot()`: a class rather than a generator, as every request of a run takes one."""

    __slots__ = ("_pacer", "_priority")

    def __init__(self, pacer: Pacer, priority: int) -> None:
        self._pacer = pacer
        self._priority = priority

    async def __aenter__(self) -> None:
        await self._pacer._take_turn(self._priority)

    async def __aexit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: object
    ) -> None:
        pacer = self._pacer
        try:
            if isinstance(err, RateLimited):
                pacer._slow_down(err.retry_after)
            elif err is None:
                pacer._maybe_recover()
        finally:
            pacer._release()
