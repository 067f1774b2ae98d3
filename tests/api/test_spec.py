"""Every request the worker sends, and every simulator reply, validates against the spec."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.spec_validation import REFERENCE, SPEC, load_spec, validate_request, validate_response
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, Simulator


async def test_every_request_of_a_run_with_looks_and_timing_matches_the_spec(
    sim: Simulator, settings_for: Any
) -> None:
    sim.seed_book(3, 12)
    sim.config.regular_close_at = datetime.now(UTC) + timedelta(hours=1)
    sim.add_resting_order(10001, "AAPL", "SELL", "10", "999.00")
    sim.config.faults = {"close": Faults(p_drop_after=0.3, p_drop_before=0.1)}
    specs = [
        TargetSpec(10001, None),
        TargetSpec(10002, "MSFT"),
        TargetSpec(10002, sim.instrument_id(10002, "GOOG"), cancel_orders=False),
        TargetSpec(10003, None, exclude=frozenset({"SPY"})),
    ]
    result = await run(
        settings_for(sim, max_attempts=8),
        RunRequest(specs=specs, before_close=timedelta(hours=24)),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.OK
    routes = {r.route for r in sim.requests}
    assert {"clock", "market_hours", "positions", "orders", "close"} <= routes
    for recorded in sim.requests:
        validate_request(recorded)


async def test_simulator_replies_match_the_spec(sim: Simulator, settings_for: Any) -> None:
    sim.seed_book(2, 10)
    sim.config.faults = {"close": Faults(p_drop_after=0.5)}
    await run(
        settings_for(sim, max_attempts=8),
        RunRequest(specs=[TargetSpec(10001, None), TargetSpec(10002, "NOPE")]),
        asyncio.Event(),
    )
    checked = 0
    for recorded in sim.requests:
        if recorded.response_status in (200, 400, 403, 500):  # the statuses the spec describes
            validate_response(recorded)
            checked += 1
    assert checked >= 10


def test_a_missing_spec_fails_in_ci_and_skips_elsewhere(tmp_path: Path) -> None:
    missing = tmp_path / "no-spec.json"
    with pytest.raises(pytest.fail.Exception, match="CI: the official spec is not at"):
        load_spec(missing, {"CI": "true"})
    with pytest.raises(pytest.skip.Exception) as skipped:
        load_spec(missing, {})
    # It says where the spec is published and where to put it.
    assert "https://docs.clearstreet.com/api" in str(skipped.value)
    assert "as JSON: python3 -c" in str(skipped.value)
    assert str(missing) in str(skipped.value)


def test_the_kept_spec_is_the_reference_copy_where_one_is_beside_the_checkout() -> None:
    """The repository's copy is what the tests check against; where the project's reference
    copy sits beside the checkout (../shared), the two must be the same document."""
    assert SPEC.exists(), SPEC
    if not REFERENCE.exists():
        pytest.skip(f"no reference copy at {REFERENCE} to compare with")
    assert SPEC.read_bytes() == REFERENCE.read_bytes(), "tests/spec/ differs from ../shared/"
