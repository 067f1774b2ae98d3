"""Awaiting something that a stop may cut short: one helper wherever a stop must not wait.

The plan's listing, the orders snapshot, the operator's answer, and following's reads and
residue closes each race their call against a cut-off: a stop, or the end of a stop's grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from worker.observe import events

T = TypeVar("T")


class CutOff(Exception):
    """The cut-off came first: the call was cancelled, and has finished cancelling."""


async def before(call: Awaitable[T], cutoff: Awaitable[object]) -> T:
    """`call`'s result, unless `cutoff` finishes first: then `call` is cancelled and awaited,
    and `CutOff` is raised. A call that raises raises here, as itself."""
    answer = asyncio.ensure_future(call)
    other = asyncio.ensure_future(cutoff)
    try:
        await asyncio.wait({answer, other}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        other.cancel()
        if not answer.done():
            answer.cancel()
            await asyncio.gather(answer, return_exceptions=True)
    if answer.cancelled():
        raise CutOff
    return answer.result()


class Grace:
    """After a stop request, how long a call in flight may still be waited for (STOP_GRACE):
    the grace is counted from the first time anyone asks when it ends."""

    def __init__(
        self,
        stopping: asyncio.Event,
        grace_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._stopping = stopping
        self._grace_s = grace_s
        self._clock = clock
        self._sleep = sleep
        self._ends: float | None = None

    def ends(self) -> float:
        """When the grace ends (monotonic); call only once a stop was requested."""
        if self._ends is None:
            self._ends = self._clock() + self._grace_s
        return self._ends

    async def within(self, call: Awaitable[T]) -> T:
        """The call's result; `CutOff` when a stop's grace ends first."""
        return await before(call, self._after_stop())

    async def _after_stop(self) -> None:
        await self._stopping.wait()
        await self._sleep(max(0.0, self.ends() - self._clock()))


class FirstReason:
    """Why the run stops, said by whoever stops it from inside (the fan-out, following, the
    protected style): the first reason is kept and said at once; the close stage returns it."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, why: str) -> None:
        if self.reason is None:
            self.reason = why
            events.run_aborted(why)
