"""Awaiting something that a stop may cut short: one helper wherever a stop must not wait.

The plan's listing, the orders snapshot, the operator's answer, and following's reads and
residue closes each race their call against a cut-off: a stop, or the end of a stop's grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

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
