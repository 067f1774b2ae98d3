"""Stopping and crashing mid-run, as a whole process, then a rerun: nothing is closed twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from tests.support import (
    event_lines,
    fill_after_the_plan,
    finish,
    seed_accounts,
    start_liquidator,
    stopped_cleanly,
    the_truth,
    until_closes_seen,
)
from worker.simulator import Faults, Simulator


async def start_worker(
    sim: Simulator, tmp_path: Path, report: Path, *extra: str
) -> asyncio.subprocess.Process:
    return await start_liquidator(
        sim, tmp_path / "state", report, *extra, LIQUIDATOR_FOLLOW_PAUSE="0.05"
    )


def journal_intents(state: Path, *, result: str | None = None) -> set[tuple[int, str]]:
    """The positions the journal holds an intent to close for (every run in it); with `result`,
    only those whose attempt was recorded with that result."""
    sql = "SELECT a.account_id, a.instrument_id FROM attempts a"
    if result is not None:
        sql += (
            " JOIN attempt_results x ON x.run_id = a.run_id AND x.account_id = a.account_id"
            " AND x.instrument_id = a.instrument_id AND x.attempt = a.attempt WHERE x.result = ?"
        )
    with contextlib.closing(sqlite3.connect(state / "journal.sqlite3")) as db:
        return {(a, i) for a, i in db.execute(sql, () if result is None else (result,))}


async def test_sigterm_stops_with_exit_3_then_the_rerun_closes_the_rest_once(
    sim: Simulator, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 2, 150)
    sim.config.fill_delay_s = 3600  # the first run's orders are still working at the rerun
    sim.config.faults = {"close": Faults(latency_s=0.03)}
    report = tmp_path / "first.json"
    proc = await start_worker(sim, tmp_path, report, "--concurrency", "4")
    await until_closes_seen(sim, 20)
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code, output = await finish(proc)
    assert code == 3, output
    assert time.monotonic() - signalled < 10
    first = json.loads(report.read_text())
    outcomes = [r["outcome"] for r in first["results"]]
    assert len(outcomes) == 300
    assert "skipped" in outcomes
    # Sent closes never fill in time here: not flat (or unknown), never closed.
    assert set(outcomes) <= {"not_flat", "skipped", "failed"}
    # First intents are recorded a block ahead of the sends; a run that stops in order keeps
    # the intents of the closes it sent (counted at the server), and of those it was about to
    # send when the stop came (recorded as stopped), and withdraws the rest.
    sent = {(a, i) for a, i in positions if sim.closing_orders(a, i)}
    intents = journal_intents(tmp_path / "state")
    assert sent <= intents
    assert intents - sent == journal_intents(tmp_path / "state", result="stopped") - sent

    sim.config.faults = {}
    fill_after_the_plan(sim, [20001, 20002])  # the first run's orders, while the rerun follows
    rerun = tmp_path / "second.json"
    code, output = await finish(await start_worker(sim, tmp_path, rerun))
    assert code == 0, output
    the_truth(sim, None, positions, fill_first=True, one_order=True)
    [found] = event_lines(output, "previous_run_found")
    assert found["positions_touched"] == len(intents)
    second = json.loads(rerun.read_text())
    reconciled = sum(r["reconciled"] for r in second["results"])
    assert reconciled >= sum(o == "not_flat" for o in outcomes)
    assert all(sim.position_quantity(a, i) == 0 for a, i in positions)


async def test_sigterm_with_closes_hanging_still_exits_3_inside_10s_on_defaults(
    sim: Simulator, tmp_path: Path
) -> None:
    # Default REQUEST_TIMEOUT and STOP_GRACE; every close is applied and its reply never comes.
    positions = seed_accounts(sim, 2, 10)
    sim.config.fill_delay_s = 3600
    sim.config.faults = {"close": Faults(p_hang_after=1.0, hang_s=60)}
    report = tmp_path / "r.json"
    proc = await start_worker(sim, tmp_path, report, "--concurrency", "4")
    await until_closes_seen(sim, 4)
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code, output = await finish(proc)
    assert code == 3, output
    assert time.monotonic() - signalled < 10
    # Only the four closes in flight at the signal were ever sent; the look-ups found them.
    assert sim.stats.by_route["close"] == 4
    doc = json.loads(report.read_text())
    counts = {
        "targets": 20,
        "closed": 0,
        "already_flat": 0,
        "failed": 0,
        "skipped": 16,
        "not_flat": 4,  # found by their look-ups, still working when the run stopped
        "market_closed": 0,
        "guarded": 0,
        "extra_orders": 0,
    }
    assert {k: doc["summary"][k] for k in counts} == counts
    sim.config.faults = {}
    sim.fill_due_in(1.0)
    sim.config.fill_delay_s = 0.05  # and the rerun's own closes
    code, output = await finish(await start_worker(sim, tmp_path, tmp_path / "again.json"))
    assert code == 0, output
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_sigkill_mid_run_then_rerun_closes_nothing_twice(
    sim: Simulator, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 2, 150)
    sim.config.fill_delay_s = 3600
    sim.config.faults = {"close": Faults(latency_s=0.03, p_drop_after=0.1)}
    proc = await start_worker(sim, tmp_path, tmp_path / "killed.json", "--concurrency", "8")
    await until_closes_seen(sim, 40)
    proc.kill()
    await proc.wait()
    # Every close the server saw had its intent on disk (some intents were recorded ahead of
    # closes never sent: the rerun looks at those positions too).
    sent = {(a, i) for a, i in positions if sim.closing_orders(a, i)}
    assert sent <= journal_intents(tmp_path / "state")
    sim.config.faults = {}
    sim.fill_due_in(1.0)
    sim.config.fill_delay_s = 0.05  # and the rerun's own closes
    code, output = await finish(await start_worker(sim, tmp_path, tmp_path / "rerun.json"))
    assert code == 0, output
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_no_terminal_and_no_yes_refuses_with_exit_2_and_sends_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "run",
        "--base-url",
        sim.base_url,
        "--account",
        "20001",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LIQUIDATOR_API_KEY": sim.config.api_key},
    )
    code, output = await finish(proc)
    assert code == 2
    assert "--yes" in output
    assert sim.stats.requests == 0


async def test_sighup_is_a_stop_like_sigterm_report_written_exit_3(
    sim: Simulator, tmp_path: Path
) -> None:
    """A closed terminal or session (SIGHUP) must not kill a run mid-flight: it stops in order,
    as for SIGTERM, and every close the server saw is in the report."""
    positions = seed_accounts(sim, 2, 100)
    sim.config.fill_delay_s = 3600
    sim.config.faults = {"close": Faults(latency_s=0.03)}
    report = tmp_path / "hup.json"
    proc = await start_worker(sim, tmp_path, report, "--concurrency", "4")
    await until_closes_seen(sim, 20)
    proc.send_signal(signal.SIGHUP)
    signalled = time.monotonic()
    code, output = await finish(proc)
    assert code == 3, output
    assert time.monotonic() - signalled < 10
    assert event_lines(output, "stop_requested")
    outcomes = stopped_cleanly(report, sim, positions, why="stop requested")
    assert outcomes["skipped"] > 0


@pytest.mark.parametrize("closed", [("stdout",), ("stdout", "stderr")])
async def test_a_closed_stdout_or_stderr_is_no_crash_the_run_finishes_and_reports(
    sim: Simulator, tmp_path: Path, closed: tuple[str, ...]
) -> None:
    """`liquidator run … | head`: the reader goes away mid-run. The run goes on, follows its
    closes, writes its report and exits as if nothing had happened to its output."""
    positions = seed_accounts(sim, 2, 100)
    sim.config.fill_delay_s = 0.05
    sim.config.faults = {"close": Faults(latency_s=0.03)}
    report = tmp_path / "piped.json"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "run", "--yes",
        "--base-url", sim.base_url, "--account", "20001", "--account", "20002",
        "--report", str(report), "--concurrency", "4",
        stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w,
        env={
            **os.environ,
            "LIQUIDATOR_API_KEY": sim.config.api_key,
            "LIQUIDATOR_STATE_DIR": str(tmp_path / "state"),
            "LIQUIDATOR_LOG_FORMAT": "json",
            "LIQUIDATOR_RATE_LIMIT": "0",
            "LIQUIDATOR_FOLLOW_PAUSE": "0.05",
        },
    )  # fmt: skip
    os.close(out_w)
    os.close(err_w)
    await until_closes_seen(sim, 20)
    assert os.read(out_r, 4096)  # it was writing events; now its reader goes away
    os.close(out_r)
    if "stderr" in closed:
        os.close(err_r)
    code = await asyncio.wait_for(proc.wait(), 30)
    errors = ""
    if "stderr" not in closed:
        errors = os.read(err_r, 65536).decode()
        os.close(err_r)
        assert "stdout closed" in errors
    assert "Traceback" not in errors
    assert code == 0, errors
    doc = json.loads(report.read_text())
    assert doc["summary"]["closed"] == len(positions), doc["summary"]
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_a_429_asking_for_an_hour_holds_the_run_only_as_long_as_the_cap_and_a_stop_reports(
    sim: Simulator, tmp_path: Path
) -> None:
    """`Retry-After: 3600` mid-run, then SIGTERM: the stop is not blocked by the server's pause,
    and the report says what the server did with the closes it had taken (filled: closed)."""
    positions = seed_accounts(sim, 2, 60)
    sim.config.fill_delay_s = 0.05
    sim.config.faults = {"close": Faults(latency_s=0.03)}
    report = tmp_path / "held.json"
    proc = await start_worker(sim, tmp_path, report, "--concurrency", "4")
    await until_closes_seen(sim, 20)
    sim.config.faults = {"close": Faults(p_429=1.0, retry_after_s=3600)}
    deadline = time.monotonic() + 10
    while sim.stats.faults_injected["429"] == 0:
        assert time.monotonic() < deadline, "no 429 was ever answered"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # the worker now holds every send
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code, output = await finish(proc)
    assert code == 3, output
    assert time.monotonic() - signalled < 10
    doc = json.loads(report.read_text())
    assert "stop requested" in doc["aborted"]
    by_key = {(r["account_id"], r["instrument_id"]): r for r in doc["results"]}
    taken = {(a, i) for a, i in positions if sim.closing_orders(a, i)}
    assert len(taken) >= 20
    # Each close the server took filled: closed, with its order; the rest were never applied
    # (429) or never sent, and nothing the server holds is missing from the report.
    assert {k for k, r in by_key.items() if r["outcome"] == "closed"} == taken
    listed = {o["id"] for r in doc["results"] for o in r["orders"]}
    assert {o["id"] for a, i in taken for o in sim.closing_orders(a, i)} <= listed
