"""How long following may leave an account unread, beyond its growing pause: while every target
rests on the job's working LIMIT (protected, before its escalation) or waits for its next IOC wave,
a read could decide nothing. Each returns 0 when some target needs reading sooner."""

from __future__ import annotations

from collections.abc import Iterable

from worker.api.models import WORKING_STATUSES
from worker.closing.followed import Followed
from worker.closing.modes import Sender


def resting_pause(pending: Iterable[Followed], resting_pause_s: float | None) -> float:
    """`resting_pause_s` while every pending target rests on a working LIMIT order of the
    job (protected, before its escalation), else 0."""
    if resting_pause_s is None:
        return 0.0
    for followed in pending:
        if followed.watch_only or followed.unresolved is not None:
            return 0.0
        orders = followed.result.orders
        if not any(o.status in WORKING_STATUSES and o.order_type == "LIMIT" for o in orders):
            return 0.0
    return resting_pause_s


def wave_pause(pending: Iterable[Followed], sender: Sender, now: float) -> float:
    """IOC waves (PROTECTED_VIA=ioc_waves): while every pending target waits for its next
    wave, until the first of them (an IOC ends as it meets the book: nothing to read
    before), else 0. So an account is read once a wave, just before the wave is sized."""
    soonest: float | None = None
    for followed in pending:
        if followed.watch_only or followed.unresolved is not None:
            return 0.0
        at = sender.wave_at(followed.target)
        if at is None:
            return 0.0
        soonest = at if soonest is None else min(soonest, at)
    return 0.0 if soonest is None else max(0.0, soonest - now)
