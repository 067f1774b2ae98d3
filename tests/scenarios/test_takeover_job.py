"""A rerun or a standby finishes the job, not just itself, counted at the simulator.

It takes its plan after waiting out the dead run's requests; every order the job created, on any
run of it, is in the report of the run that finishes it, with the outcome it caused; a protected
limit the dead run escalated gets its market rest; nothing flat is reported not_flat.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    finish,
    journal_lock_holders,
    read_until_event,
    seed_accounts,
    the_truth,
    until_lock_taken_by_another,
)
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, SimConfig, Simulator, serve
from worker.simulator.market import MarketConfig

BOTH = [TargetSpec(20001, None), TargetSpec(20002, None)]


def worker_env(sim: Simulator, state: Path, **extra: str) -> dict[str, str]:
    from tests.support import clean_env

    return clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        LIQUIDATOR_STATE_DIR=str(state),
        LIQUIDATOR_LOG_FORMAT="json",
        LIQUIDATOR_RATE_LIMIT="0",
        LIQUIDATOR_FOLLOW_PAUSE="0.02",
        LIQUIDATOR_FOLLOW_PAUSE_MAX="0.1",
        **extra,
    )


async def start(
    base_url: str, env: dict[str, str], report: Path | None = None
) -> asyncio.subprocess.Process:
    """`liquidator run --yes` on accounts 20001 and 20002, as its own process."""
    args = ["--report", str(report)] if report is not None else []
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "run", "--yes", "--base-url", base_url,
        "--account", "20001", "--account", "20002", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def until(condition: Any, what: str, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


def every_order_reported(sim: Simulator, doc: dict[str, Any], keys: list[tuple[int, str]]) -> None:
    """Every closing order at the server is in the report, under its position's target."""
    by_key = {(r["account_id"], (r["instrument_id"] or "").lower()): r for r in doc["results"]}
    for account, iid in keys:
        server = {o["id"] for o in sim.closing_orders(account, iid)}
        if not server:
            continue
        result = by_key.get((account, iid.lower()))
        assert result is not None, f"{account}/{iid}: orders {server} in no result"
        assert server <= {o["id"] for o in result["orders"]}, result


async def test_a_killed_submit_orders_run_rerun_at_once_reports_the_orders_it_left(
    settings_for: Any, tmp_path: Path
) -> None:
    """Killed after 20 closing requests while every close waits at the gateway (applied 0.9 s
    on, within REQUEST_TIMEOUT 1 s: 4.5 s of 5 s, scaled), rerun at once. Every position is
    closed once; the orders the killed run left are in the rerun's report, and the targets they
    closed are `closed`, not `already_flat`."""
    sim = Simulator(SimConfig(fill_delay_s=0.05))
    positions = seed_accounts(sim, 2, 40)
    sim.config.faults = {"submit": Faults(p_apply_late=1.0, apply_late_s=0.9)}
    state = tmp_path / "state"
    runner, _ = await serve(sim, "127.0.0.1", 0)
    try:
        env = worker_env(
            sim, state, LIQUIDATOR_CLOSE_VIA="submit_orders", LIQUIDATOR_BATCH_SIZE="1",
            LIQUIDATOR_CONCURRENCY="16", LIQUIDATOR_REQUEST_TIMEOUT="1",
            LIQUIDATOR_RECONCILE_DELAY="0.2",
        )  # fmt: skip
        killed = await start(sim.base_url, env)
        # 20 closing requests, the first of them applied and filled (their replies on the way
        # back) while the rest wait at the gateway.
        await until(
            lambda: (
                sim.stats.by_route["submit"] >= 20
                and sum(sim.position_quantity(*k) == 0 for k in positions) >= 10
            ),
            "the run never sent 20 closes",
        )
        killed.kill()
        await killed.wait()
        sim.config.faults = {}
        report = tmp_path / "rerun.json"
        settings = settings_for(
            sim, close_via="submit_orders", request_timeout=1.0, reconcile_delay=0.2,
            flat_timeout=5.0, follow_pause=0.02, follow_pause_max=0.1,
        )  # fmt: skip
        rerun = await asyncio.wait_for(
            run(settings, RunRequest(specs=BOTH, report_path=report), asyncio.Event()), 60
        )
    finally:
        await runner.cleanup()
    doc = json.loads(report.read_text())
    assert rerun.exit_code == ExitCode.OK, [
        (r["instrument"], r["outcome"], r["error"]) for r in doc["results"]
    ]
    # The killed run's orders landed after it died: some positions were closed by them alone.
    by_killed = [k for k in positions if sim.closing_orders(*k)[0]["client_order_id"][-3:] == "-g0"]
    assert by_killed
    the_truth(sim, doc, positions, fill_first=True, one_order=True, flat=True, client_ids=True)
    every_order_reported(sim, doc, positions)
    assert doc["summary"]["already_flat"] == 0


