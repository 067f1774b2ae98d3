"""The guards around a send: the lock check, a stop, adoption and `liquidator cancel`.

Counted at the server (the simulator, a real PostgreSQL): a close that must not go out never
reaches the server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.support import clean_env, event_lines, run_cli
from worker.api.client import TradingApi, open_session
from worker.api.pace import Pacer
from worker.errors import LockLost, NotSent
from worker.journal.lock import FileLock, Holder
from worker.journal.open import LOCK_FILE
from worker.journal.pg_lock_check import LOCK_STALE_ANSWERS
from worker.journal.postgres import PgJournal
from worker.journal.store import Intent, Journal
from worker.simulator import Simulator

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


async def test_a_stop_that_comes_while_the_lock_is_checked_keeps_the_close_from_going_out(
    sim: Simulator,
) -> None:
    """The lock check can take a database round trip or a reconnect; a stop requested
    meanwhile must still stop the close before it goes out."""
    spy = sim.add_position(30001, "SPY", "100")
    stop = asyncio.Event()
    checking = asyncio.Event()

    async def lock_check_until_the_stop() -> None:
        checking.set()
        await stop.wait()  # the check answers "held", but only after the stop came

    async def operator_stops() -> None:
        await checking.wait()
        stop.set()

    async with open_session(4, 2.0, sim.config.api_key) as session:
        api = TradingApi(session, sim.base_url, Pacer(4, 0), before_send=lock_check_until_the_stop)
        stopping = asyncio.create_task(operator_stops())
        with pytest.raises(NotSent):
            await asyncio.wait_for(
                api.close_position(30001, spy, cancel_orders=False, unless=stop), 10
            )
        await stopping
    assert sim.stats.by_route.get("close", 0) == 0
    assert sim.closing_orders(30001, "SPY") == []
    assert sim.position_quantity(30001, "SPY") == Decimal(100)


# The lock check on PostgreSQL: fresh from when its query runs, and never stale for ever.

SLOW_COMMIT_S = 0.5  # each commit of the journal waits this long: more than LOCK_FRESH_S


def slow_every_commit(url: str) -> None:
    """A statement delay: every commit that records a run's write (each group of intents) waits
    SLOW_COMMIT_S on the database, so a lock check queued behind one waits that long."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            b"CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS"
            b" $$ BEGIN PERFORM pg_sleep(%f); RETURN NEW; END $$" % SLOW_COMMIT_S
        )
        conn.execute(
            b"CREATE TRIGGER slow_write BEFORE INSERT OR UPDATE ON run_clock"
            b" FOR EACH ROW EXECUTE FUNCTION slow_write()"
        )


def until_a_commit_waits(url: str) -> None:
    """Return once a commit of the journal is in its delay (seen at the database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                b"SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                b" AND application_name = 'liquidator'"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.005)


@contextlib.asynccontextmanager
async def intents_flowing(journal: Journal) -> AsyncIterator[None]:
    """A close recording its intent every 20 ms, as in a busy fan-out: while one (slow) group
    commit runs, the next group collects, so the journal's thread always has a commit due."""
    journal.start_run(
        run_id="r1", job="j", base_url="u", trading_day="d", started_at=T0, dry_run=False
    )
    closes: list[asyncio.Task[None]] = []

    async def arrive() -> None:
        for n in itertools.count():
            closes.append(
                asyncio.create_task(journal.record_intent("r1", Intent(7, f"i{n}", 1, T0)))
            )
            await asyncio.sleep(0.02)

    arriving = asyncio.create_task(arrive())
    try:
        yield
    finally:
        arriving.cancel()
        await asyncio.gather(arriving, *closes, return_exceptions=True)


