"""Guards before a blind market order, on the simulator's book, counted at the server: a held
target gets no order at all, says why, and the run exits 1; --force sends it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import FAST_FOLLOW, seed_held
from worker.inputs.targets import TargetSpec
from worker.output.exit_codes import ExitCode
from worker.run.plan import Plan
from worker.run.runner import RunRequest, Watcher, run
from worker.simulator import SimConfig, Simulator
from worker.simulator.market import Liquidity, MarketConfig

ACCOUNT = 32001


@pytest.fixture
def sim_config() -> SimConfig:
    # S0 halted, S1 quoted 900 bps wide, S2 quoted an hour ago, S3 worth 25,000, S4 fine.
    return SimConfig(
        market=MarketConfig(
            halted={"S0"},
            instruments={"S1": Liquidity(spread_bps=900)},
            quote_age_s={"S2": 3600.0},
        )
    )


async def _run(
    sim: Simulator, settings_for: Any, tmp_path: Path, *, force: bool = False, **overrides: Any
) -> tuple[int, dict[str, dict[str, Any]], list[Plan]]:
    report = tmp_path / "report.json"
    plans: list[Plan] = []

    class Operator(Watcher):
        async def confirm(self, plan: Plan) -> bool:
            plans.append(plan)  # what the operator is shown before the prompt
            return True

    result = await run(
        settings_for(sim, **{**FAST_FOLLOW, **overrides}),
        RunRequest(
            specs=[TargetSpec(ACCOUNT, None)],
            report_path=report,
            confirm=True,
            watcher=Operator(),
            max_positions_override=force,
        ),
        asyncio.Event(),
    )
    doc = json.loads(report.read_text())
    return int(result.exit_code), {r["symbol"]: r for r in doc["results"]}, plans


GUARDS: dict[str, Any] = {"max_quote_age_s": 60, "max_notional": 20_000}


async def test_each_guard_holds_its_target_unsent_and_says_why(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    held = seed_held(sim, ACCOUNT, [100, 100, 100, 250, 100])
    code, by_symbol, plans = await _run(sim, settings_for, tmp_path, **GUARDS)
    assert code == ExitCode.FAILED  # the book is not flat
    reasons = {
        "S0": "no quote for S0",
        "S1": "spread of S1 is 900.0 bps",
        "S2": "quote for S2 is 3600.0s old",
        "S3": "notional 25000.00 of S3",
    }
    for symbol, why in reasons.items():
        r = by_symbol[symbol]
        assert r["outcome"] == "guarded", r
        assert why in r["error"], r
        assert r["orders"] == []
        assert r["attempts"] == 0
    # Counted at the server: no order at all for a held target, the one unguarded closed.
    for (account, iid, quantity), symbol in zip(held, ["S0", "S1", "S2", "S3", "S4"], strict=True):
        orders = sim.closing_orders(account, iid)
        if symbol == "S4":
            assert len(orders) == 1
            assert sim.position_quantity(account, iid) == 0
        else:
            assert orders == [], symbol
            assert sim.position_quantity(account, iid) == quantity
    assert by_symbol["S4"]["outcome"] == "closed"
    # Shown with the plan, before the prompt: held back, with the reasons.
    (plan,) = plans
    assert [t.symbol for t in plan.targets] == ["S4"]
    assert {r.symbol: r.error for r in plan.guarded}.keys() == reasons.keys()
    # A halted instrument has no arrival price; the wide one has one.
    assert by_symbol["S0"]["arrival_midpoint"] is None
    assert by_symbol["S0"]["price_note"] == "no arrival price"
    assert by_symbol["S1"]["arrival_midpoint"] is not None


async def test_force_sends_what_the_guards_hold(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    held = seed_held(sim, ACCOUNT, [100, 100, 100, 250, 100])
    code, by_symbol, plans = await _run(sim, settings_for, tmp_path, force=True, **GUARDS)
    assert plans[0].guarded == []
    for account, iid, _ in held:
        assert len(sim.closing_orders(account, iid)) == 1  # each sent, once
    # The halted one rests, waiting for the reopening: not flat, the rest closed.
    assert by_symbol["S0"]["outcome"] == "not_flat"
    assert {by_symbol[s]["outcome"] for s in ("S1", "S2", "S3", "S4")} == {"closed"}
    assert code == ExitCode.FAILED
    assert sim.flipped_positions() == []


async def test_guards_off_by_setting_send_them(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    held = seed_held(sim, ACCOUNT, [100, 100])  # halted, and 900 bps wide
    code, by_symbol, _ = await _run(
        sim, settings_for, tmp_path, require_quote=False, max_spread_bps="off"
    )
    for account, iid, _ in held:
        assert len(sim.closing_orders(account, iid)) == 1
    assert by_symbol["S1"]["outcome"] == "closed"
    assert by_symbol["S0"]["arrival_bid"] is None  # sent with no arrival price
    assert code == ExitCode.FAILED  # the halted one's order rests: not flat


async def test_defaults_hold_a_halted_and_a_wide_instrument_only(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    seed_held(sim, ACCOUNT, [100, 100, 100, 250, 100])
    _, by_symbol, _ = await _run(sim, settings_for, tmp_path)
    outcomes = {s: r["outcome"] for s, r in by_symbol.items()}
    # REQUIRE_QUOTE and MAX_SPREAD_BPS 500 are on; quote age and notional are off.
    assert outcomes == {
        "S0": "guarded",
        "S1": "guarded",
        "S2": "closed",
        "S3": "closed",
        "S4": "closed",
    }
