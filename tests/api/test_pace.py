"""The pacer: even spacing under RATE_LIMIT, and AIMD on 429 (with an injected clock)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support import FakeClock
from worker.api.pace import CHANGE, READ, READ_SHARE, REPLACE, Pacer
from worker.api.policy import RETRY_AFTER_CAP_S, RetryPolicy, TimeSource
from worker.errors import RateLimited


async def test_sends_are_spaced_so_no_second_holds_more_than_the_rate() -> None:
    clock = FakeClock()
    sends: list[float] = []
    pacer = Pacer(8, 50, timing=TimeSource(clock, clock.sleep))

    async def one() -> None:
        async with pacer.slot():
            sends.append(clock.now)

    for _ in range(200):
        await one()
    sends = sorted(sends)
    most_in_a_second = max(sum(1 for t in sends if start <= t < start + 1.0) for start in sends)
    assert most_in_a_second <= 50
    assert sends[-1] - sends[0] < 200 / 50 * 1.05  # and not much slower than the rate


async def test_429_halves_the_pace_for_the_whole_run_then_recovers_additively() -> None:
    clock = FakeClock()
    changes: list[tuple[float | None, float, str]] = []
    pacer = Pacer(
        4,
        100,
        timing=TimeSource(clock, clock.sleep),
        on_change=lambda o, n, r: changes.append((o, n, r)),
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
    pacer = Pacer(4, 0, timing=TimeSource(clock, clock.sleep))
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
    sends: list[float] = []
    pacer = Pacer(4, 0, timing=TimeSource(clock, clock.sleep))
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429, retry_after=0.75)
    start = clock.now
    async with pacer.slot():
        sends.append(clock.now)
    assert sends == [start + 0.75]


async def test_a_huge_retry_after_holds_sends_only_as_long_as_the_retry_policy_waits() -> None:
    # `Retry-After: 3600` must not park the run for an hour: capped as the policy caps a retry.
    clock = FakeClock()
    sends: list[float] = []
    pacer = Pacer(4, 0, timing=TimeSource(clock, clock.sleep))
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429, retry_after=3600)
    start = clock.now
    async with pacer.slot():
        sends.append(clock.now)
    assert sends == [start + RETRY_AFTER_CAP_S]
    assert RetryPolicy().retry_after_cap_s == RETRY_AFTER_CAP_S  # one cap, the policy's


async def test_the_pace_hold_takes_the_policys_cap_when_given_one() -> None:
    clock = FakeClock()
    sends: list[float] = []
    pacer = Pacer(4, 0, timing=TimeSource(clock, clock.sleep), retry_after_cap_s=5)
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429, retry_after=3600)
    start = clock.now
    async with pacer.slot():
        sends.append(clock.now)
    assert sends == [start + 5]


async def test_senders_released_by_the_end_of_a_hold_go_out_one_spacing_apart() -> None:
    clock = FakeClock()
    sends: list[float] = []
    pacer = Pacer(8, 10, timing=TimeSource(clock, clock.sleep))
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429, retry_after=2)

    async def one() -> None:
        async with pacer.slot():
            sends.append(clock.now)

    await asyncio.gather(*(one() for _ in range(6)))
    assert pacer.rate is not None
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(sends) >= 1000.0 + 2
    assert all(gap >= 1 / pacer.rate for gap in gaps), gaps


async def test_a_stop_ends_a_retry_after_hold_at_once() -> None:
    """After SIGTERM the run's last reads must go out (and find what the closes did), not sit
    behind the server's pause until the stop deadline cuts them off."""
    now = [0.0]
    never = asyncio.Event()

    async def sleep_forever(seconds: float) -> None:  # a hold that would not end by itself
        await never.wait()

    stop = asyncio.Event()
    pacer = Pacer(4, 0, timing=TimeSource(lambda: now[0], sleep_forever), stop=stop)
    with pytest.raises(RateLimited):
        async with pacer.slot():
            raise RateLimited("429", status=429, retry_after=20)
    sent = asyncio.Event()

    async def read_after_the_stop() -> None:
        async with pacer.slot():
            sent.set()

    waiting = asyncio.create_task(read_after_the_stop())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not sent.is_set()  # held by the server's Retry-After
    stop.set()
    await asyncio.wait_for(waiting, 1.0)
    assert sent.is_set()


