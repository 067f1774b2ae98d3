"""The run journal: SQLite (WAL) under STATE_DIR. What a rerun needs to never close twice.

It records each run, each target, the intent to close *before* the request is sent, every attempt
with its request_id, the orders and the outcome. Intents are group-committed: every close that is
about to be sent within COMMIT_WINDOW_S of the first shares one commit, and none is sent before
its commit returns (PostgreSQL's commit_delay, for the same reason: commits cost CPU, and the
fan-out keeps twice as many closes ready as may be in flight, so a close waiting for its commit
would be waiting for a free slot anyway). `synchronous=NORMAL` in WAL mode does not fsync per
commit: a committed intent survives the process being killed (the OS holds it), not a power cut.

Only intents decide what a rerun does (it looks before closing anything an earlier run meant to
send), so only they are committed before a send. The records of what happened (attempt results,
orders, outcomes) are kept in memory and committed in batches of RECORD_BATCH rows, riding along
with an intent commit, and in full when the run ends or stops. A commit that touches one table
costs a quarter of one that touches four; a process killed outright loses at most a batch of
records, never an intent. Every write is an insert into its own table, so a flush can batch each
statement with executemany in any order.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.errors import InputError, JournalError
from worker.models import Order
from worker.report import TargetResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, job TEXT NOT NULL, base_url TEXT NOT NULL,
    trading_day TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    exit_code INTEGER, dry_run INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job);
CREATE TABLE IF NOT EXISTS targets (
    run_id TEXT NOT NULL, account_id INTEGER NOT NULL, instrument TEXT NOT NULL,
    instrument_id TEXT, symbol TEXT, quantity TEXT, outcome TEXT, error TEXT, attempts INTEGER,
    PRIMARY KEY (run_id, account_id, instrument));
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, account_id INTEGER NOT NULL, instrument_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, since TEXT NOT NULL,
    PRIMARY KEY (run_id, account_id, instrument_id, attempt));
CREATE TABLE IF NOT EXISTS attempt_results (
    run_id TEXT NOT NULL, account_id INTEGER NOT NULL, instrument_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, request_id TEXT, result TEXT NOT NULL,
    PRIMARY KEY (run_id, account_id, instrument_id, attempt));
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT NOT NULL, run_id TEXT NOT NULL, account_id INTEGER NOT NULL,
    instrument_id TEXT NOT NULL, side TEXT, quantity TEXT, status TEXT, created_at TEXT,
    request_id TEXT, reconciled INTEGER NOT NULL,
    PRIMARY KEY (order_id, run_id));
"""

Key = tuple[int, str]  # (account_id, instrument_id)

COMMIT_WINDOW_S = 0.002  # 5,000 closes at 64 in flight: ~500 commits instead of ~1,750
RECORD_BATCH = 1000  # records kept in memory before they ride along with an intent commit