async def test_a_lock_check_queued_behind_slow_commits_is_fresh_and_the_close_goes_out(
    sim: Simulator, pg_url: str
) -> None:
    """Every group commit takes longer than LOCK_FRESH_S and the next is always due: a check
    timed from when it was asked for is stale every time and the send waits for ever. Timed
    from when its query runs, it is fresh, and the close goes out once."""
    spy = sim.add_position(30001, "SPY", "100")
    journal = await PgJournal.open(pg_url, scope="s", lock_wait=0)
    try:
        await asyncio.to_thread(slow_every_commit, pg_url)
        async with intents_flowing(journal):
            await asyncio.wait_for(asyncio.to_thread(until_a_commit_waits, pg_url), 10)
            async with open_session(4, 2.0, sim.config.api_key) as session:
                api = TradingApi(
                    session, sim.base_url, Pacer(4, 0), before_send=journal.still_locked
                )
                await asyncio.wait_for(api.close_position(30001, spy, cancel_orders=False), 5)
    finally:
        journal.close()
    assert len(sim.closing_orders(30001, "SPY")) == 1


async def test_lock_checks_that_keep_answering_too_late_stop_the_run_instead_of_stalling(
    sim: Simulator, pg_url: str
) -> None:
    """This host is too slow to use any answer in time (its event loop held 0.3 s at a time,
    as on an overloaded or repeatedly paused host): every answer is older than LOCK_FRESH_S.
    After LOCK_STALE_ANSWERS of them the lock counts as unknown: `LockLost` with the reason,
    and the close never reaches the server."""
    spy = sim.add_position(30001, "SPY", "100")
    journal = await PgJournal.open(pg_url, scope="s", lock_wait=0)
    hogging = True

    async def hog_the_loop() -> None:
        while hogging:
            time.sleep(0.3)  # noqa: ASYNC251  (blocks the event loop, as a paused host would)
            await asyncio.sleep(0)

    try:
        async with open_session(4, 2.0, sim.config.api_key) as session:
            api = TradingApi(session, sim.base_url, Pacer(4, 0), before_send=journal.still_locked)
            hog = asyncio.create_task(hog_the_loop())
            await asyncio.sleep(0)
            sending = asyncio.create_task(api.close_position(30001, spy, cancel_orders=False))
            done, _ = await asyncio.wait({sending}, timeout=8)
            hogging = False
            await hog
            if not done:  # a closed journal ends the stalled check (and its send) at last
                journal.close()
                await asyncio.gather(sending, return_exceptions=True)
                pytest.fail("the send stalled on stale lock checks")
            with pytest.raises(LockLost, match=f"{LOCK_STALE_ANSWERS} times in a row"):
                sending.result()
    finally:
        journal.close()
    assert sim.stats.by_route.get("close", 0) == 0
    assert sim.closing_orders(30001, "SPY") == []


# `liquidator cancel` while a run holds the journal.


async def test_cancel_refuses_while_a_run_holds_the_journal_and_cancels_with_force(
    sim: Simulator, tmp_path: Path
) -> None:
    """A run waiting for the close holds the journal's lock, its market-on-close order resting:
    `cancel --yes` refuses (exit 2, naming the holder) and sends nothing; `--force` cancels."""
    sim.add_position(30001, "SPY", "100")
    resting = sim.add_resting_order(30001, "SPY", "SELL", "100", "1.00")
    state = tmp_path / "state"
    state.mkdir()
    run_lock = FileLock(state / LOCK_FILE)  # what a run on this state directory holds
    assert run_lock.try_acquire()
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(state), LIQUIDATOR_RATE_LIMIT="0"
    )
    args = ("cancel", "--yes", "--base-url", sim.base_url, "--position", "30001:SPY",
            "--log-format", "json")  # fmt: skip
    try:
        code, out = await run_cli(*args, env=env)
        assert code == 2, out
        [aborted] = event_lines(out, "run_aborted")
        assert str(Holder.me().pid) in str(aborted["reason"]), aborted
        assert "--force" in str(aborted["reason"])
        assert sim.stats.by_route["cancel"] == 0
        assert {o["id"]: o["status"] for o in sim.orders_of(30001)}[resting] == "NEW"

        code, out = await run_cli(*args, "--force", env=env)
        assert code == 0, out
        assert sim.stats.by_route["cancel"] == 1
        assert {o["id"]: o["status"] for o in sim.orders_of(30001)}[resting] == "CANCELED"
    finally:
        run_lock.release()
