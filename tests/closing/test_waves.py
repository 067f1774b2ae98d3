"""PROTECTED_VIA=ioc_waves: when each position's next wave may go and at which collar, and
what the plan says the waves cost (pure, a clock injected)."""

from __future__ import annotations

import pytest

from worker.closing.collar import Collar
from worker.closing.schedule import FOLLOW_READS
from worker.closing.waves import Waves, most_waves, wave_requests, waves_cost

DEFAULTS = Collar(first_bps=5, max_bps=50, reprice_s=5, deadline_s=60)
KEY = (10001, "iid")
WAVE = 50 * (FOLLOW_READS + 1)  # one wave of 100 positions an account over 50 accounts
WAVE_S = WAVE * 1.02 / 20  # ... at 20 requests a second


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_wave_costs_following_reads_and_a_post_per_account() -> None:
    assert wave_requests([100] * 50, 100) == WAVE
    assert wave_requests([250, 0], 100) == 3 * FOLLOW_READS + 3  # reads and POSTs per 100
    assert most_waves(DEFAULTS) == 12


def test_the_first_wave_is_at_the_touch_the_later_at_the_widest_collar_then_market() -> None:
    clock = Clock()
    waves = Waves(DEFAULTS, rate_limit=20, batch_size=100, clock=clock)
    waves.plan([100] * 50, None)  # one wave's requests at 20 a second
    assert waves.next_at(KEY) == clock.now  # nothing sent: now
    assert waves.bps(KEY) == 5
    waves.sent(KEY)
    first = clock.now
    assert waves.next_at(KEY) == first + 5  # REPRICE_S on
    clock.now += 12
    assert waves.bps(KEY) == 50
    waves.sent(KEY)
    assert waves.next_at(KEY) == first + 17
    # The market wave: DEADLINE_S less one wave's requests at the rate.
    assert waves.market_from(KEY) == pytest.approx(first + 60 - WAVE_S)
    clock.now = first + 60 - WAVE_S - 3
    waves.sent(KEY)
    assert waves.next_at(KEY) == pytest.approx(first + 60 - WAVE_S)  # not REPRICE_S on
    clock.now = first + 60 - WAVE_S
    assert waves.bps(KEY) is None  # at market


def test_at_close_the_market_wave_comes_early_enough_for_the_cutoff() -> None:
    clock = Clock()
    waves = Waves(DEFAULTS, rate_limit=20, batch_size=100, clock=clock)
    waves.plan([100] * 50, 20.0)  # the cutoff 20 s away: a wave's requests and 2 s of slack
    waves.sent(KEY)
    assert waves.market_from(KEY) == pytest.approx(clock.now + 20 - WAVE_S - 2)
    clock.now += 20 - WAVE_S - 2
    assert waves.bps(KEY) is None
    other = (10001, "later")  # not sent before the cutoff's margin: its first close at market
    assert waves.bps(other) is None


def test_the_plan_counts_the_waves_that_fit_and_says_whether_the_market_wave_does() -> None:
    cost = waves_cost([100] * 50, rate_limit=20, batch_size=100, collar=DEFAULTS)
    # A first wave (50 POSTs), the later waves a wave's time apart before the market wave
    # (three at 12.75 s apart before 47.25 s), the market wave, one more read of each account.
    later = int((60 - WAVE_S) // WAVE_S)
    assert cost.requests == 50 + (later + 1) * WAVE + 50 * FOLLOW_READS
    assert cost.fits
    assert f"{later + 1} IOC waves" in cost.advice
    slow = waves_cost([100] * 500, rate_limit=20, batch_size=100, collar=DEFAULTS)
    assert not slow.fits  # one wave takes 102 s: the rests cannot go by the deadline
    assert "RATE_LIMIT" in slow.advice
    unlimited = waves_cost([100] * 50, rate_limit=0, batch_size=100, collar=DEFAULTS)
    assert unlimited.fits
    assert unlimited.requests == 50 + 12 * WAVE + 50 * FOLLOW_READS  # a wave every REPRICE_S
