"""Whole processes on one SQLite journal, counted at the server: two at once, a crash and a
rerun under another spelling of the API's URL, a damaged log, an unusable state directory."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    event_lines,
    events_emitted,
    fill_after_the_plan,
    finish,
    seed_accounts,
    start_liquidator,
    the_truth,
    until_closes_seen,
)
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, Simulator


async def start_run(
    sim: Simulator, state: Path, report: Path, *extra: str, base_url: str | None = None
) -> asyncio.subprocess.Process:
    return await start_liquidator(sim, state, report, *extra, base_url=base_url)


async def test_two_runs_at_once_on_one_journal_one_closes_the_other_exits_2(
    sim: Simulator, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 2, 60)
    sim.config.faults = {"close": Faults(latency_s=0.05)}
    reports = [tmp_path / "a.json", tmp_path / "b.json"]
    procs = [
        await start_run(sim, tmp_path / "state", report, "--concurrency", "4") for report in reports
    ]
    (code_a, out_a), (code_b, out_b) = await asyncio.gather(*(finish(p) for p in procs))
    assert sorted([code_a, code_b]) == [0, 2], out_a + out_b
    refused, report = (out_a, reports[0]) if code_a == 2 else (out_b, reports[1])
    holder = procs[1] if code_a == 2 else procs[0]
    assert f"pid {holder.pid}, since " in refused
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 2
    assert doc["summary"]["closed"] == 0
    assert event_lines(refused, "run_finished")[0]["exit_code"] == 2
    the_truth(sim, None, positions, fill_first=True, one_order=True)
    assert sim.stats.by_route["close"] == len(positions)


@pytest.mark.solo
async def test_a_waiting_run_goes_after_the_first_and_closes_nothing_twice(
    sim: Simulator, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 2, 40)
    sim.config.fill_delay_s = 3600  # the first run's orders are still working for the second
    sim.config.faults = {"close": Faults(latency_s=0.1)}  # long enough for the second to start
    first = await start_run(
        sim, tmp_path / "state", tmp_path / "a.json", "--concurrency", "4", "--flat-timeout", "0.5"
    )
    await until_closes_seen(sim, 5)
    # The first run's orders fill while the second follows: registered before the second
    # starts, so its plan can never come first (the first lists whole accounts only once).
    fill_after_the_plan(sim, [20001, 20002])
    second = await start_liquidator(
        sim, tmp_path / "state", tmp_path / "b.json", "--lock-wait", "30",
        LIQUIDATOR_REQUEST_TIMEOUT="1", LIQUIDATOR_RECONCILE_DELAY="0.2",
    )  # fmt: skip
    code_a, out_a = await finish(first)
    code_b, out_b = await finish(second)
    assert (code_a, code_b) == (1, 0), out_a + out_b  # the first: not flat within its 0.5 s
    assert event_lines(out_b, "lock_waiting")
    [found] = event_lines(out_b, "previous_run_found")
    assert found["positions_touched"] == len(positions)  # looked up, every one, before sending
    # The first run finished, but a gateway may still apply its last requests: the second
    # waits REQUEST_TIMEOUT + RECONCILE_DELAY + LOCK_FRESH_S from the first run's end.
    settle_s: Any = found["settle_s"]
    assert 0 < settle_s <= 1.45
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_crash_then_a_rerun_with_the_url_spelled_differently_closes_nothing_twice(
    sim: Simulator, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 2, 100)
    sim.config.fill_delay_s = 3600
    sim.config.faults = {"close": Faults(latency_s=0.03)}
    proc = await start_run(sim, tmp_path / "state", tmp_path / "killed.json")
    await until_closes_seen(sim, 40)
    proc.kill()
    await proc.wait()
    sim.config.faults = {}
    fill_after_the_plan(sim, [20001, 20002])  # the killed run's orders, while the rerun follows
    port = sim.base_url.rsplit(":", 1)[1]
    code, output = await finish(
        await start_run(
            sim, tmp_path / "state", tmp_path / "rerun.json", base_url=f"HTTP://LocalHost:{port}/"
        )
    )
    assert code == 0, output
    [found] = event_lines(output, "previous_run_found")
    assert isinstance(found["positions_touched"], int)
    assert found["positions_touched"] >= 40
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_a_damaged_log_after_a_crash_refuses_the_rerun_and_nothing_is_lost(
    sim: Simulator, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 2, 100)
    sim.config.fill_delay_s = 3600
    sim.config.faults = {"close": Faults(latency_s=0.03)}
    state = tmp_path / "state"
    proc = await start_run(sim, state, tmp_path / "killed.json")
    await until_closes_seen(sim, 40)
    proc.kill()
    await proc.wait()
    sim.config.faults = {}
    wal = state / "journal.sqlite3-wal"
    with wal.open("r+b" if wal.exists() else "wb") as f:
        f.write(os.urandom(200))  # over the log's header
    requests_before = sim.stats.requests
    report = tmp_path / "refused.json"
    code, output = await finish(await start_run(sim, state, report))
    assert code == 2, output
    assert sim.stats.requests == requests_before  # not even the key check
    assert str(wal) in output
    assert "liquidator journal verify" in output
    assert json.loads(report.read_text())["exit_code"] == 2
    # What the message says to do: keep the damaged log aside; the main file has every intent.
    wal.rename(tmp_path / "journal.sqlite3-wal.damaged")
    fill_after_the_plan(sim, [20001, 20002])  # the killed run's orders, while the rerun follows
    code, output = await finish(await start_run(sim, state, tmp_path / "rerun.json"))
    assert code == 0, output
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_an_unusable_state_dir_exits_2_before_any_request_with_report_and_finish(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    report = tmp_path / "r.json"
    code, output = await finish(await start_run(sim, blocker / "state", report))
    assert code == 2, output
    assert sim.stats.requests == 0
    assert "state_dir" in output
    [finished] = event_lines(output, "run_finished")
    assert finished["exit_code"] == 2
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 2
    assert "journal" in doc["aborted"]


async def test_a_dry_run_takes_no_lock(sim: Simulator, tmp_path: Path) -> None:
    seed_accounts(sim, 2, 2)
    state = tmp_path / "state"
    state.mkdir()
    from worker.journal.lock import FileLock

    held = FileLock(state / "journal.lock")
    assert held.try_acquire()
    code, output = await finish(await start_run(sim, state, tmp_path / "r.json", "--dry-run"))
    held.release()
    assert code == 0, output
    assert sim.stats.by_route["close"] == 0


async def test_previous_run_found_counts_only_this_runs_targets(
    sim: Simulator, settings_for: Any
) -> None:
    positions = seed_accounts(sim, 2, 6)
    sim.config.fill_delay_s = 3600  # still open, their closes working, at the rerun
    both = [TargetSpec(20001, None), TargetSpec(20002, None)]
    first = await run(settings_for(sim, flat_timeout=0.3), RunRequest(specs=both), asyncio.Event())
    assert first.exit_code == ExitCode.FAILED  # not flat within 0.3 s: the orders are working
    sim.fill_due_in(0.3)  # the market fills them while the rerun follows
    with events_emitted() as emitted:
        rerun = await run(settings_for(sim), RunRequest(specs=both[:1]), asyncio.Event())
    assert rerun.exit_code == ExitCode.OK
    [found] = [e for e in emitted if e["event"] == "previous_run_found"]
    assert found["positions_touched"] == 6  # account 20001's, not the twelve the journal knows
    assert all(r.reconciled for r in rerun.results)
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_sigterm_while_standing_by_aborts_with_exit_3_and_sends_nothing(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    from worker.journal.lock import FileLock

    seed_accounts(sim, 1, 3)
    (tmp_path / "state").mkdir()
    held = FileLock(tmp_path / "state" / "journal.lock")
    assert held.try_acquire()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    result = await run(
        settings_for(sim, lock_wait=60), RunRequest(specs=[TargetSpec(20001, None)]), stop
    )
    held.release()
    assert result.exit_code == ExitCode.ABORTED
    assert result.aborted is not None
    assert "stop requested while waiting" in result.aborted
    assert sim.stats.requests == 0
