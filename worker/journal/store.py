"""The run journal: what a rerun needs to never close twice, recorded before anything is sent.

`Journal` records each run, each target, the intent to close *before* the request is sent, every
attempt with its request_id, the orders and the outcome, in a `Store` (SQLite under STATE_DIR, or
PostgreSQL for more than one host) through a `GroupCommit`. It never lets a close go out before
that close's intent is committed; the records of what happened ride along in batches, so a process
killed outright loses at most a batch of records, never an intent.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.api.models import Order
from worker.errors import JournalError, LockLost
from worker.journal import prior_runs, records
from worker.journal.backend import LOCK_FRESH_S, Store
from worker.journal.intents import Intent, RecordedAhead
from worker.journal.prior_runs import Key, Prior
from worker.journal.prune import Pruned, prune_jobs
from worker.journal.schema import TABLES
from worker.journal.sqlite import SqliteStore
from worker.journal.writer import COMMIT_WINDOW_S, GroupCommit
from worker.results import TargetResult

__all__ = ["COMMIT_WINDOW_S", "LOCK_FRESH_S", "Intent", "Journal", "Key", "Prior"]

RECORD_BATCH = 1000  # records kept in memory before they ride along with an intent commit
OUTCOME_BATCH = 10_000  # outcomes queued, none gone to a commit, before they are committed


class Journal:
    """The journal's API for a run: a `GroupCommit` over a `Store` (SQLite or PostgreSQL)."""

    def __init__(self, store: Store | Path) -> None:
        """`store`: an open store whose lock this run holds, or the path of an SQLite journal."""
        self._store: Store = SqliteStore(store) if isinstance(store, Path) else store
        self.name = self._store.name  # how messages name this journal
        self._writer = GroupCommit(self._store, record_batch=RECORD_BATCH)
        self._locked_at = time.monotonic()  # when this run got the lock (see `lock_taken`)
        self._statements = {table: self._store.upsert(table) for table in TABLES}
        self._ahead = RecordedAhead()
        self._outcomes_queued = 0  # since records last went to a commit (`_outcomes_taken`)
        self._outcomes_taken = 0
        self._withdrawals = records.withdrawals(self._store.mark)
        self._finish = records.finish_statement(self._store.mark)
        self._scrub: Callable[[str], str] = str  # see `scrub_with`

    def scrub_with(self, scrub: Callable[[str], str]) -> None:
        """The texts stored from replies and errors (request ids, an attempt's result, an
        outcome's error) pass through `scrub`: the journal is an exit, and a server may echo
        the key. Ids (orders', targets') are stored as received: a rerun acts on them."""
        self._scrub = scrub

    @classmethod
    def in_dir(cls, state_dir: Path) -> Journal:
        return cls(state_dir / "journal.sqlite3")

    @property
    def path(self) -> Path:
        """The SQLite journal's file (a PostgreSQL journal has none)."""
        return self._sqlite().path

    # Tests reach the SQLite connection (to trace statements) and the commit thread (to hold it).
    @property
    def _db(self) -> sqlite3.Connection:
        return self._sqlite().db

    @property
    def _thread(self) -> Executor:
        return self._writer.thread

    def _sqlite(self) -> SqliteStore:
        if not isinstance(self._store, SqliteStore):
            raise TypeError(f"the journal {self.name} is not an SQLite file")
        return self._store

    def lock_taken(self) -> None:
        """Note when this run got the journal's lock (whether or not it waited for it)."""
        self._locked_at = time.monotonic()

    def use_clock(self, now: Callable[[], datetime]) -> None:
        """The time SQLite records a run's last write in: the API server's, as the run reads it
        (PostgreSQL records its own)."""
        self._store.use_clock(now)

    def settle_after_takeover(self, job: str, current_run: str, in_flight_s: float) -> float:
        """Seconds still to wait before looking at positions earlier runs meant to close.

        An earlier run's request may still be in flight, or be applied late by a gateway, for
        `in_flight_s` (REQUEST_TIMEOUT + RECONCILE_DELAY) after it went out, plus LOCK_FRESH_S
        (a send goes out at most that long after its lock check). It went out no later than:
        - that run's last intent or its end, in the journal's time (`run_clock`), for a run
          that finished;
        - for a run that never finished (killed, or a host that lost its session), its last
          lock check, which was before this run got the lock: the wait counts from then too,
          whether or not this run waited for the lock (a close can wait behind its pace long
          after its intent).
        """
        span = in_flight_s + LOCK_FRESH_S
        try:
            elapsed = self._store.since_last_write(job, current_run)
        except Exception as exc:
            raise JournalError(f"the journal {self.name} could not be read: {exc}") from None
        unfinished = prior_runs.unfinished(self._store, job, current_run)
        wait = 0.0 if elapsed is None else span - elapsed
        if unfinished:
            wait = max(wait, span - (time.monotonic() - self._locked_at))
        return min(span, max(0.0, wait))

    async def still_locked(self) -> None:
        """Return if this run still holds the journal's lock; raise `LockLost` otherwise.

        Awaited right before each request that changes something goes out (after its slot and
        its pace). A closed journal has lost it; otherwise the store answers (SQLite's `flock`
        lasts as long as the file is open; PostgreSQL's advisory lock is asked for).
        """
        if self._writer.closed:
            raise LockLost(f"the journal {self.name} is closed: nothing more is sent")
        await self._store.still_locked(self._writer.thread)

    def close(self) -> None:
        if self._writer.closed:
            return
        try:
            self.flush()
        finally:
            try:
                self._writer.close()
            finally:
                self._store.close()

    def rekey(self, job_of: Callable[[str], str]) -> int:
        """Give every run the job key `job_of(trading_day)` names; how many keys changed.

        Runs recorded under an older key (one that held the API's URL) would otherwise be
        another job: a rerun after an upgrade would not find their intents. Called once, as the
        journal opens.
        """
        return prior_runs.rekey(self._store, job_of)

    # Reads, at the start of a run.

    def priors(self, job: str, current_run: str) -> dict[Key, Prior]:
        """Positions that earlier runs of this job sent (or were about to send) a close for."""
        return prior_runs.priors(self._store, job, current_run)

    def prior_orders(self, job: str, current_run: str) -> dict[Key, set[str]]:
        """The ids of the orders earlier runs of this job recorded, by position (lower case)."""
        return prior_runs.prior_orders(self._store, job, current_run)

    def reported_flat(self, job: str, current_run: str) -> set[Key]:
        """The positions an earlier run of this job reported `closed` or `already_flat` in a run
        that finished with exit 0."""
        return prior_runs.reported_flat(self._store, job, current_run)

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
            "runs", (run_id, job, base_url, trading_day, started_at.isoformat(), int(dry_run))
        )
        self.flush()

    async def record_intent(self, run_id: str, intent: Intent) -> None:
        """Record that a close is about to be sent; return once that record is committed.

        `intent.client_id` (submit_orders): the id it is sent under, committed with the intent so
        a rerun sends the same id again. Every intent recorded within COMMIT_WINDOW_S of the
        first shares its commit; while one group is being written, the next one collects.
        """
        # Otherwise (another client id, not yet committed, committed too long ago, a failed
        # journal) this row is committed over the one recorded ahead.
        if self._ahead.use(intent) and self._writer.failed is None:
            return
        await asyncio.shield(self._writer.intent(intent.row(run_id)))

    async def intents_ahead(self, run_id: str, intents: Sequence[Intent]) -> None:
        """Record first attempts' intents ahead of their sends, in one commit.

        `record_intent()` then finds each one committed and returns at once. Those never used by the
        time the run finishes in order are withdrawn (`finish_run`); after a crash they stay,
        and the next run looks before closing those positions, as for any intent.
        """
        since_texts = {s: s.isoformat() for s in {i.since for i in intents}}  # usually one
        self._ahead.expect(intents)
        await asyncio.shield(
            self._writer.block([i.row(run_id, since_texts[i.since]) for i in intents])
        )
        self._ahead.committed(intents, time.monotonic())

    def attempt_result(
        self,
        run_id: str,
        account_id: int,
        instrument_id: str,
        attempt: int,
        request_id: str | None,
        result: str,
    ) -> None:
        shown_id = None if request_id is None else self._scrub(request_id)
        self._queue(
            "attempt_results",
            (run_id, account_id, instrument_id, attempt, shown_id, self._scrub(result)),
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
        request_id = self._scrub(request_id)
        for o in orders:
            self._queue(
                "orders",
                records.order_row(o, run_id, account_id, instrument_id, request_id, reconciled),
            )

    def outcome(self, run_id: str, result: TargetResult, quantity: str | None) -> None:
        self._queue("targets", records.outcome_row(run_id, result, quantity, self._scrub))
        # Queued as targets settle, they ride along with the fan-out's intent commits. Those
        # with no such commit coming (at the run's end, every target a stop cut off) are
        # committed in batches, so 100,000 of them never wait in memory together (~18 MB).
        if self._outcomes_taken != self._writer.taken:  # records went to a commit since
            self._outcomes_taken, self._outcomes_queued = self._writer.taken, 0
        self._outcomes_queued += 1
        if self._outcomes_queued >= OUTCOME_BATCH:
            self.flush()

    def finish_run(self, run_id: str, finished_at: datetime, exit_code: int) -> None:
        # Intents recorded ahead for closes this run never sent: no look is owed for them.
        for slot in self._ahead.unused():
            for sql in self._withdrawals:
                self._writer.queue(sql, (run_id, *slot))
        # The run's end, in the one commit that writes its last records.
        self._writer.queue(
            self._finish, (finished_at.isoformat(), exit_code, run_id), stamps=run_id
        )
        self.flush()

    def flush(self) -> None:
        """Commit every pending intent and record (`GroupCommit.flush`)."""
        self._writer.flush()

    def prune(self, before: str, *, dry_run: bool = False) -> Pruned:
        """Retention: the jobs of trading days before `before` that may go (`worker.journal.prune`),
        deleted, or counted for a dry run. Raises what the database raises."""
        self.flush()
        return prune_jobs(self._store, before, dry_run=dry_run)

    def _queue(self, table: str, params: Sequence[Any]) -> None:
        """Keep a record for a later commit (see the module docstring)."""
        self._writer.queue(self._statements[table], params)