_INTENT = (
    "INSERT OR REPLACE INTO attempts (run_id, account_id, instrument_id, attempt, since)"
    " VALUES (?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Prior:
    """Earlier runs of the same job sent a close for this position.

    The resume look searches the position's orders from `since`, which covers every order those
    runs recorded (and any whose reply they never saw).
    """

    since: datetime  # the earliest moment their closing orders could carry


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints (copying the WAL back, with an fsync) cost the fan-out ~0.03 ms a
            # close at the default 1,000 pages; at 10,000 a 5,000-close run needs none until the
            # journal closes (SQLite checkpoints then), and a 100,000-close run a few.
            self._db.execute("PRAGMA wal_autocheckpoint=10000")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"state_dir: cannot open the journal {path}: {exc}") from None
        self._intents: list[Sequence[Any]] = []
        self._records: dict[str, list[Sequence[Any]]] = {}
        self._failed: str | None = None  # why the journal stopped accepting commits
        self._commit: asyncio.Future[None] | None = None

    @classmethod
    def in_dir(cls, state_dir: Path) -> Journal:
        return cls(state_dir / "journal.sqlite3")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    # Reads, at the start of a run.

    def priors(self, job: str, current_run: str) -> dict[Key, Prior]:
        """Positions that earlier runs of this job sent (or were about to send) a close for."""
        try:
            rows = self._db.execute(
                "SELECT a.account_id, a.instrument_id, MIN(a.since) FROM attempts a"
                " JOIN runs r USING (run_id) WHERE r.job = ? AND r.run_id != ?"
                " GROUP BY a.account_id, a.instrument_id",
                (job, current_run),
            ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"the journal {self.path} could not be read: {exc}") from None
        return {
            (account_id, instrument_id): Prior(datetime.fromisoformat(since))
            for account_id, instrument_id, since in rows
        }

    # Writes.

    def start_run(
        self,
        *,
        run_id: str,
        job: str,
        base_url: str,
        trading_day: str,
        started_at: datetime,
        dry_run: bool,
    ) -> None:
        self._queue(
            "INSERT INTO runs (run_id, job, base_url, trading_day, started_at, dry_run)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, job, base_url, trading_day, started_at.isoformat(), int(dry_run)),
        )
        self.flush()

    async def intent(
        self, run_id: str, account_id: int, instrument_id: str, attempt: int, since: datetime
    ) -> None:
        """Record that a close is about to be sent; return once that record is committed.

        Every intent recorded within COMMIT_WINDOW_S of the first shares its commit.
        """
        self._intents.append((run_id, account_id, instrument_id, attempt, since.isoformat()))
        if self._commit is None:
            loop = asyncio.get_running_loop()
            self._commit = loop.create_future()
            loop.call_later(COMMIT_WINDOW_S, self._group_commit, self._commit)
        await asyncio.shield(self._commit)

    def attempt_result(
        self,
        run_id: str,
        account_id: int,
        instrument_id: str,
        attempt: int,
        request_id: str | None,
        result: str,
    ) -> None:
        self._queue(
            "INSERT OR REPLACE INTO attempt_results (run_id, account_id, instrument_id, attempt,"
            " request_id, result) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, account_id, instrument_id, attempt, request_id, result),
        )

    def orders(
        self,
        run_id: str,
        account_id: int,
        instrument_id: str,
        orders: Iterable[Order],
        request_id: str,
        *,
        reconciled: bool,
    ) -> None:
        for o in orders:
            self._queue(
                "INSERT OR REPLACE INTO orders (order_id, run_id, account_id, instrument_id,"
                " side, quantity, status, created_at, request_id, reconciled)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    o.id,
                    run_id,
                    account_id,
                    o.instrument_id or instrument_id,
                    o.side,
                    str(o.quantity),
                    o.status,
                    o.created_at.isoformat(),
                    request_id,
                    int(reconciled),
                ),
            )

    def outcome(self, run_id: str, result: TargetResult, quantity: str | None) -> None:
        self._queue(
            "INSERT OR REPLACE INTO targets (run_id, account_id, instrument, instrument_id,"
            " symbol, quantity, outcome, error, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                result.account_id,
                result.instrument,
                result.instrument_id,
                result.symbol,
                quantity,
                str(result.outcome) if result.outcome else None,
                result.error,
                result.attempts,
            ),
        )

    def finish_run(self, run_id: str, finished_at: datetime, exit_code: int) -> None:
        self.flush()
        try:
            with self._db:
                self._db.execute(
                    "UPDATE runs SET finished_at = ?, exit_code = ? WHERE run_id = ?",
                    (finished_at.isoformat(), exit_code, run_id),
                )
        except sqlite3.Error as exc:
            raise JournalError(f"the journal {self.path} failed a write: {exc}") from None

    def flush(self) -> None:
        """Commit every pending intent and record."""
        self._commit_pending(records=True)

    def _commit_pending(self, *, records: bool) -> None:
        """One transaction, one executemany per statement; rolled back if any statement fails.

        A failure loses what was pending, so the journal stays failed: every later commit
        (and every close waiting for one) raises, and no close is sent without its intent.
        """
        if self._failed is not None:
            raise JournalError(self._failed)
        intents, self._intents = self._intents, []
        batches: dict[str, list[Sequence[Any]]] = {}
        if records:
            batches, self._records = self._records, {}
        if not intents and not batches:
            return
        try:
            with self._db:
                self._db.execute("BEGIN")
                if intents:
                    self._db.executemany(_INTENT, intents)
                for sql, rows in batches.items():
                    self._db.executemany(sql, rows)
        except Exception as exc:
            self._failed = f"the journal {self.path} failed a commit: {exc}"
            raise JournalError(self._failed) from None

    def _queue(self, sql: str, params: Sequence[Any]) -> None:
        """Keep a record for a later commit (see the module docstring)."""
        rows = self._records.get(sql)
        if rows is None:
            self._records[sql] = [params]
        else:
            rows.append(params)

    def _group_commit(self, commit: asyncio.Future[None]) -> None:
        self._commit = None
        try:
            waiting = sum(len(rows) for rows in self._records.values())  # one list per table
            self._commit_pending(records=waiting >= RECORD_BATCH)
        except JournalError as exc:  # every waiting close must hear its intent is not recorded
            commit.set_exception(exc)
        else:
            commit.set_result(None)
