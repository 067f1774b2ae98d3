"""The guards around a send: the lock check, a stop, adoption and `liquidator cancel`.

Counted at the server (the simulator, a real PostgreSQL): a close that must not go out never
reaches the server."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from worker.api import TradingApi, open_session
from worker.errors import NotSent
from worker.pace import Pacer
from worker.simulator import Simulator


async def test_a_stop_that_comes_while_the_lock_is_checked_keeps_the_close_from_going_out(
    sim: Simulator,
) -> None:
    """The lock check can take a database round trip or a reconnect; a stop requested
    meanwhile must still stop the close before it goes out."""
    spy = sim.add_position(30001, "SPY", "100")
    stop = asyncio.Event()
    checking = asyncio.Event()

    async def lock_check_until_the_stop() -> None:
        checking.set()
        await stop.wait()  # the check answers "held", but only after the stop came

    async def operator_stops() -> None:
        await checking.wait()
        stop.set()

    async with open_session(4, 2.0, sim.config.api_key) as session:
        api = TradingApi(session, sim.base_url, Pacer(4, 0), before_send=lock_check_until_the_stop)
        stopping = asyncio.create_task(operator_stops())
        with pytest.raises(NotSent):
            await asyncio.wait_for(
                api.close_position(30001, spy, cancel_orders=False, unless=stop), 10
            )
        await stopping
    assert sim.stats.by_route.get("close", 0) == 0
    assert sim.closing_orders(30001, "SPY") == []
    assert sim.position_quantity(30001, "SPY") == Decimal(100)
