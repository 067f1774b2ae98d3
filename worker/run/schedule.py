"""`--before-close DURATION`: run at today's regular close minus DURATION, or not at all; and
whether today's market-on-close cutoff (`MOC_CUTOFF` before the close) has passed.

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

from worker.api.models import MarketHours
from worker.api.policy import Sleep
from worker.api.reads import Reader
from worker.errors import InputError
from worker.observe import events

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
    *,
    dry_run: bool = False,
) -> Timing:
    """`sleep` must end early when `stop` is set (the runner's stop-aware sleep).

    A dry run never waits: it says when the real run would start (`run_would_start`) and goes
    on to its plan at once."""
    reply = await reader.market_hours()
    hours = reply.data
    regular = hours.today_sessions.regular
    if hours.status.day_type in ("HOLIDAY", "WEEKEND") or regular is None:
        return _closed(f"{hours.date} is a {hours.status.day_type.lower()}", reply.request_id)
    now = server_now()
    if now >= regular.close:
        return _closed(f"the regular session closed at {regular.close.isoformat()}", None)
    start = regular.close - before
    if dry_run:
        events.run_would_start(
            day_type=hours.status.day_type,
            regular_close=regular.close,
            start_at=max(start, now),
            wait_s=max(0.0, (start - now).total_seconds()),
        )
        return Timing(Go.NOW, f"dry run: the real run starts at {start.isoformat()}")
    if now < start:
        events.waiting_for_close(
            day_type=hours.status.day_type,
            regular_close=regular.close,
            start_at=start,
            wait_s=(start - now).total_seconds(),
        )
        await sleep((start - now).total_seconds())
        if stop.is_set():
            return Timing(Go.STOPPED, "stop requested while waiting for the close window")
    return Timing(Go.NOW, f"regular close {regular.close.isoformat()}")


def _closed(reason: str, request_id: str | None) -> Timing:
    events.market_closed(reason=reason, request_id=request_id)
    return Timing(Go.MARKET_CLOSED, reason)


@dataclass(frozen=True)
class MocCutoff:
    """Where the day stands against the market-on-close cutoff (`MOC_CUTOFF` before the close).

    `passed` is True when no AT_THE_CLOSE order should be sent today: the cutoff is behind
    `now`, or there is no regular session today (a holiday or a weekend), when `cutoff` and
    `regular_close` are None.
    """

    passed: bool
    cutoff: datetime | None
    regular_close: datetime | None
    reason: str


def moc_cutoff(hours: MarketHours, now: datetime, before: timedelta) -> MocCutoff:
    """From today's market-hours reply (early closes included) and the server's time."""
    regular = hours.today_sessions.regular
    if hours.status.day_type in ("HOLIDAY", "WEEKEND") or regular is None:
        why = f"{hours.date} is a {hours.status.day_type.lower()}: no close to trade at"
        return MocCutoff(True, None, None, why)
    cutoff = regular.close - before
    close = regular.close.isoformat()
    if now >= cutoff:
        why = f"the market-on-close cutoff {cutoff.isoformat()} has passed (close {close})"
        return MocCutoff(True, cutoff, regular.close, why)
    why = f"market-on-close orders accepted until {cutoff.isoformat()} (close {close})"
    return MocCutoff(False, cutoff, regular.close, why)


async def read_moc_cutoff(
    reader: Reader, server_now: Callable[[], datetime], before: timedelta
) -> MocCutoff:
    """`moc_cutoff` for today, reading the calendar (with the reader's retries)."""
    reply = await reader.market_hours()
    return moc_cutoff(reply.data, server_now(), before)
