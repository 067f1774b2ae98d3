"""CLOSE_STYLE=protected, PROTECTED_VIA=ioc_waves: close each position in waves of marketable
IMMEDIATE_OR_CANCEL limits, the first at the touch, the others at the widest collar, and the rest
at market after the last (pure schedule, no requests).

A wave is a close like any other of `submit_orders`: the position as following last read it and
the ledger proved it (`worker.closing.follow_decide`), under the position's next generation's
client id, journaled first, batched with the account's others in one POST. An IOC meets the book
once and ends, so nothing rests: no replace and no cancel, and the next wave is sized from what
the last one left. This module says when each position's next wave may go and at what collar:

    wave 0       at the first send, COLLAR_BPS past the arrival quote: a liquid name fills
                 whole at the touch
    wave k       REPRICE_S after the wave before (later when the rate holds following's reads
                 back), at COLLAR_MAX_BPS: a position the touch could not fill takes what the
                 book holds within the widest collar as early as can be, and the levels it
                 takes refill for the next wave instead of being left to the market wave,
                 which would take them and walk on past the collar
    market wave  from DEADLINE_S less the time one wave's requests take at RATE_LIMIT (half of
                 DEADLINE_S at most), so the rests go by the deadline, not that much after it;
                 --at-close: early enough that every rest is accepted before the cutoff

Waves are priced from the arrival quote, never from the touch now: a thin book's touch walks
down as the waves take it, and a limit that followed it would walk the book as a market order
does (the bound the re-priced style keeps too). So a wave needs no snapshot read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from worker.closing.collar import Collar
from worker.closing.schedule import (
    DEADLINE_GRACE_S,
    ESCALATION_SLACK_S,
    FOLLOW_READS,
    READ_CHUNK,
    StyleCost,
    seconds_at,
)

Key = tuple[int, str]  # (account_id, instrument_id lower-cased)


def wave_requests(positions_by_account: Iterable[int], batch_size: int) -> int:
    """Requests one wave takes: per account, following's reads that size it and its POSTs."""
    total = 0
    for n in positions_by_account:
        if n > 0:
            total += FOLLOW_READS * math.ceil(n / READ_CHUNK) + math.ceil(n / max(1, batch_size))
    return total


def most_waves(collar: Collar) -> int:
    """The IOC waves a position may be sent, its first close included: one a REPRICE_S before
    its deadline at most."""
    return max(1, math.ceil(collar.deadline_s / collar.reprice_s - 1e-9))


def waves_cost(
    positions_by_account: Iterable[int],
    *,
    rate_limit: float,
    batch_size: int,
    collar: Collar,
    seconds_to_cutoff: float | None = None,
) -> StyleCost:
    """What the protected style costs with IOC waves: the first wave, the later waves the rate
    allows before the market wave (one wave's requests at RATE_LIMIT apart at the least), the
    market wave, and one more read of each account to see it flat. It fits when the market
    wave ends within DEADLINE_GRACE_S of the deadline and, --at-close, before the cutoff."""
    counts = [n for n in positions_by_account if n > 0]
    first = sum(math.ceil(n / max(1, batch_size)) for n in counts)
    wave = wave_requests(counts, batch_size)
    wave_s = seconds_at(wave, rate_limit)
    lead = min(wave_s, collar.deadline_s / 2)
    spacing = max(collar.reprice_s, wave_s)
    later = min(most_waves(collar) - 1, math.floor((collar.deadline_s - lead) / spacing))
    reads = wave - first
    requests = first + (later + 1) * wave + reads
    past = max(0.0, wave_s - lead) + ESCALATION_SLACK_S
    fits = past <= DEADLINE_GRACE_S
    advice: list[str] = []
    if not fits and rate_limit > 0:
        needed = math.ceil(wave * 1.02 / (DEADLINE_GRACE_S - ESCALATION_SLACK_S + lead))
        advice.append(f"RATE_LIMIT {needed} puts every rest at market within the grace")
    if seconds_to_cutoff is not None and wave_s + ESCALATION_SLACK_S > seconds_to_cutoff:
        fits = False
        advice.append("the cutoff comes before one wave's requests can end")
    advice.append(f"{later + 1} IOC waves, {spacing:.0f} s apart, then the rest at market")
    return StyleCost(
        "protected",
        requests,
        collar.deadline_s - lead + wave_s,
        fits=fits,
        advice="; ".join(advice),
    )


class Waves:
    """When each position's next wave may go, and at which collar."""

    def __init__(
        self,
        collar: Collar,
        *,
        rate_limit: float = 0.0,
        batch_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collar = collar
        self._rate = rate_limit
        self._batch_size = batch_size
        self._clock = clock
        self._lead_s = 0.0
        self._cutoff: float | None = None  # monotonic: --at-close, the last rest before it
        self._first: dict[Key, float] = {}
        self._last: dict[Key, float] = {}

    @property
    def collar(self) -> Collar:
        return self._collar

    def plan(self, positions_by_account: Iterable[int], seconds_to_cutoff: float | None) -> None:
        """Before the fan-out: the market wave's lead (one wave's requests at RATE_LIMIT, half of
        DEADLINE_S at most) and, --at-close, the time by which every rest must have gone."""
        wave_s = seconds_at(wave_requests(positions_by_account, self._batch_size), self._rate)
        self._lead_s = min(wave_s, self._collar.deadline_s / 2)
        if seconds_to_cutoff is not None:
            self._cutoff = self._clock() + seconds_to_cutoff - (wave_s + ESCALATION_SLACK_S)

    def sent(self, key: Key) -> None:
        """A wave of `key` is being sent now."""
        now = self._clock()
        self._first.setdefault(key, now)
        self._last[key] = now

    def market_from(self, key: Key) -> float:
        """From when `key`'s closes go at market: its deadline less the lead, and --at-close no
        later than the cutoff allows."""
        first = self._first.get(key, self._clock())
        at = first + self._collar.deadline_s - self._lead_s
        return at if self._cutoff is None else min(at, self._cutoff)

    def next_at(self, key: Key) -> float:
        """When `key`'s next close may go: REPRICE_S after its last wave, the market wave when
        that comes first (now, before its first)."""
        last = self._last.get(key)
        if last is None:
            return self._clock()
        return min(last + self._collar.reprice_s, self.market_from(key))

    def bps(self, key: Key) -> float | None:
        """The collar of a wave of `key` sent now; None: its time for waves is over (market)."""
        now = self._clock()
        first = self._first.get(key)
        if first is None:  # its first wave: at the touch, unless the cutoff came
            past_cutoff = self._cutoff is not None and now >= self._cutoff
            return None if past_cutoff else self._collar.first_bps
        if now >= self.market_from(key):
            return None
        # Open after its first wave: the touch could not fill it. What the book holds within
        # the widest collar is taken now, so it refills for a later wave, not left to the
        # market wave, which takes it and walks on past the collar.
        return self._collar.max_bps