async def test_a_429_after_a_recovery_still_halves_the_pace() -> None:
    clock = FakeClock()
    pacer = Pacer(4, 100, timing=TimeSource(clock, clock.sleep))
    for _ in range(2):
        with pytest.raises(RateLimited):
            async with pacer.slot():
                raise RateLimited("429", status=429)
        clock.now += 1.5
        async with pacer.slot():  # recovers a step
            pass
        clock.now += 0.5  # the next 429 comes half a second after that recovery
    assert pacer.decreases == 2


async def test_waiting_changes_go_before_waiting_reads_whatever_came_first() -> None:
    """Order entry, cancels and escalations first, then replaces, then reads: a deadline's
    cancels must not queue behind following's polls."""
    clock = FakeClock()
    order: list[str] = []
    pacer = Pacer(100, 10, timing=TimeSource(clock, clock.sleep))
    async with pacer.slot(READ):  # takes the first turn: everyone after it waits
        pass

    async def one(name: str, priority: int) -> None:
        async with pacer.slot(priority):
            order.append(name)

    senders = [one(f"read{i}", READ) for i in range(5)]
    senders += [one("replace", REPLACE), one("cancel", CHANGE), one("rest", CHANGE)]
    await asyncio.gather(*senders)
    assert order == ["cancel", "rest", "replace", "read0", "read1", "read2", "read3", "read4"]


async def test_a_change_that_comes_while_reads_wait_takes_the_next_turn() -> None:
    clock = FakeClock()
    order: list[str] = []
    pacer = Pacer(100, 10, timing=TimeSource(clock, clock.sleep))
    async with pacer.slot(READ):
        pass

    async def one(name: str, priority: int) -> None:
        async with pacer.slot(priority):
            order.append(name)

    async def sleep(seconds: float) -> None:  # lets the senders run between turns
        clock.advance(seconds)
        await asyncio.sleep(0)

    pacer._sleep = sleep
    reads = [asyncio.create_task(one(f"read{i}", READ)) for i in range(6)]
    for _ in range(4):  # a read or two goes, the others wait
        await asyncio.sleep(0)
    before = len(order)
    assert 0 < before < 4
    await one("cancel", CHANGE)
    await asyncio.gather(*reads)
    assert order.index("cancel") <= before + 1 < 5  # ahead of the reads still waiting


async def test_changes_first_still_keeps_the_spacing_and_the_in_flight_bound() -> None:
    clock = FakeClock()
    sends: list[float] = []
    in_flight = peak = 0
    pacer = Pacer(3, 20, timing=TimeSource(clock, clock.sleep))

    async def one(priority: int) -> None:
        nonlocal in_flight, peak
        async with pacer.slot(priority):
            sends.append(clock.now)
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0)
            in_flight -= 1

    await asyncio.gather(*(one(i % 3) for i in range(60)))
    gaps = [b - a for a, b in itertools.pairwise(sorted(sends))]
    assert min(gaps) >= 1 / 20
    assert peak <= 3


async def test_reads_still_get_one_turn_in_read_share_when_changes_keep_coming() -> None:
    clock = FakeClock()
    order: list[str] = []
    pacer = Pacer(100, 10, timing=TimeSource(clock, clock.sleep))
    async with pacer.slot(READ):
        pass

    async def one(name: str, priority: int) -> None:
        async with pacer.slot(priority):
            order.append(name)

    senders = [one("read", READ) for _ in range(2)]
    senders += [one("change", CHANGE) for _ in range(3 * READ_SHARE)]
    await asyncio.gather(*senders)
    assert order.index("read") == READ_SHARE - 1
    assert order.count("read") == 2
    assert order[2 * READ_SHARE - 1] == "read"


async def test_a_waiting_sender_cancelled_gives_its_turn_to_the_next() -> None:
    clock = FakeClock()
    order: list[str] = []
    pacer = Pacer(100, 10, timing=TimeSource(clock, clock.sleep))
    async with pacer.slot(READ):
        pass

    async def one(name: str, priority: int) -> None:
        async with pacer.slot(priority):
            order.append(name)

    gone = asyncio.create_task(one("gone", CHANGE))
    kept = asyncio.create_task(one("kept", READ))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, kept, return_exceptions=True)
    assert order == ["kept"]
    assert pacer.waiting == 0
