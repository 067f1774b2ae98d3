"""The journal's promises, one by one: stable keys, one run at a time, intents durable in the
main file before a send, and damage refused loudly instead of forgotten."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import FAST_FOLLOW, events_emitted, seed_accounts, the_truth
from worker.errors import JournalRefused
from worker.inputs.targets import TargetSpec
from worker.journal.files import wal_problem
from worker.journal.keys import job_key, journal_url_secrets
from worker.journal.lock import UNNAMED, FileLock, acquire
from worker.journal.store import Intent, Journal
from worker.observe import events
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Simulator

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def test_a_job_is_the_trading_day_whatever_the_apis_url() -> None:
    """The URL is no part of a job: two spellings of one API (another port, a proxy) are one."""
    assert job_key("2026-11-25") == job_key("2026-11-25")
    assert job_key("2026-11-25") != job_key("2026-11-26")


def test_runs_under_a_key_that_held_the_url_join_their_days_job(tmp_path: Path) -> None:
    """An older journal keyed its jobs by the API's URL as well: opened now, those runs are
    the day's one job, whichever URL each used, and the next day's stay apart."""
    journal = Journal.in_dir(tmp_path)
    try:
        for run_id, job, day in [
            ("a", "https://api.example|2026-11-25", "2026-11-25"),
            ("b", "https://api.example:443/|2026-11-25", "2026-11-25"),
            ("c", "https://api.example|2026-11-26", "2026-11-26"),
        ]:
            journal.start_run(
                run_id=run_id, job=job, base_url=job.split("|")[0], trading_day=day,
                started_at=datetime.now(UTC), dry_run=False,
            )  # fmt: skip
        assert journal.rekey(job_key) == 3
        assert journal.rekey(job_key) == 0  # once keyed, nothing more changes
    finally:
        journal.close()
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
        jobs = dict(db.execute("SELECT run_id, job FROM runs").fetchall())
    assert jobs == {
        "a": job_key("2026-11-25"),
        "b": job_key("2026-11-25"),
        "c": job_key("2026-11-26"),
    }


def test_a_journal_urls_password_is_a_secret() -> None:
    url = "postgresql://liq:s%40cret@db.example:5432/liquidator"
    assert set(journal_url_secrets(url)) == {"s%40cret", "s@cret"}
    assert journal_url_secrets("postgresql:///liquidator") == []


async def test_a_held_journal_refuses_at_once_naming_host_pid_and_since(tmp_path: Path) -> None:
    held = FileLock(tmp_path / "journal.lock")
    assert held.try_acquire()
    other = FileLock(tmp_path / "journal.lock")
    with pytest.raises(JournalRefused) as refused:
        await acquire(other.try_acquire, other.holder, what="the journal j", wait_s=0)
    message = str(refused.value)
    assert f"host {socket.gethostname()}, pid {os.getpid()}, since 20" in message
    assert "lock_wait" in message
    held.release()
    other.release()


async def test_a_holder_caught_between_taking_the_lock_and_naming_itself_is_still_named(
    tmp_path: Path,
) -> None:
    """The holder writes its name just after it takes the lock; a run that looks in between
    waits for the name rather than refusing with none (a flake of the two-runs test)."""
    held = FileLock(tmp_path / "journal.lock")
    assert held.try_acquire()
    other = FileLock(tmp_path / "journal.lock")
    looks = 0

    def name_written_on_the_third_look() -> str:
        nonlocal looks
        looks += 1
        return UNNAMED if looks < 3 else other.holder()

    with pytest.raises(JournalRefused) as refused:
        await acquire(other.try_acquire, name_written_on_the_third_look, what="j", wait_s=0)
    assert f"pid {os.getpid()}, since " in str(refused.value)
    assert looks == 3
    held.release()
    other.release()


async def test_a_waiting_run_takes_the_lock_when_the_holder_lets_go(tmp_path: Path) -> None:
    held = FileLock(tmp_path / "journal.lock")
    assert held.try_acquire()
    other = FileLock(tmp_path / "journal.lock")
    asyncio.get_running_loop().call_later(0.15, held.release)
    with events_emitted() as emitted:
        await acquire(other.try_acquire, other.holder, what="the journal j", wait_s=5)
    names = [e["event"] for e in emitted]
    assert names == [events.LOCK_WAITING, events.LOCK_ACQUIRED]
    assert f"pid {os.getpid()}" in emitted[0]["holder"]
    third = FileLock(tmp_path / "journal.lock")
    with pytest.raises(JournalRefused, match=r"after waiting 0\.2 s"):
        await acquire(third.try_acquire, third.holder, what="the journal j", wait_s=0.2)
    third.release()
    other.release()


async def test_an_acknowledged_intent_is_in_the_main_file_not_only_in_the_log(
    tmp_path: Path,
) -> None:
    journal = Journal.in_dir(tmp_path / "state")
    journal.start_run(
        run_id="r1", job="j", base_url="u", trading_day="d", started_at=T0, dry_run=False
    )
    await asyncio.gather(
        *(journal.record_intent("r1", Intent(1, f"i{n}", 1, T0)) for n in range(20))
    )
    # What a crash leaves if the log is lost: the main file alone, copied while still open.
    shutil.copy(journal.path, tmp_path / "main-only.sqlite3")
    with sqlite3.connect(tmp_path / "main-only.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 20
    assert journal.path.with_name("journal.sqlite3-wal").stat().st_size == 0
    journal.close()


def crashed_wal(tmp_path: Path, frames: int = 6) -> tuple[Path, bytes]:
    """A journal whose writer 'died' with commits only in its write-ahead log."""
    path = tmp_path / "j.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (x TEXT)")
    for n in range(frames):
        db.execute("INSERT INTO t VALUES (?)", (f"row {n} " * 200,))
    wal = path.with_name("j.sqlite3-wal").read_bytes()
    main = path.read_bytes()
    db.close()  # (checkpoints and removes the log: put the crash's files back)
    path.write_bytes(main)
    path.with_name("j.sqlite3-wal").write_bytes(wal)
    return path, wal


def test_a_sound_log_and_a_torn_last_frame_pass(tmp_path: Path) -> None:
    path, wal = crashed_wal(tmp_path)
    assert wal_problem(path) is None
    path.with_name("j.sqlite3-wal").write_bytes(wal[:-100])  # killed while appending
    assert wal_problem(path) is None
    path.with_name("j.sqlite3-wal").write_bytes(b"")
    assert wal_problem(path) is None


@pytest.mark.parametrize("where", ["header", "middle", "empty log"])
def test_garbage_in_the_log_is_found(tmp_path: Path, where: str) -> None:
    path, wal = crashed_wal(tmp_path)
    garbage = os.urandom(200)
    if where == "header":
        damaged = garbage + wal[200:]
    elif where == "middle":
        damaged = wal[:5000] + garbage + wal[5200:]
    else:
        damaged = garbage
    path.with_name("j.sqlite3-wal").write_bytes(damaged)
    problem = wal_problem(path)
    assert problem is not None
    assert "j.sqlite3-wal" in problem


def test_a_journal_with_a_damaged_log_refuses_to_open_and_leaves_it_alone(tmp_path: Path) -> None:
    path, wal = crashed_wal(tmp_path)
    damaged = os.urandom(200) + wal[200:]
    path.with_name("j.sqlite3-wal").write_bytes(damaged)
    with pytest.raises(JournalRefused) as refused:
        Journal(path)
    assert "j.sqlite3-wal" in str(refused.value)
    assert "liquidator journal verify" in str(refused.value)
    assert path.with_name("j.sqlite3-wal").read_bytes() == damaged  # evidence kept as it was


def test_a_main_file_that_is_not_a_database_refuses_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(JournalRefused, match=r"journal\.sqlite3 is damaged"):
        Journal(path)


def test_the_journal_url_comes_from_a_systemd_credential_and_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.errors import InputError
    from worker.inputs.settings import JOURNAL_URL_CREDENTIAL, load_settings

    for key in [k for k in os.environ if k.startswith("LIQUIDATOR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / JOURNAL_URL_CREDENTIAL).write_text("postgresql://liq:pw@db/j\n")
    url = load_settings({}, None).journal_url
    assert url is not None
    assert url.get_secret_value() == "postgresql://liq:pw@db/j"
    (tmp_path / JOURNAL_URL_CREDENTIAL).write_text("mysql://liq:pw@db/j\n")
    with pytest.raises(InputError, match=JOURNAL_URL_CREDENTIAL) as refused:
        load_settings({}, None)
    assert "pw" not in str(refused.value)
    monkeypatch.setenv("LIQUIDATOR_JOURNAL_URL", "sqlite:///secret-path")
    with pytest.raises(InputError, match="LIQUIDATOR_JOURNAL_URL") as refused:
        load_settings({}, None)
    assert "secret-path" not in str(refused.value)


async def test_runs_recorded_under_the_url_as_typed_are_found_after_an_upgrade(
    settings_for: Any, tmp_path: Path
) -> None:
    from worker.journal.open import open_journal

    old = Journal.in_dir(tmp_path / "state")  # as an earlier version keyed its jobs
    old.start_run(
        run_id="before-upgrade",
        job="http://127.0.0.1:8765|2026-11-25",
        base_url="http://127.0.0.1:8765",
        trading_day="2026-11-25",
        started_at=T0,
        dry_run=False,
    )
    await old.record_intent("before-upgrade", Intent(7, "inst", 1, T0))
    old.close()
    settings = settings_for(base_url="http://localhost:8765/", api_key="k.s")
    journal = await open_journal(settings)
    priors = journal.priors(job_key("2026-11-25"), current_run="now")
    assert list(priors) == [(7, "inst")]
    journal.close()


async def test_a_stop_while_standing_by_ends_the_wait_at_once(tmp_path: Path) -> None:
    held = FileLock(tmp_path / "journal.lock")
    assert held.try_acquire()
    other = FileLock(tmp_path / "journal.lock")
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = asyncio.get_running_loop().time()
    with pytest.raises(JournalRefused, match="stop requested while waiting"):
        await acquire(other.try_acquire, other.holder, what="the journal j", wait_s=60, stop=stop)
    assert asyncio.get_running_loop().time() - started < 1
    held.release()
    other.release()


@pytest.mark.parametrize("close_via", ["close_position", "submit_orders"])
async def test_a_journal_failing_mid_block_then_a_rerun_closes_each_once(
    sim: Simulator, settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    """The store refuses every commit once it holds 10 intents, while blocks of first intents
    are being committed ahead: every close the server saw had its intent (and client id) on
    disk, and the rerun closes the rest, none twice. (From an adversarial review.)"""
    sim.config.fill_delay_s = 3600
    positions = seed_accounts(sim, 1, 40)
    state = tmp_path / "state"
    Journal.in_dir(state).close()  # the schema, for the trigger
    with contextlib.closing(sqlite3.connect(state / "journal.sqlite3")) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON attempts"
            " WHEN (SELECT COUNT(*) FROM attempts) >= 10"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        db.commit()
    # Blocks of first intents are as large as the fan-out: 2 x concurrency closes, or with
    # batches concurrency x batch_size: 4 either way here, so the store fails in the third
    # block, after the first blocks' closes went out (two blocks may share one commit).
    settings = settings_for(sim, concurrency=2, close_via=close_via, batch_size=2, **FAST_FOLLOW)
    whole_account = [TargetSpec(20001, None)]
    first = await run(
        settings, RunRequest(specs=whole_account, report_path=tmp_path / "1.json"), asyncio.Event()
    )
    assert first.exit_code == ExitCode.ABORTED
    with contextlib.closing(sqlite3.connect(state / "journal.sqlite3")) as db:
        rows = db.execute("SELECT account_id, instrument_id FROM attempts")
        intents = {(a, i.lower()) for a, i in rows}
        client_ids = {c for (c,) in db.execute("SELECT client_id FROM client_ids")}
        db.execute("DROP TRIGGER full")
        db.commit()
    sent = {(a, i.lower()) for a, i in positions if sim.closing_orders(a, i)}
    assert sent
    assert sent <= intents  # and the intents of 10 at most: the rest were never sent
    assert len(intents) <= 10
    if close_via == "submit_orders":
        used = {o["client_order_id"] for a, i in positions for o in sim.closing_orders(a, i)}
        assert used <= client_ids
        assert max(sim.stats.submit_batch_sizes) > 1, "the orders went out in batches"
    sim.fill_due_in(0.3)
    sim.config.fill_delay_s = 0.05
    second = await run(
        settings, RunRequest(specs=whole_account, report_path=tmp_path / "2.json"), asyncio.Event()
    )
    assert second.exit_code == ExitCode.OK
    if close_via == "close_position":
        the_truth(sim, None, positions, fill_first=True, one_order=True)
    else:  # the rerun cancels the first run's resting orders (cancel_orders): one fills
        sim.fill_all()
        assert sim.flipped_positions() == []
        filled = [
            sum(o["status"] == "FILLED" for o in sim.closing_orders(a, i)) for a, i in positions
        ]
        assert filled == [1] * len(positions)
