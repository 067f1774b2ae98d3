"""--before-close: the real close from the market-hours calendar, holidays skipped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from tests.support import RecordedSleeps, api_for, envelope, events_emitted, serving
from worker.api.policy import RetryPolicy
from worker.api.reads import Reader
from worker.errors import InputError
from worker.run.schedule import Go, parse_duration, wait_for_close_window

NOW = datetime(2025, 11, 28, 17, 0, tzinfo=UTC)  # 12:00 in New York, day after Thanksgiving


def market_hours(day_type: str, close: datetime | None) -> dict[str, Any]:
    today: dict[str, Any] = {}
    if close is not None:
        today["regular"] = {
            "open": (close - timedelta(hours=3, minutes=30)).isoformat(),
            "close": close.isoformat(),
        }
    session = {"open": "2025-12-01T09:30:00-05:00", "close": "2025-12-01T16:00:00-05:00"}
    return {
        "current_time": NOW.isoformat(),
        "date": "2025-11-28",
        "market": "us_equities",
        "market_name": "US Equities",
        "next_sessions": {"regular": session},
        "status": {"day_type": day_type, "is_open": close is not None},
        "timezone": "America/New_York",
        "today_sessions": today,
    }


@pytest.fixture
def calendar() -> dict[str, Any]:
    return {"day": market_hours("EARLY_CLOSE", datetime.fromisoformat("2025-11-28T13:00:00-05:00"))}


@pytest.fixture
async def reader(calendar: dict[str, Any]) -> AsyncIterator[Reader]:
    async def hours(request: web.Request) -> web.Response:
        assert request.query["market"] == "us_equities"
        return envelope([calendar["day"]])

    app = web.Application()
    app.router.add_get("/v1/calendars/market-hours", hours)
    async with serving(app) as base, api_for(base) as api:
        yield Reader(api, RetryPolicy(sleep=RecordedSleeps()))


async def test_early_close_waits_for_13_00_minus_the_duration(reader: Reader) -> None:
    sleeps = RecordedSleeps()
    timing = await wait_for_close_window(
        reader, timedelta(minutes=15), lambda: NOW, asyncio.Event(), sleeps
    )
    assert timing.go is Go.NOW
    assert sleeps.waits == [45 * 60]  # 12:00 -> 12:45 ET, not 15:45


async def test_a_dry_run_says_when_the_run_would_start_and_never_waits(reader: Reader) -> None:
    sleeps = RecordedSleeps()
    with events_emitted() as emitted:
        timing = await wait_for_close_window(
            reader, timedelta(minutes=15), lambda: NOW, asyncio.Event(), sleeps, dry_run=True
        )
    assert timing.go is Go.NOW
    assert sleeps.waits == []  # 45 minutes before the window: not waited for
    [said] = [e for e in emitted if e["event"] == "run_would_start"]
    assert said["start_at"] == "2025-11-28T12:45:00-05:00"
    assert said["wait_s"] == 45 * 60
    assert said["starts"] == "12:45 ET"


async def test_past_the_start_but_before_the_close_runs_now(reader: Reader) -> None:
    sleeps = RecordedSleeps()
    later = NOW + timedelta(minutes=50)  # 12:50 ET: inside the last 15 minutes
    timing = await wait_for_close_window(
        reader, timedelta(minutes=15), lambda: later, asyncio.Event(), sleeps
    )
    assert timing.go is Go.NOW
    assert sleeps.waits == []


async def test_after_the_close_sends_nothing(reader: Reader) -> None:
    evening = NOW + timedelta(hours=2)
    timing = await wait_for_close_window(
        reader, timedelta(minutes=15), lambda: evening, asyncio.Event(), RecordedSleeps()
    )
    assert timing.go is Go.MARKET_CLOSED


@pytest.mark.parametrize("day_type", ["HOLIDAY", "WEEKEND"])
async def test_holiday_sends_nothing(
    reader: Reader, calendar: dict[str, Any], day_type: str
) -> None:
    calendar["day"] = market_hours(day_type, None)
    timing = await wait_for_close_window(
        reader, timedelta(minutes=15), lambda: NOW, asyncio.Event(), RecordedSleeps()
    )
    assert timing.go is Go.MARKET_CLOSED


async def test_stop_during_the_wait_ends_it(reader: Reader) -> None:
    stop = asyncio.Event()

    async def interrupted(seconds: float) -> None:
        stop.set()

    timing = await wait_for_close_window(
        reader, timedelta(minutes=15), lambda: NOW, stop, interrupted
    )
    assert timing.go is Go.STOPPED


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("2.5m", 150)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["15", "m", "-5m", "1d", ""])
def test_bad_durations_name_the_flag(text: str) -> None:
    with pytest.raises(InputError, match="--before-close"):
        parse_duration(text)
