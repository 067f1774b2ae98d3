"""The simulator's own promises: it wants the key, its closes fill later on the side that
flattens, it counts a duplicate close as a flip, and its gateway can hold a chosen close until
the re-send arrives."""

from __future__ import annotations

import aiohttp
import pytest

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


async def test_a_held_close_is_applied_just_before_its_resend_and_only_chosen_ones_are_held(
    sim: Simulator,
) -> None:
    """`hold_until_resent`: the gateway holds the chosen close with no reply until the next
    close of the same position arrives, applies it, then the re-send: both sized from the whole
    position, a double whatever the timing. An unchosen close is not held."""
    sim.add_position(19816, "GOOG", "25")
    sim.add_position(19816, "TSLA", "-50")
    sim.config.fill_delay_s = 3600
    chosen = {"/v1/accounts/19816/positions/GOOG"}

    def first_goog_close(path: str) -> bool:
        held = path in chosen
        chosen.discard(path)
        return held

    sim.hold_until_resent("close", first_goog_close)
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
        async with session.delete("/v1/accounts/19816/positions/TSLA") as resp:
            assert resp.status == 200  # not chosen: applied and answered
        with pytest.raises(TimeoutError):
            async with session.delete(
                "/v1/accounts/19816/positions/GOOG", timeout=aiohttp.ClientTimeout(total=0.1)
            ):
                pass
        assert sim.stats.faults_injected["apply_late"] == 1
        assert sim.closing_orders(19816, "GOOG") == []  # held: nothing applied yet
        async with session.delete("/v1/accounts/19816/positions/GOOG") as resp:
            assert resp.status == 200
            [resent] = (await resp.json())["data"]
    held, again = sim.closing_orders(19816, "GOOG")
    assert again["id"] == resent["id"]  # the held close was applied first
    assert [(o["side"], o["quantity"]) for o in (held, again)] == [("SELL", "25")] * 2
    assert sim.stats.faults_injected["apply_late"] == 1
    assert sim.held_applied == ["/v1/accounts/19816/positions/GOOG"]
    sim.fill_all()
    assert sim.position_quantity(19816, "GOOG") == -25