# -- protected ------------------------------------------------------------------------------

PROTECTED_ENV = {
    "LIQUIDATOR_CLOSE_STYLE": "protected",
    "LIQUIDATOR_COLLAR_BPS": "5",
    "LIQUIDATOR_COLLAR_MAX_BPS": "15",
    "LIQUIDATOR_REPRICE_S": "0.05",
    "LIQUIDATOR_REQUEST_TIMEOUT": "1",
    "LIQUIDATOR_RECONCILE_DELAY": "0.2",
    "LIQUIDATOR_FLAT_TIMEOUT": "8",
    "LIQUIDATOR_CONCURRENCY": "8",
}


def thin_book() -> SimConfig:
    """Quoted 10 bps wide; levels 20 bps apart of 50 shares: a limit 5-15 bps past the touch
    takes the best level, which refills 0.1 s after it is taken (so resting limits go on
    filling, a level at a time, while a rerun waits)."""
    market = MarketConfig(
        spread_bps=10.0, depth=6, level_size=50, size_jitter=0.0, level_step_bps=20.0, refill_s=0.3
    )
    return SimConfig(fill_delay_s=0.02, market=market)


def seed_protected(sim: Simulator, per_account: int) -> list[tuple[int, str]]:
    keys = []
    for n, account in enumerate((20001, 20002)):
        sim.add_account(account)
        for k in range(per_account):
            quantity = (150 + 40 * (k % 5)) * (-1 if k % 3 == 0 else 1)
            keys.append((account, sim.add_position(account, f"T{n}X{k}", str(quantity))))
    return keys


def cancelled_limits(sim: Simulator, keys: list[tuple[int, str]]) -> int:
    return sum(
        1
        for key in keys
        for o in sim.closing_orders(*key)
        if o["order_type"] == "LIMIT" and o["status"] in ("CANCELED", "PENDING_CANCEL")
    )


def protected_sound(sim: Simulator, doc: dict[str, Any], keys: list[tuple[int, str]]) -> None:
    """0 left open, none crossed zero, and each limit that ended with a rest has its market
    rest, for exactly that rest; nothing flat reported not_flat; every order in the report."""
    sim.fill_all()
    assert [k for k in keys if sim.position_quantity(*k) != 0] == []
    assert sim.crossed_zero() == []
    assert sim.flipped_positions() == []
    assert sim.most_working_closes() == 1  # never two of the job's orders working on one
    for key in keys:
        orders = sim.closing_orders(*key)
        limits = [o for o in orders if o["order_type"] == "LIMIT"]
        markets = [o for o in orders if o["order_type"] == "MARKET"]
        left = sum(Decimal(o["quantity"]) - Decimal(o["filled_quantity"]) for o in limits)
        if left and all(o["status"] not in ("NEW", "PARTIALLY_FILLED") for o in limits):
            assert markets, f"{key}: a limit left {left} and no market rest: {orders}"
    outcomes = {(r["instrument"], r["outcome"], r["error"]) for r in doc["results"]}
    assert {o for _, o, _ in outcomes} == {"closed"}, outcomes
    every_order_reported(sim, doc, keys)


