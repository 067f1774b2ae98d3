"""The Follower alone, on a virtual clock over a stub account: when it reads, and how long it
pauses between reads, as the fan-out ends. No server, no waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from tests.support import order
from worker.api.models import Execution, Order
from worker.api.policy import TimeSource


class VirtualFollowing:
    """A Follower on a virtual clock, over a stub account: one position, one close order that
    works until the read `filled_from` (counting from 1) finds it filled and the position flat.
    Read `gated` stays in flight until `back` is set; the pause after read `held` lasts until
    something cuts it."""

    def __init__(self, filled_from: int, gated: int = 0, held: int = 0) -> None:
        from worker.closing.follow import Follower, FollowSettings
        from worker.closing.target import Target

        self.now = 0.0
        self.reads: list[float] = []  # when each read began, in virtual seconds
        self.in_flight = asyncio.Event()
        self.back = asyncio.Event()
        self.pausing = asyncio.Event()
        self._filled_from = filled_from
        self._gated = gated
        self._held = held
        ctx = SimpleNamespace(
            reader=SimpleNamespace(
                orders=self._orders,
                working_orders=self._orders,
                positions=self._positions,
                executions=self._executions,
            ),
            stopping=asyncio.Event(),
            sender=SimpleNamespace(
                recognises=lambda order, target: False,
                idempotent=False,
                wave_at=lambda target: None,
            ),
            working_before={},
            read_accounts=frozenset(),
            priors={},
        )
        self.follower = Follower(
            ctx,  # type: ignore[arg-type]
            FollowSettings(timeout_s=10_000, first_pause_s=1.0, max_pause_s=64.0),
            since=datetime(2026, 11, 25, tzinfo=UTC),
            send_close=lambda *_: asyncio.sleep(0),
            timing=TimeSource(lambda: self.now, self._sleep),
        )
        target = Target(7, "S", "i1", "S", "EQUITY", Decimal(10), Decimal(1000), True)
        self.follower.follow(target, target.result())

    async def _sleep(self, seconds: float) -> None:
        if self._held and len(self.reads) == self._held:
            self.pausing.set()
            await asyncio.Future()  # (until cancelled)
        self.now += seconds
        await asyncio.sleep(0)

    def _filled(self) -> bool:
        return len(self.reads) >= self._filled_from

    async def _orders(self, *_: Any) -> tuple[list[Order], list[str]]:
        self.reads.append(self.now)
        if len(self.reads) == self._gated:
            self.in_flight.set()
            await self.back.wait()
        status, done = ("FILLED", "10") if self._filled() else ("NEW", "0")
        listed = {**order(quantity="10", status=status), "filled_quantity": done}
        return [Order.model_validate({**listed, "id": "o1", "instrument_id": "i1"})], ["r"]

    async def _positions(self, *_: Any) -> tuple[list[Any], list[str]]:
        held = SimpleNamespace(instrument_id="i1", quantity=Decimal(10))
        return ([] if self._filled() else [held]), []

    async def _executions(self, *_: Any) -> tuple[list[Execution], list[str]]:
        """The ledger: the close's one fill, once it filled."""
        fill = Execution(
            id="e1",
            order_id="o1",
            side="SELL",
            quantity=Decimal(10),
            transaction_time=datetime(2026, 11, 25, 15, tzinfo=UTC),
            instrument_id="i1",
        )
        return ([fill] if self._filled() else []), []


async def test_a_fan_out_that_ends_during_a_read_is_followed_by_a_read_at_once() -> None:
    """Long pauses (slow fills), and the fan-out ends while a read is in flight: the next read
    goes as soon as that one is back, not after a doubled pause. Virtual time: no waiting."""
    following = VirtualFollowing(filled_from=6, gated=5)
    await asyncio.wait_for(following.in_flight.wait(), 5)
    following.follower.all_sent()  # the fan-out ends while the fifth read is in flight
    ended_at = following.now
    following.back.set()
    await asyncio.wait_for(following.follower.finish(), 5)
    assert following.reads[:5] == [1.0, 3.0, 7.0, 15.0, 31.0]  # pauses doubling: 1, 2, 4, 8, 16
    assert following.reads[5:] == [ended_at]  # at once, not 32 s later


async def test_a_fill_not_landed_at_the_fan_outs_end_is_read_again_settle_s_later() -> None:
    from worker.closing.follow import SETTLE_S

    following = VirtualFollowing(filled_from=3, held=1)
    await asyncio.wait_for(following.pausing.wait(), 5)
    following.follower.all_sent()  # during the pause after the first read
    ended_at = following.now
    await asyncio.wait_for(following.follower.finish(), 5)
    # The pause under way is cut: a read at once, still working; the next SETTLE_S on, flat.
    assert following.reads == [1.0, ended_at, ended_at + SETTLE_S]


async def test_following_yields_each_result_as_it_settles_and_ends_once_finished() -> None:
    """Following hands back what it settled as values, not through a callback: the result is
    on `settled` as soon as the read finds it flat, before `finish`, and the iteration ends once
    `finish` has settled every target."""
    following = VirtualFollowing(filled_from=3)
    settled = following.follower.settled()
    first = await asyncio.wait_for(anext(settled), 5)
    assert len(following.reads) == 3  # at the read that found it flat, not at the end
    # Read flat, with none of the job's orders in its result (the stub's close is not its own).
    assert first.outcome is not None
    assert first.outcome.value == "already_flat"
    assert first.instrument_id == "i1"
    await asyncio.wait_for(following.follower.finish(), 5)
    assert [r async for r in settled] == []  # each result once; then it ends
