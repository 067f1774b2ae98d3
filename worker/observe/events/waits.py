"""The events of a run that waits on the clock (--before-close, --at-close, the MOC cutoff),
and the wall-clock texts they and the terminal share.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.observe.events import sink
from worker.observe.events.names import (
    MOC_CUTOFF,
    RUN_WOULD_START,
    WAITING_FOR_CLOSE,
    WAITING_FOR_FILLS,
)

__all__ = [
    "duration_text",
    "moc_cutoff",
    "new_york_time",
    "resting_text",
    "run_would_start",
    "waiting_for_close",
    "waiting_for_fills",
]


def waiting_for_close(
    *, day_type: str, regular_close: datetime, start_at: datetime, wait_s: float
) -> None:
    """`--before-close`: the run waits until `start_at`. `starts` and `starts_in` say the same
    for people ("15:45 ET", "5 h 30 m"); a terminal shows them as one sentence."""
    sink.log.info(WAITING_FOR_CLOSE, **_start_fields(day_type, regular_close, start_at, wait_s))


def run_would_start(
    *, day_type: str, regular_close: datetime, start_at: datetime, wait_s: float
) -> None:
    """`--before-close` with `--dry-run`: the real run would start at `start_at` (now, inside
    the window); the dry run does not wait for it. The fields are `waiting_for_close`'s."""
    sink.log.info(RUN_WOULD_START, **_start_fields(day_type, regular_close, start_at, wait_s))


def _start_fields(
    day_type: str, regular_close: datetime, start_at: datetime, wait_s: float
) -> dict[str, Any]:
    """`waiting_for_close`'s and `run_would_start`'s fields, in their order."""
    return {
        "day_type": day_type,
        "regular_close": regular_close.isoformat(),
        "start_at": start_at.isoformat(),
        "wait_s": round(wait_s, 3),
        "starts": new_york_time(start_at),
        "closes": new_york_time(regular_close),
        "starts_in": duration_text(wait_s),
    }


def waiting_for_fills(*, orders: int, until: datetime, wait_s: float) -> None:
    """--at-close: every close is sent and `orders` market-on-close orders rest at the server
    until today's close, `until`; following waits for their fills. Emitted once, when the
    fan-out is over. `until_local` and `until_in` say the same for people."""
    sink.log.info(
        WAITING_FOR_FILLS,
        orders=orders,
        until=until.isoformat(),
        wait_s=round(wait_s, 3),
        until_local=new_york_time(until),
        until_in=duration_text(wait_s),
    )


def moc_cutoff(*, passed: bool, cutoff: str | None, regular_close: str | None, reason: str) -> None:
    """--at-close: whether today's market-on-close cutoff has passed (then nothing is sent)."""
    (sink.log.warning if passed else sink.log.info)(
        MOC_CUTOFF, passed=passed, cutoff=cutoff, regular_close=regular_close, reason=reason
    )


def resting_text(orders: int, until_local: str, wait_s: float) -> str:
    """ "3 market-on-close orders resting; they fill at today's close, 16:00 ET (in 2 h 10 m)",
    or "(due now)" once the close is reached and the fills are still to be read."""
    noun = "order" if orders == 1 else "orders"
    when = f"in {duration_text(wait_s)}" if wait_s >= 0.5 else "due now"
    return (
        f"{orders} market-on-close {noun} resting;"
        f" {'it fills' if orders == 1 else 'they fill'} at today's close, {until_local} ({when})"
    )


def new_york_time(moment: datetime) -> str:
    """ "15:45 ET": the exchange's wall clock, as a desk says it."""
    from zoneinfo import ZoneInfo

    return f"{moment.astimezone(ZoneInfo('America/New_York')):%H:%M} ET"


def duration_text(seconds: float) -> str:
    """ "5 h 30 m", "12 m", "40 s": a wait, rounded to what a person reads."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} m"
    if minutes:
        return f"{minutes} m" if minutes >= 10 or not secs else f"{minutes} m {secs} s"
    return f"{secs} s"