@pytest.mark.parametrize(
    ("how", "when"),
    [
        (signal.SIGKILL, "resting"),
        (signal.SIGKILL, "escalating"),
        (signal.SIGTERM, "resting"),
        (signal.SIGTERM, "escalating"),
    ],
)
async def test_a_protected_run_stopped_mid_flight_rerun_closes_every_position_once(
    settings_for: Any, tmp_path: Path, how: signal.Signals, when: str
) -> None:
    sim = Simulator(thin_book())
    keys = seed_protected(sim, 20)
    state = tmp_path / "state"
    runner, _ = await serve(sim, "127.0.0.1", 0)
    try:
        deadline = "60" if when == "resting" else "0.4"
        env = worker_env(sim, state, **PROTECTED_ENV, LIQUIDATOR_DEADLINE_S=deadline)
        first = await start(sim.base_url, env)
        # Re-prices go within a budget (half of RATE_LIMIT), and an account's limits are
        # cancelled in one request: counted as re-prices and cancelled limits, not requests.
        if when == "resting":  # every limit sent, re-pricing under way
            await until(lambda: sim.stats.by_route["replace"] >= 10, "no re-prices")
        else:  # escalations under way: limits cancelled, their rests going out
            await until(lambda: cancelled_limits(sim, keys) >= 10, "no escalations")
        first.send_signal(how)
        await asyncio.wait_for(first.communicate(), 30)
        report = tmp_path / "rerun.json"
        settings = settings_for(
            sim, close_style="protected", collar_bps=5, collar_max_bps=15, reprice_s=0.05,
            deadline_s=0.5, request_timeout=1.0, reconcile_delay=0.2, flat_timeout=8.0,
            follow_pause=0.02, follow_pause_max=0.1,
        )  # fmt: skip
        rerun = await asyncio.wait_for(
            run(settings, RunRequest(specs=BOTH, report_path=report), asyncio.Event()), 90
        )
    finally:
        await runner.cleanup()
    doc = json.loads(report.read_text())
    protected_sound(sim, doc, keys)
    assert rerun.exit_code == ExitCode.OK


