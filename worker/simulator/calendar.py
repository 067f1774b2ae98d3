"""Market hours in the spec's shape: regular 09:30-16:00 New York time, 13:00 on early closes."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from worker.simulator.config import SimConfig

NEW_YORK = ZoneInfo("America/New_York")


def market_hours(config: SimConfig, day: date | None) -> dict[str, Any]:
    """One MarketHoursDetail for `day` (today, by the simulator's clock, when None)."""
    now = datetime.fromtimestamp(config.clock(), NEW_YORK)
    day = day or now.date()
    day_type = config.market_day
    at = datetime(day.year, day.month, day.day, tzinfo=NEW_YORK)
    body: dict[str, Any] = {
        "current_time": now.replace(microsecond=0).isoformat(),
        "date": day.isoformat(),
        "market": "us_equities",
        "market_name": "US Equities",
        "timezone": "America/New_York",
        "next_sessions": {"regular": _session(at + timedelta(days=1), 9.5, 16)},
    }
    if day_type in ("HOLIDAY", "WEEKEND"):
        body["status"] = {"day_type": day_type, "is_open": False}
        body["today_sessions"] = {}
        return body
    regular = _session(at, 9.5, 13 if day_type == "EARLY_CLOSE" else 16)
    if config.regular_close_at is not None:
        regular["close"] = config.regular_close_at.astimezone(NEW_YORK).isoformat()
    opens, closes = (datetime.fromisoformat(regular[k]) for k in ("open", "close"))
    is_open = opens <= now < closes
    if is_open:
        regular["time_until_close"] = _duration(closes - now)
    elif now < opens:
        regular["time_until_open"] = _duration(opens - now)
    body["status"] = {
        "day_type": day_type,
        "is_open": is_open,
        "current_session": "regular" if is_open else None,
    }
    body["today_sessions"] = {"pre_market": _session(at, 4, 9.5), "regular": regular}
    return body


def _session(day: datetime, opens_h: float, closes_h: float) -> dict[str, Any]:
    def at(hours: float) -> str:
        return day.replace(hour=int(hours), minute=int(hours % 1 * 60)).isoformat()

    return {"open": at(opens_h), "close": at(closes_h)}


def _duration(delta: timedelta) -> str:
    """ISO 8601, as the spec's time_until_* fields: PT1H29M15S."""
    seconds = int(delta.total_seconds())
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"PT{h}H{m}M{s}S"
