"""Taking a job over from a run that died or lost its lock, counted at the simulator.

A rerun on the same state directory and a standby host on PostgreSQL wait out the dead run's
requests before they look; a host that lost its PostgreSQL session sends nothing more, however
its sends were queued (docs/journal.md)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support import (
    FAST_FOLLOW,
    end_journal_sessions,
    fill_after_the_plan,
    journal_lock_holders,
    seed_accounts,
    sim_behind,
    start_liquidator,
    the_truth,
    until_lock_taken_by_another,
)
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, SimConfig, Simulator

BOTH = [TargetSpec(20001, None), TargetSpec(20002, None)]
# Short, so that waiting out a dead run's requests takes a moment.
TAKEOVER = {"request_timeout": 1.0, "reconcile_delay": 0.2, "lock_wait": 30.0, **FAST_FOLLOW}


def is_close(request: web.Request) -> bool:
    return request.method == "DELETE" and "/positions/" in request.path


async def test_a_host_whose_sends_wait_behind_its_pace_sends_none_after_losing_its_session(
    settings_for: Any, pg_url: str
) -> None:
    """Host A (RATE_LIMIT 2) has committed the intents of the closes queued behind its pace
    when its session ends; standby B (RATE_LIMIT 20) takes over. Every close A still had queued
    must stay on A: none reaches the server while B waits out A's requests."""
    sim = Simulator(SimConfig(fill_delay_s=3600))  # A's orders still work when B looks
    positions = seed_accounts(sim, 2, 12)
    arrivals: list[float] = []  # monotonic, each close as the server receives it
    first_close = asyncio.Event()
    taken_at: list[float] = []  # when B held the lock

    @web.middleware
    async def end_a_session_at_its_third_close(
        request: web.Request, handler: Any
    ) -> web.StreamResponse:
        if is_close(request):
            arrivals.append(time.monotonic())
            first_close.set()
            if len(arrivals) == 3:
                fill_after_the_plan(sim, [20001, 20002], 0.3)  # as B follows (B lists later)
                [lost] = await asyncio.to_thread(journal_lock_holders, pg_url)
                await asyncio.to_thread(end_journal_sessions, pg_url)
                taken_at.append(await until_lock_taken_by_another(pg_url, lost))
        response: web.StreamResponse = await handler(request)
        return response

    async with sim_behind(sim, end_a_session_at_its_third_close) as base_url:
        common = {"base_url": base_url, "api_key": sim.config.api_key, "journal_url": pg_url}
        # Every target of A is in flight or queued behind its pace, its intent committed ahead.
        host_a = settings_for(**common, **TAKEOVER, concurrency=32, rate_limit=2, stop_grace=1)
        host_b = settings_for(**common, **TAKEOVER, concurrency=8, rate_limit=20)
        a = asyncio.create_task(run(host_a, RunRequest(specs=BOTH), asyncio.Event()))
        await first_close.wait()
        b = asyncio.create_task(run(host_b, RunRequest(specs=BOTH), asyncio.Event()))
        result_a, result_b = await asyncio.wait_for(asyncio.gather(a, b), 60)
    [taken] = taken_at
    # B sends nothing before REQUEST_TIMEOUT + RECONCILE_DELAY after it took the lock: any close
    # arriving then is one A sent without its lock.
    quiet_until = taken + TAKEOVER["request_timeout"] + TAKEOVER["reconcile_delay"]
    assert [t for t in arrivals if taken + 0.05 < t < quiet_until] == []
    assert result_a.exit_code == ExitCode.ABORTED
    assert result_b.exit_code == ExitCode.OK, result_b
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_a_rerun_at_once_waits_out_the_closes_the_killed_run_left_at_the_gateway(
    settings_for: Any, tmp_path: Path
) -> None:
    """The run is killed while its closes wait at the gateway (applied there a moment later,
    within REQUEST_TIMEOUT), and rerun at once on the same state directory. The rerun finds
    the lock free; it must still wait them out before it looks, or it closes them twice."""
    sim = Simulator(SimConfig(fill_delay_s=1.0))  # a close still works when the next comes
    positions = seed_accounts(sim, 2, 3)
    held = asyncio.Event()  # every close of the killed run is at the gateway
    arrived = 0
    kept: set[asyncio.Task[web.StreamResponse]] = set()

    @web.middleware
    async def the_gateway_holds_closes(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal arrived
        if not is_close(request) or arrived >= len(positions):
            response: web.StreamResponse = await handler(request)
            return response
        arrived += 1  # one of the killed run's closes
        await request.read()  # all of it is here: the gateway has the request

        async def apply_later() -> web.StreamResponse:
            await asyncio.sleep(0.7)
            applied: web.StreamResponse = await handler(request)
            return applied

        # Applied 0.7 s on, whether or not the client is still there to hear the reply.
        applying = asyncio.create_task(apply_later())
        kept.add(applying)
        if arrived == len(positions):
            held.set()
        return await asyncio.shield(applying)

    state = tmp_path / "state"
    async with sim_behind(sim, the_gateway_holds_closes) as base_url:
        killed = await start_liquidator(
            sim, state, tmp_path / "killed.json", base_url=base_url,
            LIQUIDATOR_REQUEST_TIMEOUT="1", LIQUIDATOR_RECONCILE_DELAY="0.2",
        )  # fmt: skip
        await asyncio.wait_for(held.wait(), 30)
        killed.kill()  # its lock goes with it; its run never finishes
        await killed.wait()
        settings = settings_for(
            base_url=base_url, api_key=sim.config.api_key, state_dir=state, **TAKEOVER
        )
        rerun = await asyncio.wait_for(run(settings, RunRequest(specs=BOTH), asyncio.Event()), 30)
        await asyncio.gather(*kept, return_exceptions=True)
    assert rerun.exit_code == ExitCode.OK, rerun
    the_truth(sim, None, positions, fill_first=True, one_order=True)


async def test_postgresql_restarting_mid_run_the_standby_waits_and_every_position_closes_once(
    settings_for: Any, pg_cluster: Any, pg_url: str
) -> None:
    """`pg_ctl restart -m fast` after 50 of 400 closes. The active host reconnects and goes on,
    or the standby (which keeps waiting through the restart) takes the lock first and the
    active host stops; either way nothing is left open and nothing is closed twice."""
    from tests.pg_cluster import restart, server_bin

    bindir = server_bin()
    assert bindir is not None
    sim = Simulator(SimConfig(fill_delay_s=0.5))  # working while the other host could send
    positions = seed_accounts(sim, 2, 200)
    closes = 0
    first_close, restarted = asyncio.Event(), asyncio.Event()

    @web.middleware
    async def restart_at_the_fiftieth_close(
        request: web.Request, handler: Any
    ) -> web.StreamResponse:
        nonlocal closes
        if is_close(request):
            closes += 1
            first_close.set()
            if closes == 50:
                await asyncio.to_thread(restart, bindir, pg_cluster)
                restarted.set()
        response: web.StreamResponse = await handler(request)
        return response

    async with sim_behind(sim, restart_at_the_fiftieth_close) as base_url:
        common = {"base_url": base_url, "api_key": sim.config.api_key, "journal_url": pg_url}
        host = settings_for(**common, **TAKEOVER, concurrency=8)
        active = asyncio.create_task(run(host, RunRequest(specs=BOTH), asyncio.Event()))
        await first_close.wait()
        standby = asyncio.create_task(run(host, RunRequest(specs=BOTH), asyncio.Event()))
        result_a, result_b = await asyncio.wait_for(asyncio.gather(active, standby), 90)
    assert restarted.is_set()
    assert result_a.exit_code in (ExitCode.OK, ExitCode.ABORTED), result_a
    assert result_b.exit_code == ExitCode.OK, result_b  # it waited, then finished the job
    if result_a.exit_code == ExitCode.ABORTED:
        assert result_a.aborted is not None
        assert "lock" in result_a.aborted
    the_truth(sim, None, positions, fill_first=True, one_order=True)
    assert all(sim.position_quantity(a, i) == 0 for a, i in positions)


JOURNAL_TABLES = "runs, targets, attempts, attempt_results, orders, client_ids, journal_holders"


async def test_a_journal_table_locked_by_another_session_a_stop_is_honoured_within_stop_grace(
    settings_for: Any, tmp_path: Path, pg_url: str
) -> None:
    """Another session takes ACCESS EXCLUSIVE locks on the journal's tables mid-run and keeps
    them. The run's journal calls give up after JOURNAL_TIMEOUT; a stop requested then ends
    the run within STOP_GRACE, with its report written."""
    import psycopg

    sim = Simulator(SimConfig(fill_delay_s=3600))
    positions = seed_accounts(sim, 2, 60)
    stop = asyncio.Event()
    stopped_at: list[float] = []
    closes = 0

    @web.middleware
    async def lock_the_tables_at_the_tenth_close(
        request: web.Request, handler: Any
    ) -> web.StreamResponse:
        nonlocal closes
        if is_close(request):
            closes += 1
            if closes == 10:
                await asyncio.to_thread(
                    blocker.execute,
                    f"LOCK TABLE {JOURNAL_TABLES} IN ACCESS EXCLUSIVE MODE".encode(),
                )
                stop.set()  # SIGTERM
                stopped_at.append(time.monotonic())
        response: web.StreamResponse = await handler(request)
        return response

    report = tmp_path / "r.json"
    with psycopg.connect(pg_url) as blocker:  # its transaction stays open: the locks stay
        async with sim_behind(sim, lock_the_tables_at_the_tenth_close) as base_url:
            settings = settings_for(
                base_url=base_url, api_key=sim.config.api_key, journal_url=pg_url,
                concurrency=4, stop_grace=2.0, journal_timeout=0.5, **FAST_FOLLOW,
            )  # fmt: skip
            result = await asyncio.wait_for(
                run(settings, RunRequest(specs=BOTH, report_path=report), stop), 30
            )
            ended_at = time.monotonic()
        blocker.rollback()
    [stopped] = stopped_at
    assert ended_at - stopped <= 2.0  # STOP_GRACE
    assert result.exit_code == ExitCode.ABORTED
    assert report.exists()
    sent = sum(len(sim.closing_orders(a, i)) for a, i in positions)
    assert sent == sum(r.attempts > 0 for r in result.results)


@pytest.mark.solo  # counts A's closes in a 1.1 s wall-clock window after it resumes
async def test_a_paused_host_whose_session_ended_sends_nothing_when_it_resumes(
    sim: Simulator, tmp_path: Path, pg_url: str
) -> None:
    """Two hosts on PostgreSQL: A is paused (SIGSTOP) after its first closes and its session
    ended; B takes over; A resumes. A sends nothing more: no close reaches the server while B
    waits out A's requests, none is filled twice or crosses zero, and B exits 0."""
    import signal

    from tests.support import finish, read_until_event, start_liquidator, until_closes_seen

    positions = seed_accounts(sim, 2, 100)
    sim.config.fill_delay_s = 3600  # A's orders still work when B looks
    sim.config.faults = {"close": Faults(latency_s=0.04)}
    hosts = {
        "LIQUIDATOR_JOURNAL_URL": pg_url,
        "LIQUIDATOR_LOCK_WAIT": "30",
        # B waits REQUEST_TIMEOUT + RECONCILE_DELAY + a margin (2.45 s) after it takes the lock:
        # well past the 1.1 s this test watches after it sees the lock taken, which under load
        # can be late by a few tenths.
        "LIQUIDATOR_REQUEST_TIMEOUT": "2",
        "LIQUIDATOR_RECONCILE_DELAY": "0.2",
    }
    a = await start_liquidator(
        sim, tmp_path / "a", tmp_path / "a.json", "--concurrency", "4", **hosts
    )
    await until_closes_seen(sim, 10)
    b = await start_liquidator(
        sim, tmp_path / "b", tmp_path / "b.json", "--concurrency", "8", **hosts
    )
    await read_until_event(b, "lock_waiting")
    a.send_signal(signal.SIGSTOP)
    # A's orders fill as B follows (B lists the accounts only once it holds the lock).
    fill_after_the_plan(sim, [20001, 20002], 0.5)
    [lost] = await asyncio.to_thread(journal_lock_holders, pg_url)
    await asyncio.to_thread(end_journal_sessions, pg_url)
    taken = await until_lock_taken_by_another(pg_url, lost)
    closes_when_taken = sim.stats.by_route["close"]
    a.send_signal(signal.SIGCONT)
    # B sends nothing before REQUEST_TIMEOUT + RECONCILE_DELAY after it took the lock.
    await asyncio.sleep(taken + 1.1 - time.monotonic())
    closes_after_resume = sim.stats.by_route["close"] - closes_when_taken
    (code_a, out_a), (code_b, out_b) = await asyncio.gather(finish(a, 60), finish(b, 60))
    assert closes_after_resume == 0, (out_a[-3000:], out_b[-3000:])  # nothing from A
    assert code_a == 3, out_a
    assert code_b == 0, out_b
    the_truth(sim, None, positions, fill_first=True, one_order=True)
