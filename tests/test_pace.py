"""The pacer: even spacing under RATE_LIMIT, and AIMD on 429 (with an injected clock)."""

from __future__ import annotations

import asyncio

import pytest

from worker.errors import RateLimited
from worker.pace import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sends: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_sends_are_spaced_so_no_second_holds_more_than_the_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(8, 50, clock=clock, sleep=clock.sleep)

    async def one() -> None:
        async with pacer.slot():
            clock.sends.append(clock.now)

    for _ in range(200):
        await one()
    sends = sorted(clock.sends)
    most_in_a_second = max(sum(1 for t in sends if start <= t < start + 1.0) for start in sends)
    assert most_in_a_second <= 50
    assert sends[-1] - sends[0] < 200 / 50 * 1.05  # and not much slower than the rate


async def test_429_halves_the_pace_for_the_whole_run_then_recovers_additively() -> None:
    clock = FakeClock()
    changes: list[tuple[float | None, float, str]] = []
    pacer = Pacer(
        4, 100, clock=clock, sleep=clock.sleep, on_change=lambda o, n, r: changes.append((o, n, r))
    )
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429)
    assert pacer.rate == 50
    # More 429s from requests already in flight at the old pace do not halve again at once.
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429)
    assert pacer.rate == 50
    for _ in range(3):
        clock.now += 1.0
        async with pacer.slot():
            pass
    assert pacer.rate is not None
    assert 50 < pacer.rate <= 100
    assert changes[0] == (100, 50, "rate_limited")
    assert all(reason == "recovering" for _, _, reason in changes[1:])


async def test_unlimited_pace_becomes_limited_at_half_the_observed_rate_on_429() -> None:
    clock = FakeClock()
    pacer = Pacer(4, 0, clock=clock, sleep=clock.sleep)
    for _ in range(80):
        async with pacer.slot():
            clock.now += 0.01  # 100 requests per second
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429)
    assert pacer.rate is not None
    assert 40 <= pacer.rate <= 55


async def test_in_flight_never_exceeds_the_concurrency() -> None:
    pacer = Pacer(3, 0)
    in_flight = peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        async with pacer.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0)
            in_flight -= 1

    await asyncio.gather(*(one() for _ in range(30)))
    assert peak == 3


async def test_retry_after_pauses_every_send_not_just_the_refused_one() -> None:
    clock = FakeClock()
    pacer = Pacer(4, 0, clock=clock, sleep=clock.sleep)
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429, retry_after=0.75)
    start = clock.now
    async with pacer.slot():
        clock.sends.append(clock.now)
    assert clock.sends == [start + 0.75]


async def test_a_429_after_a_recovery_still_halves_the_pace() -> None:
    clock = FakeClock()
    pacer = Pacer(4, 100, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        with pytest.raises(RateLimited):
            async with pacer.slot():
                raise RateLimited("429", status=429)
        clock.now += 1.5
        async with pacer.slot():  # recovers a step
            pass
        clock.now += 0.5  # the next 429 comes half a second after that recovery
    assert pacer.decreases == 2