@pytest.mark.solo
@pytest.mark.parametrize("how", ["killed", "paused"])
async def test_a_protected_standby_on_postgresql_takes_over_and_leaves_nothing_open(
    tmp_path: Path, pg_url: str, how: str
) -> None:
    sim = Simulator(thin_book())
    keys = seed_protected(sim, 15)
    runner, _ = await serve(sim, "127.0.0.1", 0)
    try:
        hosts = {
            **PROTECTED_ENV,
            "LIQUIDATOR_JOURNAL_URL": pg_url,
            "LIQUIDATOR_LOCK_WAIT": "30",
            # Long enough that B's interpreter starts while A's limits still rest.
            "LIQUIDATOR_DEADLINE_S": "3",
        }
        a = await start(sim.base_url, worker_env(sim, tmp_path / "a", **hosts))
        await until(lambda: sim.stats.by_route["replace"] >= len(keys) // 2, "A never re-priced")
        report = tmp_path / "b.json"
        b = await start(sim.base_url, worker_env(sim, tmp_path / "b", **hosts), report)
        await read_until_event(b, "lock_waiting")
        [held] = await asyncio.to_thread(journal_lock_holders, pg_url)
        if how == "killed":
            a.kill()
        else:
            from tests.support import end_journal_sessions

            a.send_signal(signal.SIGSTOP)
            await asyncio.to_thread(end_journal_sessions, pg_url)
        await until_lock_taken_by_another(pg_url, held)
        if how == "paused":
            a.send_signal(signal.SIGCONT)
        (code_b, out_b), _ = await asyncio.gather(finish(b, 90), finish(a, 90))
    finally:
        await runner.cleanup()
    doc = json.loads(report.read_text())
    protected_sound(sim, doc, keys)
    assert code_b == 0, out_b[-3000:]


async def test_positions_a_killed_run_flattened_are_reported_closed_with_their_orders_and_cost(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """A run killed after its orders filled: every position flat, by name or as a whole
    account. The rerun sends nothing and reports each `closed`, with the order, its fills and
    its cost (not `already_flat`, not one `*` for the account)."""
    from tests.scenarios.test_adoption import killed_run
    from tests.support import seed_held

    keys = seed_held(sim, 72101, [25, -40, 15])
    settings = settings_for(sim, close_via="submit_orders", flat_timeout=3.0)
    own = await killed_run(sim, settings, keys)
    sim.fill_all()
    assert all(sim.position_quantity(a, i) == 0 for a, i, _ in keys)
    submits = sim.stats.by_route["submit"]
    report = tmp_path / "rerun.json"
    specs = [TargetSpec(72101, "S0"), TargetSpec(72101, None)]
    result = await run(settings, RunRequest(specs=specs, report_path=report), asyncio.Event())
    doc = json.loads(report.read_text())
    assert result.exit_code == ExitCode.OK, doc
    assert sim.stats.by_route["submit"] == submits  # nothing sent
    by_iid = {r["instrument_id"]: r for r in doc["results"]}
    assert set(by_iid) == {i for _, i, _ in keys}  # no "*" for the account
    assert by_iid[keys[0][1]]["instrument"] == "S0"
    for account, iid, held in keys:
        r = by_iid[iid]
        assert r["outcome"] == "closed", r
        assert [o["id"] for o in r["orders"]] == [own[(account, iid)]]
        assert r["filled_quantity"] == str(abs(held))
        assert r["cost"] is not None
        assert r["side"] == ("LONG" if held > 0 else "SHORT")
    the_truth(sim, doc, keys, flat=True, one_order=True)
    # The rerun finished the job (exit 0) and reported them: a third run does not again.
    third = tmp_path / "third.json"
    await run(
        settings, RunRequest(specs=[TargetSpec(72101, None)], report_path=third), asyncio.Event()
    )
    results = json.loads(third.read_text())["results"]
    assert [(r["instrument"], r["outcome"]) for r in results] == [("*", "already_flat")]


async def test_a_job_order_still_working_on_a_position_read_flat_is_cancelled_not_left_to_cross(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """The killed run's first close filled; its residue close (the next generation, a close
    whose reply it never saw) still works on the flat position. Left, it would take it past
    zero: the rerun cancels it and reports the target closed, with both orders."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from tests.support import api_for
    from worker.api.client import NewOrder
    from worker.closing.client_ids import client_order_id
    from worker.journal.keys import job_key
    from worker.journal.store import Intent, Journal

    sim.add_account(72102)
    iid = sim.add_position(72102, "W0", "30")
    settings = settings_for(sim, close_via="submit_orders", flat_timeout=3.0)
    day = datetime.now(UTC).astimezone(ZoneInfo("America/New_York")).date().isoformat()
    job = job_key(day)
    journal = Journal.in_dir(settings.journal_dir)
    journal.start_run(
        run_id="killed", job=job, base_url=settings.base_url, trading_day=day,
        started_at=datetime.now(UTC), dry_run=False,
    )  # fmt: skip
    ids = []
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        for generation in (0, 1):
            cid = client_order_id(job, 72102, iid, generation)
            intent = Intent(72102, iid, generation + 1, datetime.now(UTC), cid, generation)
            await journal.record_intent("killed", intent)
            order = NewOrder(client_id=cid, instrument_id=iid, side="SELL", quantity=Decimal(30))
            reply = await api.submit_order(72102, order)
            ids.append(reply.data.id)
            if generation == 0:
                sim.fill_all()  # the first fills at once; the second rests
                sim.config.fill_delay_s = 3600
    journal.close()
    assert sim.position_quantity(72102, iid) == 0

    report = tmp_path / "rerun.json"
    result = await run(
        settings, RunRequest(specs=[TargetSpec(72102, None)], report_path=report), asyncio.Event()
    )
    doc = json.loads(report.read_text())
    sim.fill_all()
    statuses = {o["id"]: o["status"] for o in sim.orders_of(72102)}
    assert [statuses[i] for i in ids] == ["FILLED", "CANCELED"]
    assert sim.position_quantity(72102, iid) == 0
    assert sim.crossed_zero() == []
    [r] = doc["results"]
    assert r["outcome"] == "closed", r
    assert {o["id"] for o in r["orders"]} == set(ids)
    assert result.exit_code == ExitCode.OK


async def test_an_option_a_killed_run_flattened_is_costed_through_its_contract_multiplier(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """A short put a killed run bought back: the rerun reports it `closed` and values it as
    the contracts endpoint says (x 100), not per unit, though no position lists it any more."""
    from tests.scenarios.test_adoption import killed_run

    put = sim.add_position(
        72103, "SPY   261218P00600000", "-5", instrument_type="OPTION", underlying="SPY"
    )
    settings = settings_for(sim, close_via="submit_orders", flat_timeout=3.0)
    await killed_run(sim, settings, [(72103, put, -5)])
    sim.fill_all()
    assert sim.position_quantity(72103, put) == 0
    report = tmp_path / "rerun.json"
    specs = [TargetSpec(72103, None)]
    result = await run(settings, RunRequest(specs=specs, report_path=report), asyncio.Event())
    doc = json.loads(report.read_text())
    assert result.exit_code == ExitCode.OK, doc
    [r] = doc["results"]
    assert r["outcome"] == "closed", r
    assert r["multiplier"] == "100", r
    # A buy: (average fill - arrival midpoint) x quantity x the multiplier.
    paid = Decimal(r["average_fill_price"]) - Decimal(r["arrival_midpoint"])
    assert Decimal(r["cost"]) == paid * 5 * 100, r
    assert sim.stats.by_route["contracts"] == 1
