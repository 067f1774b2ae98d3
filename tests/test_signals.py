"""Stopping and crashing mid-run, as a whole process, then a rerun: nothing is closed twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from tests.support import (
    assert_exactly_once,
    fill_after_the_plan,
    finish,
    seed_accounts,
    start_liquidator,
    until_closes_seen,
)
from worker.simulator import Faults, Simulator


async def start_worker(
    sim: Simulator, tmp_path: Path, report: Path, *extra: str
) -> asyncio.subprocess.Process:
    return await start_liquidator(
        sim, tmp_path / "state", report, *extra, LIQUIDATOR_FOLLOW_PAUSE="0.05"
    )


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

    sim.config.faults = {}
    fill_after_the_plan(sim, [20001, 20002])  # the first run's orders, while the rerun follows
    rerun = tmp_path / "second.json"
    code, output = await finish(await start_worker(sim, tmp_path, rerun))
    assert code == 0, output
    assert_exactly_once(sim, positions)
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
    assert doc["summary"] == {
        "targets": 20,
        "closed": 0,
        "already_flat": 0,
        "failed": 0,
        "skipped": 16,
        "not_flat": 4,  # found by their look-ups, still working when the run stopped
        "market_closed": 0,
        "extra_orders": 0,
    }
    sim.config.faults = {}
    sim.fill_due_in(1.0)
    sim.config.fill_delay_s = 0.05  # and the rerun's own closes
    code, output = await finish(await start_worker(sim, tmp_path, tmp_path / "again.json"))
    assert code == 0, output
    assert_exactly_once(sim, positions)


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
    sim.config.faults = {}
    sim.fill_due_in(1.0)
    sim.config.fill_delay_s = 0.05  # and the rerun's own closes
    code, output = await finish(await start_worker(sim, tmp_path, tmp_path / "rerun.json"))
    assert code == 0, output
    assert_exactly_once(sim, positions)


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
