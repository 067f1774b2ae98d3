"""The simulator's own promises: it wants the key, its closes fill later on the side that
flattens, and it counts a duplicate close as a flip."""

from __future__ import annotations

import aiohttp

from worker.simulator import Simulator


async def test_simulator_wants_the_key(sim: Simulator) -> None:
    sim.seed_book(1, 1)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sim.base_url}/v1/accounts/10001/positions") as resp:
            body = await resp.json()
        assert resp.status == 401
        assert body["error"]["code"] == 401
        assert body["metadata"]["request_id"]


async def test_simulated_close_sells_a_long_buys_a_short_and_fills_later(sim: Simulator) -> None:
    long_id = sim.add_position(19816, "GOOG", "25")
    sim.add_position(19816, "TSLA", "-50")
    sim.config.fill_delay_s = 3600
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
        for instrument, side, qty in ((long_id, "SELL", "25"), ("TSLA", "BUY", "50")):
            async with session.delete(f"/v1/accounts/19816/positions/{instrument}") as resp:
                [order] = (await resp.json())["data"]
            assert (order["side"], order["quantity"], order["order_type"]) == (side, qty, "MARKET")
        assert sim.position_quantity(19816, "GOOG") == 25  # working: not filled yet
        sim.fill_all()
        assert sim.position_quantity(19816, "GOOG") == 0
        async with session.delete(f"/v1/accounts/19816/positions/{long_id}") as resp:
            assert resp.status == 404  # flat now: nothing to close


async def test_simulator_detects_a_duplicate_close_as_a_flip(sim: Simulator) -> None:
    sim.add_position(19816, "GOOG", "25")
    sim.config.fill_delay_s = 3600
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
        for _ in range(2):
            async with session.delete("/v1/accounts/19816/positions/GOOG") as resp:
                assert resp.status == 200
    sim.fill_all()
    assert sim.duplicate_closes() == [(19816, sim.instrument_id(19816, "GOOG"))]
    assert sim.flipped_positions() == [(19816, sim.instrument_id(19816, "GOOG"))]
    assert sim.position_quantity(19816, "GOOG") == -25
