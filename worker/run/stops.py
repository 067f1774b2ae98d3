"""A run's stop as its stages wait: a retry wait that a stop ends early, and a stage's call cut
short by a stop (its result, or None)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from worker.api.policy import Sleep
from worker.closing.stop import CutOff, before

T = TypeVar("T")


def stop_aware_sleep(stop: asyncio.Event) -> Sleep:
    """A retry wait that ends early when a stop is requested."""

    async def sleep(seconds: float) -> None:
        if seconds > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    return sleep


async def until_stopped(call: Awaitable[T], stop: asyncio.Event) -> T | None:
    """The call's result, or None as soon as a stop is requested (the call is cancelled)."""
    try:
        return await before(call, stop.wait())
    except CutOff:
        return None


async def unless_stopped(question: Awaitable[bool], stop: asyncio.Event) -> bool:
    """The answer, or False as soon as a stop is requested."""
    return bool(await until_stopped(question, stop))
