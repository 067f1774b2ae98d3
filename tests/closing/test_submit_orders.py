"""CLOSE_VIA=submit_orders and --at-close: exactly once by client id, counted at the server.

Every test counts what the simulator holds: the closing orders per position, their client ids,
what filled, flips, and the requests that change anything.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from tests.support import (
    FAST_FOLLOW,
    api_for,
    clean_env,
    events_emitted,
    run_cli,
    seed_accounts,
    the_truth,
)
from tests.support import liquidate as liquidate_with
from tests.support import seed_held as seed
from worker.api.client import NewOrder, Side
from worker.cli.terminal import Terminal
from worker.closing.client_ids import client_order_id
from worker.inputs.targets import TargetSpec
from worker.journal.keys import job_key
from worker.journal.store import Intent, Journal
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, SimConfig, Simulator
from worker.simulator.config import UNKNOWN_OUTCOMES_30

CHANGES = ("close", "submit", "cancel")  # the routes that change anything at the server


# Every close here goes through submit_orders, unless a test says otherwise.
liquidate = functools.partial(liquidate_with, close_via="submit_orders")


async def test_unknown_outcomes_503s_and_a_late_gateway_end_flat_each_closed_once(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """The issue's "done when", scaled down: fills 0.2 s, timeout 0.1 s, late by 0.3 s.

    One order a request (BATCH_SIZE 1), so the faults meet many sends; batches meet the same
    faults in tests/scenarios/test_batch_faults.py."""
    keys = seed(sim, 71001, [10 + k if k % 3 else -(10 + k) for k in range(40)])
    sim.config.fill_delay_s = 0.2
    submit = Faults(**UNKNOWN_OUTCOMES_30, p_503=0.1, p_apply_late=0.2, apply_late_s=0.3)
    submit.hang_s = 0.3
    sim.config.faults = {"submit": submit}
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(71001, None)],
        request_timeout=0.1, max_attempts=16, batch_size=1,
    )  # fmt: skip
    assert result.exit_code == ExitCode.OK, doc["summary"]
    assert sim.stats.faults_injected["apply_late"] > 0
    assert sim.stats.status_counts[409] > 0  # re-sent ids refused: found, never created twice
    assert sim.stats.by_route["close"] == 0  # submit_orders only
    the_truth(sim, doc, keys, flat=True, client_ids=True)


async def test_partial_fills_get_residue_closes_under_new_ids_for_what_is_left(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 71009, [100, -60, 40, 80, -20, 30])
    sim.config.p_partial_fill = 0.5
    sim.config.fill_delay_s = 0.02
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(71009, None)], max_residue_closes=8
    )
    assert result.exit_code == ExitCode.OK, doc["summary"]
    generations = [
        int(o["client_order_id"].rsplit("-g", 1)[1])
        for account, iid, _ in keys
        for o in sim.closing_orders(account, iid)
    ]
    assert max(generations) >= 1  # some residue closes went out, each under a new id
    the_truth(
        sim, doc, keys, flat=True, client_ids=True
    )  # each for what was left: the fills add up to what was held


async def test_a_rerun_adopts_the_journaled_ids_still_working(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """A crash after the intents were committed: the rerun finds the orders by their journaled
    ids, still working, and follows them; it sends nothing (tests/scenarios/test_adoption.py)."""
    keys = seed(sim, 71002, [25, -40, 15])
    # Still working when the rerun adopts, after it waited out the killed run (settle_s).
    sim.config.fill_delay_s = 2.5
    settings = settings_for(sim, **FAST_FOLLOW, close_via="submit_orders")
    # The first run, as it stood when killed: intents committed, orders sent, none answered.
    day = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    job = job_key(day.date().isoformat())
    journal = Journal.in_dir(settings.state_dir)
    journal.start_run(
        run_id="killed", job=job, base_url=settings.base_url,
        trading_day=day.date().isoformat(), started_at=datetime.now(UTC), dry_run=False,
    )  # fmt: skip
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        for account, iid, held in keys:
            cid = client_order_id(job, account, iid, 0)
            await journal.record_intent(
                "killed", Intent(account, iid, 1, datetime.now(UTC), client_id=cid)
            )
            side: Side = "SELL" if held > 0 else "BUY"
            await api.submit_order(account, NewOrder(cid, iid, side, Decimal(abs(held))))
    journal.close()
    # Still working when the rerun plans: the rerun must not send a second order.
    result = await run(
        settings, RunRequest(specs=[TargetSpec(71002, None)], report_path=tmp_path / "r.json"),
        asyncio.Event(),
    )  # fmt: skip
    doc = json.loads((tmp_path / "r.json").read_text())
    assert result.exit_code == ExitCode.OK, doc["summary"]
    assert sim.stats.status_counts[409] == 0  # not even sent again to be found
    assert sim.stats.by_route["submit"] == len(keys)  # the killed run's, only
    assert sim.stats.by_route["orders"] >= 1
    the_truth(sim, doc, keys, flat=True, client_ids=True)


async def test_resting_orders_are_cancelled_and_waited_for_before_the_submission(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """A cancel that lingers in PENDING_CANCEL: submitting at once would be refused (self-match)."""
    keys = seed(sim, 71003, [30])
    sim.config.self_match_check = True
    sim.config.cancel_linger_s = 0.3
    sim.config.fill_delay_s = 0.05
    sim.add_resting_order(71003, "S0", "BUY", "5", "1.00")
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(71003, None, cancel_orders=True)]
    )
    assert result.exit_code == ExitCode.OK, doc
    assert sim.stats.status_counts[400] == 0  # never refused: it waited for the cancel
    assert sim.stats.by_route["cancel"] == 1
    assert sim.stats.by_route["submit"] == 1
    the_truth(sim, doc, keys, flat=True, client_ids=True)


async def test_a_self_match_refusal_fails_the_target_with_the_servers_reason(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    seed(sim, 71004, [30])
    sim.config.self_match_check = True
    sim.add_resting_order(71004, "S0", "BUY", "5", "1.00")
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(71004, None, cancel_orders=False)]
    )
    assert result.exit_code == ExitCode.FAILED
    assert "SELF_MATCH" in doc["results"][0]["error"] or "Self-Match" in doc["results"][0]["error"]
    assert sim.stats.by_route["submit"] == 1


@pytest.fixture
def sim_config() -> SimConfig:
    # The simulated regular close 0.6 s from now: market-on-close orders fill then.
    close = datetime.now(UTC) + timedelta(seconds=0.6)
    return SimConfig(regular_close_at=close, fill_delay_s=0.01)


@pytest.mark.solo  # its orders must go within 0.3 s of the simulated cutoff
async def test_at_close_before_the_cutoff_sends_moc_orders_that_fill_at_the_close(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 71005, [20, -35])
    started = time.time()
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(71005, None)], at_close=True, moc_cutoff="0.3s"
    )
    assert result.exit_code == ExitCode.OK, doc
    assert time.time() - started >= 0.5  # flat only after the simulated close
    for account, iid, _ in keys:
        assert {o["time_in_force"] for o in sim.closing_orders(account, iid)} == {"AT_THE_CLOSE"}
    the_truth(sim, doc, keys, flat=True, client_ids=True)


async def test_at_close_after_the_cutoff_exits_2_and_changes_nothing(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 71006, [20])
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(71006, None)], at_close=True, moc_cutoff="1s"
    )
    assert result.exit_code == ExitCode.INVALID, doc
    assert "cutoff" in (result.aborted or "")
    assert sum(sim.stats.by_route[r] for r in CHANGES) == 0
    assert sim.position_quantity(71006, keys[0][1]) == 20


async def test_cancelled_orders_still_working_after_the_wait_fail_the_target_unsent(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    seed(sim, 71007, [30])
    sim.config.cancel_linger_s = 60  # the venue never confirms the cancel in time
    sim.add_resting_order(71007, "S0", "BUY", "5", "1.00")
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(71007, None, cancel_orders=True)],
        flat_timeout=0.3,
    )  # fmt: skip
    assert result.exit_code == ExitCode.FAILED
    assert "still working" in doc["results"][0]["error"]
    assert sim.stats.by_route["submit"] == 0


async def test_a_dry_run_says_the_cutoff_has_passed_and_exits_0(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    seed(sim, 71008, [20])
    settings = settings_for(sim, **FAST_FOLLOW, at_close=True, moc_cutoff="1s")
    screen = Console(record=True, width=100)
    request = RunRequest(
        [TargetSpec(71008, None)], dry_run=True, watcher=Terminal(screen, scrub=str)
    )
    with events_emitted() as emitted:
        result = await run(settings, request, asyncio.Event())
    assert result.exit_code == ExitCode.OK
    assert "Market-on-close: cutoff passed" in screen.export_text()  # the plan on a terminal
    [cutoff] = [e for e in emitted if e["event"] == "moc_cutoff"]
    assert cutoff["passed"] is True
    assert sum(sim.stats.by_route[r] for r in CHANGES) == 0


@pytest.mark.solo
async def test_sigkill_mid_run_then_the_same_command_closes_nothing_twice(
    sim: Simulator, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 2, 60)
    held = {(a, i): sim.position_quantity(a, i) for a, i in positions}
    # Orders still work when the rerun plans (it starts a Python process: under load, a
    # second or more), so the rerun meets the killed run's orders by their client ids.
    sim.config.fill_delay_s = 2.0
    # Some submissions land only after the kill, while the rerun re-sends their ids.
    sim.config.faults = {"submit": Faults(latency_s=0.03, p_apply_late=0.2, apply_late_s=0.5)}
    env = {
        **clean_env(),
        "LIQUIDATOR_API_KEY": sim.config.api_key,
        "LIQUIDATOR_STATE_DIR": str(tmp_path / "state"),
        "LIQUIDATOR_LOG_FORMAT": "json",
        "LIQUIDATOR_RATE_LIMIT": "0",
        "LIQUIDATOR_REQUEST_TIMEOUT": "0.2",
        # Batches of 7: the kill comes between batches and in the middle of one.
        "LIQUIDATOR_BATCH_SIZE": "7",
    }
    command = (
        sys.executable, "-m", "worker", "run", "--yes", "--close-via", "submit_orders",
        "--base-url", sim.base_url, "--account", "20001", "--account", "20002",
    )  # fmt: skip
    first = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    deadline = time.monotonic() + 20
    while sum(sim.stats.submit_batch_sizes) < 40:  # orders read by the server
        assert time.monotonic() < deadline, "the first run never got going"
        await asyncio.sleep(0.01)
    first.kill()
    await first.wait()
    sim.config.faults = {}
    code, output = await run_cli(*command[3:], "--report", str(tmp_path / "r.json"), env=env)
    assert code == 0, output
    # The killed run's ids, found again: adopted while they work, or refused (409) when the
    # rerun re-sends one whose submission landed late.
    assert sim.stats.status_counts[409] > 0 or '"order_adopted"' in output
    doc = json.loads((tmp_path / "r.json").read_text())
    the_truth(
        sim,
        doc,
        [(a, i, int(q)) for (a, i), q in held.items()],
        flat=True,
        client_ids=True,
        all_in=False,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_journal_commits_each_client_id_with_its_intent_and_priors_expose_it(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
    journal: Journal
    if backend == "sqlite":
        journal = Journal.in_dir(tmp_path)
    else:
        from worker.journal.postgres import PgJournal

        journal = await PgJournal.open(request.getfixturevalue("pg_url"), scope="s", lock_wait=0)
    journal.start_run(
        run_id="r1", job="j", base_url="u", trading_day="d", started_at=t0, dry_run=False
    )
    await journal.record_intent(
        "r1", Intent(7, "a", 1, t0, client_id=client_order_id("j", 7, "a", 0))
    )
    await journal.record_intent(
        "r1", Intent(7, "a", 2, t0, client_id=client_order_id("j", 7, "a", 1), generation=1)
    )
    await journal.record_intent("r1", Intent(7, "b", 1, t0))  # close_position: no client id
    # Committed when record_intent() returned: a rerun (another run of the job) sees them.
    priors = journal.priors("j", "r2")
    assert priors[(7, "a")].generation == 1
    assert priors[(7, "b")].generation is None
    journal.close()
