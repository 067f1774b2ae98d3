"""`--before-close DURATION`: run at today's regular close minus DURATION, or not at all.

Today's session comes from the API's market-hours calendar, so early closes (13:00 ET) and
holidays are the exchange's, not a hard-coded table. The wait ends early on a stop request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from worker import events
from worker.errors import InputError
from worker.policy import Sleep
from worker.reads import Reader

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '1h' -> timedelta. Raises InputError naming the flag."""
    match = _DURATION.match(text)
    if not match:
        raise InputError(f"--before-close {text!r}: expected a duration like 90s, 15m or 1h")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class Go(Enum):
    NOW = "now"
    MARKET_CLOSED = "market_closed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Timing:
    go: Go
    reason: str


async def wait_for_close_window(
    reader: Reader,
    before: timedelta,
    server_now: Callable[[], datetime],
    stop: asyncio.Event,
    sleep: Sleep,
) -> Timing:
    """`sleep` must end early when `stop` is set (the runner's stop-aware sleep)."""
    reply = await reader.market_hours()
    hours = reply.data
    regular = hours.today_sessions.regular
    if hours.status.day_type in ("HOLIDAY", "WEEKEND") or regular is None:
        return _closed(f"{hours.date} is a {hours.status.day_type.lower()}", reply.request_id)
    now = server_now()
    if now >= regular.close:
        return _closed(f"the regular session closed at {regular.close.isoformat()}", None)
    start = regular.close - before
    if now < start:
        events.log.info(
            events.WAITING_FOR_CLOSE,
            day_type=hours.status.day_type,
            regular_close=regular.close.isoformat(),
            start_at=start.isoformat(),
            wait_s=round((start - now).total_seconds(), 3),
        )
        await sleep((start - now).total_seconds())
        if stop.is_set():
            return Timing(Go.STOPPED, "stop requested while waiting for the close window")
    return Timing(Go.NOW, f"regular close {regular.close.isoformat()}")


def _closed(reason: str, request_id: str | None) -> Timing:
    events.log.info(events.MARKET_CLOSED, reason=reason, request_id=request_id)
    return Timing(Go.MARKET_CLOSED, reason)
