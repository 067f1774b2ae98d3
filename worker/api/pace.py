"""How fast requests may go: a bound on requests in flight and on requests per second.

Every request takes a `Pacer.slot()`: sends are spaced evenly, a 429 halves the pace for the whole
run (recovering additively) and its capped Retry-After pauses every send, and a stop ends that
pause at once. This module never decides whether a request is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from worker.api.policy import RETRY_AFTER_CAP_S
from worker.errors import RateLimited

# Spacing is 2% wider than 1/rate: clock jitter and late wake-ups then cannot put rate+1 sends
# into one second at the server.
_SPACING_MARGIN = 1.02
_MIN_RATE = 1.0
# After a decrease, wait this long before reacting to another 429: the ones already in flight
# were sent at the old pace and say nothing new.
_DECREASE_COOLDOWN_S = 1.0
_RECOVERY_PERIOD_S = 1.0

PaceListener = Callable[[float | None, float, str], None]
"""Called as (old_rate, new_rate, reason) when the pace changes."""


class Pacer:
    def __init__(
        self,
        concurrency: int,
        rate_limit: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: PaceListener | None = None,
        retry_after_cap_s: float = RETRY_AFTER_CAP_S,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._in_flight = asyncio.Semaphore(concurrency)
        self._retry_after_cap_s = retry_after_cap_s
        self._stop = stop
        # Retry-After: no send before this (clock() time), unless a stop came.
        self._hold_until = float("-inf")
        self._ceiling = rate_limit if rate_limit > 0 else None
        self.rate: float | None = self._ceiling  # current requests/second; None = unlimited
        self._clock = clock
        self._sleep = sleep
        self._on_change = on_change
        self._next_send = 0.0
        self._last_change = clock()
        self._last_decrease = float("-inf")
        self._recovery_step = 1.0
        self._recent_sends: deque[float] = deque()
        self.decreases = 0

    def slot(self) -> _Slot:
        """Hold one of the in-flight places, sent no sooner than the pace allows."""
        return _Slot(self)

    async def _wait_for_turn(self) -> None:
        # The hold first, then a turn in the spacing: senders released together by the end of
        # a hold still go out one spacing apart.
        await self._wait_out_hold()
        now = self._clock()
        send_at = max(now, self._next_send)
        if self.rate is not None:
            self._next_send = send_at + _SPACING_MARGIN / self.rate
        if send_at > now:
            await self._sleep(send_at - now)
            now = send_at
        self._recent_sends.append(now)
        while self._recent_sends[0] < now - 1.0:
            self._recent_sends.popleft()

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

    __slots__ = ("_pacer",)

    def __init__(self, pacer: Pacer) -> None:
        self._pacer = pacer

    async def __aenter__(self) -> None:
        pacer = self._pacer
        await pacer._in_flight.acquire()
        try:
            await pacer._wait_for_turn()
        except BaseException:
            pacer._in_flight.release()
            raise

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
            pacer._in_flight.release()
