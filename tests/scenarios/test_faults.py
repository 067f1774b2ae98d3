"""Fault injection: every position closed exactly once, checked at the server, not in our logs.

Unknown outcomes of every kind (close applied then the connection dropped, the reply lost to a
timeout, a 500 or a proxy's HTML 502 after applying, a reply that is not the envelope), plus
503s, 429s and a server-side rate limit.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.support import events_emitted, seed_accounts, the_truth
from worker.inputs.targets import TargetSpec
from worker.observe import events
from worker.results import Fate, Outcome
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import UNKNOWN_OUTCOMES_30, Faults, Simulator


async def test_1000_positions_under_30pct_unknown_outcomes_503s_and_a_rate_limit(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 10, 100)
    sim.config.rate_limit = 400
    sim.config.faults = {
        "close": Faults(p_503=0.10, retry_after_s=0.01, hang_s=0.5, **UNKNOWN_OUTCOMES_30),
        "orders": Faults(p_503=0.05, p_drop_before=0.02, retry_after_s=0.01),
        "positions": Faults(p_503=0.05, retry_after_s=0.01),
    }
    report = tmp_path / "r.json"
    result = await run(
        # 10 tries: with ~20% of attempts provably unapplied, the odds that some target of
        # 1,000 runs out of tries are about 1 in 10,000, so this test does not flake.
        settings_for(sim, concurrency=32, request_timeout=0.25, max_attempts=10),
        RunRequest(specs=[TargetSpec(20001 + n, None) for n in range(10)], report_path=report),
        asyncio.Event(),
    )
    failed = [(r.instrument, r.attempts, r.error) for r in result.results if r.error]
    assert result.exit_code == ExitCode.OK, failed[:5]
    # Closed means read flat: no fill is pending at the server, nothing is left to fill.
    assert all(sim.position_quantity(a, i) == 0 for a, i in positions)
    the_truth(sim, None, positions, fill_first=True, one_order=True)
    doc = json.loads(report.read_text())
    listed = {o["id"] for r in doc["results"] for o in r["orders"]}
    assert {o["id"] for a, i in positions for o in sim.closing_orders(a, i)} == listed
    assert len(doc["results"]) == 1000
    assert {r["outcome"] for r in doc["results"]} <= {"closed", "already_flat"}
    injected = sim.stats.faults_injected
    assert sum(injected[k] for k in ("drop_after", "hang_after", "500_after")) > 100
    assert injected["503"] > 50


async def test_close_applied_then_dropped_is_reconciled_not_resent(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "25")
    sim.config.faults = {"close": Faults(p_drop_after=1.0)}
    with events_emitted() as emitted:
        result = await run(
            settings_for(sim), RunRequest(specs=[TargetSpec(19816, "GOOG")]), asyncio.Event()
        )
    assert result.exit_code == ExitCode.OK
    assert len(sim.closing_orders(19816, "GOOG")) == 1
    [target] = result.results
    assert target.outcome is Outcome.CLOSED
    assert target.reconciled
    [order_event] = [e for e in emitted if e["event"] == events.CLOSE_ORDER]
    assert order_event["reconciled"] is True
    assert order_event["request_id"]  # the look-up's


async def test_close_dropped_before_applying_is_looked_at_then_sent_again(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "25")
    sim.config.faults = {"close": Faults(p_drop_before=0.5)}
    sim.config.seed = 3
    result = await run(
        settings_for(sim, max_attempts=10),
        RunRequest(specs=[TargetSpec(19816, "GOOG")]),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.OK
    assert len(sim.closing_orders(19816, "GOOG")) == 1


async def test_unknown_outcome_that_cannot_be_checked_fails_without_resending(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "25")
    sim.config.faults = {
        "close": Faults(p_drop_before=1.0),
        "orders": Faults(p_503=1.0, retry_after_s=0.001),
    }
    result = await run(
        settings_for(sim), RunRequest(specs=[TargetSpec(19816, "GOOG")]), asyncio.Event()
    )
    assert result.exit_code == ExitCode.FAILED
    assert sim.stats.by_route["close"] == 1  # never re-sent without knowing
    [target] = result.results
    assert target.error is not None
    assert "outcome unknown" in target.error


async def test_429_storm_is_retried_honouring_retry_after(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "25")
    sim.config.faults = {"close": Faults(p_429=0.6, retry_after_s=0.05)}
    sim.config.seed = 1  # its rolls: 0.13 (a 429), then 0.85 (through)
    with events_emitted() as emitted:
        result = await run(
            settings_for(sim, max_attempts=10),
            RunRequest(specs=[TargetSpec(19816, "GOOG")]),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.OK
    assert len(sim.closing_orders(19816, "GOOG")) == 1
    [retry] = [e for e in emitted if e["event"] == events.CLOSE_RETRY]
    assert retry["wait_s"] == 0.05  # the server's Retry-After, not our backoff
    assert sim.stats.status_counts[429] == 1


async def test_resting_order_is_cancelled_before_the_close(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "25")
    resting = sim.add_resting_order(19816, "GOOG", "SELL", "25", "999.00")
    result = await run(
        settings_for(sim), RunRequest(specs=[TargetSpec(19816, "GOOG")]), asyncio.Event()
    )
    assert result.exit_code == ExitCode.OK
    statuses = {o["id"]: o["status"] for o in sim.orders_of(19816)}
    assert statuses[resting] == "CANCELED"


async def test_rerun_while_earlier_closing_orders_still_work_sends_no_second_close(
    sim: Simulator, settings_for: Any
) -> None:
    positions = seed_accounts(sim, 2, 20)
    sim.config.fill_delay_s = 3600  # orders stay working; positions still show full quantity
    specs = [TargetSpec(20001, None), TargetSpec(20002, None)]
    quick = settings_for(sim, flat_timeout=0.2, follow_pause=0.05)
    first = await run(quick, RunRequest(specs=specs), asyncio.Event())
    assert first.exit_code == ExitCode.FAILED  # sent, but not flat: nothing filled
    assert {r.outcome for r in first.results} == {Outcome.NOT_FLAT}
    sim.fill_due_in(0.5)  # the market fills them while the rerun follows
    second = await run(
        settings_for(sim, follow_pause=0.05), RunRequest(specs=specs), asyncio.Event()
    )
    assert second.exit_code == ExitCode.OK
    assert {r.outcome for r in second.results} == {Outcome.CLOSED}
    assert all(r.reconciled for r in second.results)
    the_truth(sim, None, positions, fill_first=True, one_order=True)
    assert all(sim.position_quantity(a, i) == 0 for a, i in positions)


async def test_rerun_closes_again_when_the_earlier_closing_order_was_cancelled(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "25")
    sim.config.fill_delay_s = 3600
    specs = [TargetSpec(19816, "GOOG")]
    quick = settings_for(sim, flat_timeout=0.2, follow_pause=0.05)
    await run(quick, RunRequest(specs=specs), asyncio.Event())
    [first_order] = sim.closing_orders(19816, "GOOG")
    sim.cancel_order(19816, first_order["id"])
    sim.config.fill_delay_s = 0.05
    second = await run(
        settings_for(sim, follow_pause=0.05), RunRequest(specs=specs), asyncio.Event()
    )
    assert second.exit_code == ExitCode.OK
    assert len(sim.closing_orders(19816, "GOOG")) == 2
    assert sim.position_quantity(19816, "GOOG") == 0


async def test_409_duplicate_is_not_retried_and_following_sees_the_pending_close_fill(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "25")
    sim.config.fill_delay_s = 1.0
    sim.config.refuse_duplicate_closes = True
    sim.book.close(sim.book.accounts[19816], "GOOG", True)  # closed at the desk a moment ago
    result = await run(
        settings_for(sim, follow_pause=0.05),
        RunRequest(specs=[TargetSpec(19816, "GOOG")]),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.OK
    assert sim.stats.status_counts[409] == 1
    assert len(sim.closing_orders(19816, "GOOG")) == 1
    assert sim.position_quantity(19816, "GOOG") == 0
    [target] = result.results
    # The desk's order predates the run: not the worker's close, and nothing of the run filled.
    assert target.outcome is Outcome.ALREADY_FLAT
    assert target.fate is Fate.REFUSED
    assert target.reconciled
