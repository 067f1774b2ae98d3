"""The run journal: what a rerun needs to never close twice. SQLite under STATE_DIR by default;
PostgreSQL (`worker.journal.postgres`) for more than one host.

It records each run, each target, the intent to close *before* the request is sent, every attempt
with its request_id, the orders and the outcome. Intents are group-committed: every close that is
about to be sent within COMMIT_WINDOW_S of the first shares one commit, and none is sent before
its commit returns. Commits run in the journal's own thread, one at a time, so the event loop
keeps sending closes whose intents are already on disk while the next group is written (the
fan-out keeps twice as many closes ready as may be in flight, so a close waiting for its commit
would be waiting for a free slot anyway). The fan-out records its targets' first intents ahead,
a block per commit (`run.intents_ahead`), each used only within AHEAD_FRESH_S of its
commit and while the journal works; a run that finishes in order withdraws those it never sent.

Durable before sent: SQLite runs in WAL mode with `synchronous=FULL`, and every commit is
followed by a checkpoint that copies it into the main file (fsync'd) and empties the log. So an
intent acknowledged to a close lives in the main file: a write-ahead log damaged after a crash
cannot take one with it (and is refused at open anyway, see `worker.journal.files`). The one
exception: a reader (`liquidator journal`) holding the file for longer than SQLite's 5 s busy
timeout leaves that checkpoint incomplete, and the group is fsync'd in the log only. Measured
cost: bench/run.py, README "Performance". At open, `PRAGMA quick_check` costs about 0.12 s per
100,000 closes journaled.

Only intents decide what a rerun does (it looks before closing anything an earlier run meant to
send), so only they are committed before a send. The records of what happened (attempt results,
orders, outcomes) are kept in memory and committed in batches of RECORD_BATCH rows, riding along
with an intent commit, and in full when the run ends or stops. A process killed outright loses
at most a batch of records, never an intent.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from worker.api.models import Order
from worker.errors import JournalError, JournalRefused, LockLost
from worker.journal.files import wal_problem
from worker.journal.schema import SCHEMA, TABLES, schema_probes, split_intents
from worker.output.report import TargetResult

Key = tuple[int, str]  # (account_id, instrument_id)

COMMIT_WINDOW_S = 0.002  # 5,000 closes at 64 in flight: ~500 commits instead of ~1,750
RECORD_BATCH = 1000  # records kept in memory before they ride along with an intent commit
OUTCOME_BATCH = 10_000  # outcomes queued, none gone to a commit, before they are committed
ROWS_PER_STATEMENT = 200  # rows per INSERT statement (10 columns: 2,000 of SQLite's 32,766 ?s)
# An intent recorded ahead is used only this soon after its commit; later, the send commits its
# own. A host that lost its journal (its PostgreSQL session, and with it the lock) therefore
# sends nothing it could not commit now, beyond this margin: a standby that took over waits
# REQUEST_TIMEOUT + RECONCILE_DELAY before it looks, and that wait must cover every send.
AHEAD_FRESH_S = 0.25
# A lock check is good for a send that goes out this soon after the check was asked for; a host
# paused in between (SIGSTOP, a VM stopped) asks again when it resumes. A run that takes over
# adds it to the wait for the requests a lost host may still have had in flight.
LOCK_FRESH_S = 0.25

_PRIORS = (
    "SELECT a.account_id, a.instrument_id, MIN(a.since) FROM attempts a"
    " JOIN runs r ON r.run_id = a.run_id WHERE r.job = ? AND r.run_id != ?"
    " GROUP BY a.account_id, a.instrument_id"
)
# submit_orders: the highest client id generation earlier runs of the job recorded per position.
_GENERATIONS = (
    "SELECT c.account_id, c.instrument_id, MAX(c.generation) FROM client_ids c"
    " JOIN runs r ON r.run_id = c.run_id WHERE r.job = ? AND r.run_id != ?"
    " GROUP BY c.account_id, c.instrument_id"
)
_UNFINISHED = "SELECT run_id FROM runs WHERE job = ? AND run_id != ? AND finished_at IS NULL"
_LAST_WRITES = (
    "SELECT c.last_at FROM run_clock c JOIN runs r ON r.run_id = c.run_id"
    " WHERE r.job = ? AND r.run_id != ?"
)
_CLOCK_UPSERT = "INSERT OR REPLACE INTO run_clock (run_id, last_at) VALUES (?, ?)"
_JOBS = "SELECT DISTINCT job, base_url, trading_day FROM runs"
_REKEY = "UPDATE runs SET job = ? WHERE job = ? AND base_url = ? AND trading_day = ?"


@dataclass(frozen=True, slots=True)
class Prior:
    """Earlier runs of the same job sent a close for this position.

    The resume look searches the position's orders from `since`, which covers every order those
    runs recorded (and any whose reply they never saw).
    """

    since: datetime  # the earliest moment their closing orders could carry
    # submit_orders: the highest generation whose client id they recorded before sending; a
    # rerun sends that id again (409: found). None: they sent through close_position.
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """A close about to be sent: the record a rerun finds (see `Prior`)."""

    account_id: int
    instrument_id: str
    attempt: int
    since: datetime  # the earliest moment its order could carry
    client_id: str | None = None  # submit_orders: the id it goes under
    generation: int = 0

    @property
    def slot(self) -> tuple[int, str, int]:
        """Its place in the attempts table, within one run."""
        return (self.account_id, self.instrument_id, self.attempt)

    @property
    def named(self) -> tuple[Any, ...]:
        """What else a send must match to use an intent recorded ahead: its client id."""
        return () if self.client_id is None else (self.client_id, self.generation)

    def row(self, run_id: str, since_text: str | None = None) -> tuple[Any, ...]:
        row = (run_id, *self.slot, since_text or self.since.isoformat())
        return (*row, *self.named)


class Journal:
    """The SQLite journal. The store hooks (`_write`, `_query`, `_execute`, `_disconnect`) are
    what `worker.journal.postgres.PgJournal` replaces; the group commit is the same for both."""

    name: str
    _mark = "?"  # the store's parameter mark
    _locked_at: float  # when this run got the lock (monotonic)
    _now: Callable[[], datetime]  # SQLite's time for `run_clock` (see `use_clock`)

    def __init__(self, path: Path, *, release: Callable[[], None] | None = None) -> None:
        self.path = path
        self.name = str(path)  # how messages name this journal
        damage = wal_problem(path)  # before SQLite opens it and shrugs the damage off
        if damage is not None:
            raise JournalRefused(_damaged(path, damage))
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise JournalRefused(f"state_dir: cannot open the journal {path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # every commit checkpoints itself
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:5]))
            self._db.executescript(SCHEMA)
            for sql in schema_probes():
                self._db.execute(sql)
        except sqlite3.Error as exc:
            self._db.close()
            raise JournalRefused(_damaged(path, str(exc))) from None
        self._init_group_commit(release)

    @classmethod
    def in_dir(cls, state_dir: Path) -> Journal:
        return cls(state_dir / "journal.sqlite3")

    def lock_taken(self) -> None:
        """Note when this run got the journal's lock (whether or not it waited for it)."""
        self._locked_at = time.monotonic()

    def use_clock(self, now: Callable[[], datetime]) -> None:
        """The time SQLite records a run's last write in: the API server's, as the run reads it
        (PostgreSQL records its own)."""
        self._now = now

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
            elapsed = self._since_last_write(job, current_run)
            unfinished = self._query(_UNFINISHED, (job, current_run))
        except Exception as exc:
            raise JournalError(f"the journal {self.name} could not be read: {exc}") from None
        wait = 0.0 if elapsed is None else span - elapsed
        if unfinished:
            wait = max(wait, span - (time.monotonic() - self._locked_at))
        return min(span, max(0.0, wait))

    def _since_last_write(self, job: str, current_run: str) -> float | None:
        """Seconds since earlier runs of the job last wrote (`run_clock`), in the journal's
        time; None when none did. A later time than now counts as now."""
        stamps = [
            datetime.fromisoformat(at) for (at,) in self._query(_LAST_WRITES, (job, current_run))
        ]
        if not stamps:
            return None
        return max(0.0, (self._now() - max(stamps)).total_seconds())

    async def still_locked(self) -> None:
        """Return if this run still holds the journal's lock; raise `LockLost` otherwise.

        Awaited right before each request that changes something goes out (after its slot and
        its pace). SQLite's lock is a `flock` held as long as this process keeps the journal
        open, so only a closed journal has lost it.
        """
        if self._closed:
            raise LockLost(f"the journal {self.name} is closed: nothing more is sent")

    def _init_group_commit(self, release: Callable[[], None] | None) -> None:
        self._release = release  # drops the run's lock on this journal
        self._locked_at = time.monotonic()
        self._now = partial(datetime.now, UTC)
        self._intents: list[Sequence[Any]] = []
        self._records: dict[str, list[Sequence[Any]]] = {}
        self._failed: str | None = None  # why the journal stopped accepting commits
        self._next: asyncio.Future[None] | None = None  # the group collecting intents
        self._due = False  # that group's window is over
        self._writing = False  # a group is being committed in the journal's thread
        self._store_lock = threading.Lock()  # one transaction at a time, whichever thread
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="journal")
        self._closed = False
        self._statements = {table: self._upsert(table) for table in TABLES}
        # Intents recorded ahead and not yet used, by slot: the row's client id part (what the
        # send must match to use it) and when its commit returned (None: not yet).
        self._ahead: dict[tuple[int, str, int], tuple[tuple[Any, ...], float | None]] = {}
        self._outcomes_queued = 0  # since records last went to a commit
        m = self._mark
        self._withdrawals = [
            f"DELETE FROM {table} WHERE run_id = {m} AND account_id = {m}"
            f" AND instrument_id = {m} AND attempt = {m}"
            for table in ("attempts", "client_ids")
        ]
        self._finish = f"UPDATE runs SET finished_at = {m}, exit_code = {m} WHERE run_id = {m}"

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._thread.shutdown(wait=True)
            try:
                self._disconnect()
            finally:
                if self._release is not None:
                    self._release()
                    self._release = None

    def rekey(self, job_of: Callable[[str, str], str]) -> int:
        """Give every run the job key `job_of(base_url, trading_day)` names; how many changed.

        Runs recorded before keys were canonical carry the URL as typed; without this a rerun
        after an upgrade would not find their intents.
        """
        changed = 0
        with self._store_lock:
            for job, base_url, day in self._read(_JOBS, ()):
                if job != job_of(base_url, day):
                    self._execute(_REKEY, (job_of(base_url, day), job, base_url, day))
                    changed += 1
        return changed

    # Reads, at the start of a run.

    def priors(self, job: str, current_run: str) -> dict[Key, Prior]:
        """Positions that earlier runs of this job sent (or were about to send) a close for."""
        try:
            rows = self._query(_PRIORS, (job, current_run))
            generations: dict[Key, int] = {}
            for a, i, g in self._query(_GENERATIONS, (job, current_run)):
                key = (int(a), i.lower())
                generations[key] = max(int(g), generations.get(key, int(g)))
        except Exception as exc:
            raise JournalError(f"the journal {self.name} could not be read: {exc}") from None
        # Keyed in lower case (UUIDs are case-insensitive): an earlier run's listing may have
        # spelled them otherwise. Of two spellings, the earlier attempt's start counts.
        found: dict[Key, Prior] = {}
        for account_id, instrument_id, since in rows:
            key = (int(account_id), instrument_id.lower())
            prior = Prior(datetime.fromisoformat(since), generations.get(key))
            if key not in found or prior.since < found[key].since:
                found[key] = prior
        return found

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

    async def intent(
        self,
        run_id: str,
        account_id: int,
        instrument_id: str,
        attempt: int,
        since: datetime,
        *,
        client_id: str | None = None,
        generation: int = 0,
    ) -> None:
        """Record that a close is about to be sent; return once that record is committed.

        `client_id` (submit_orders): the id it is sent under, committed with the intent so a
        rerun sends the same id again. Every intent recorded within COMMIT_WINDOW_S of the
        first shares its commit; while one group is being written, the next one collects.
        """
        await self.record_intent(
            run_id, Intent(account_id, instrument_id, attempt, since, client_id, generation)
        )

    async def record_intent(self, run_id: str, intent: Intent) -> None:
        """`intent()`, for an `Intent` already made."""
        # An intent in a slot recorded ahead uses it: the same close, committed moments ago and
        # the journal still working, needs no commit. Otherwise (another client id, not yet
        # committed, committed too long ago, a failed journal) this row is committed over it.
        ahead = self._ahead.pop(intent.slot, None) if self._ahead else None
        if ahead is not None and self._failed is None:
            named, committed_at = ahead
            fresh = committed_at is not None and time.monotonic() - committed_at <= AHEAD_FRESH_S
            if fresh and named == intent.named:
                return
        self._intents.append(intent.row(run_id))
        await asyncio.shield(self._group())

    async def intents_ahead(self, run_id: str, intents: Sequence[Intent]) -> None:
        """Record first attempts' intents ahead of their sends, in one commit.

        `intent()` then finds each one committed and returns at once. Those never used by the
        time the run finishes in order are withdrawn (`finish_run`); after a crash they stay,
        and the next run looks before closing those positions, as for any intent.
        """
        since_texts = {s: s.isoformat() for s in {i.since for i in intents}}  # usually one
        for i in intents:
            self._intents.append(i.row(run_id, since_texts[i.since]))
            self._ahead[i.slot] = (i.named, None)
        group = self._group()
        self._window_over()  # a block is a group of its own: no window to wait for
        await asyncio.shield(group)
        committed_at = time.monotonic()
        for i in intents:
            if i.slot in self._ahead:  # (not used meanwhile by an intent() that committed its own)
                self._ahead[i.slot] = (i.named, committed_at)

    def _group(self) -> asyncio.Future[None]:
        """The group collecting intents, started if none is; it commits when its window ends."""
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            loop.call_later(COMMIT_WINDOW_S, self._window_over)
        return self._next

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
            "attempt_results", (run_id, account_id, instrument_id, attempt, request_id, result)
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
                "orders",
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
            "targets",
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
        # Queued as targets settle, they ride along with the fan-out's intent commits. Those
        # with no such commit coming (at the run's end, every target a stop cut off) are
        # committed in batches, so 100,000 of them never wait in memory together (~18 MB).
        self._outcomes_queued += 1
        if self._outcomes_queued >= OUTCOME_BATCH:
            self.flush()

    def finish_run(self, run_id: str, finished_at: datetime, exit_code: int) -> None:
        # Intents recorded ahead for closes this run never sent: no look is owed for them.
        for slot in self._ahead:
            for sql in self._withdrawals:
                self._queue_sql(sql, (run_id, *slot))
        self._ahead.clear()
        # The run's end, in the one commit that writes its last records.
        self._queue_sql(self._finish, (finished_at.isoformat(), exit_code, run_id))
        self.flush()

    def flush(self) -> None:
        """Commit every pending intent and record, after every group already handed to the
        journal's thread (its one worker takes them in order).

        Not before one still queued there: a run's end withdraws the intents recorded ahead and
        never used, and written first, the withdrawal would find nothing and the block after it
        would stay on disk.
        """
        if self._closed:
            raise JournalError(f"the journal {self.name} is closed")
        intents, self._intents = self._intents, []
        records, self._records = self._records, {}
        self._outcomes_queued = 0
        self._thread.submit(self._commit, intents, records).result()

    # The group commit.

    def _window_over(self) -> None:
        self._due = True
        if not self._writing:
            self._start_group()

    def _start_group(self) -> None:
        group, self._next, self._due = self._next, None, False
        if group is None:
            return
        intents, self._intents = self._intents, []
        records: dict[str, list[Sequence[Any]]] = {}
        if sum(len(rows) for rows in self._records.values()) >= RECORD_BATCH:
            records, self._records = self._records, {}
            self._outcomes_queued = 0
        if not intents and not records:  # a flush took them; it also said how it went
            self._settle(group, JournalError(self._failed) if self._failed else None)
            return
        if self._closed:  # (the run is over: nothing of it may be sent any more)
            self._settle(group, JournalError(f"the journal {self.name} is closed"))
            return
        self._writing = True
        work = asyncio.get_running_loop().run_in_executor(
            self._thread, self._commit, intents, records
        )
        work.add_done_callback(partial(self._group_written, group))

    def _group_written(self, group: asyncio.Future[None], work: asyncio.Future[None]) -> None:
        self._writing = False
        self._settle(group, None if work.cancelled() else work.exception())
        if self._due:
            self._start_group()

    @staticmethod
    def _settle(group: asyncio.Future[None], error: BaseException | None) -> None:
        if group.done():
            return
        if error is None:
            group.set_result(None)
        else:  # every close waiting on this group must hear its intent is not recorded
            group.set_exception(error)
            group.exception()  # read here too, in case every waiting close was cancelled

    def _commit(
        self, intents: Sequence[Sequence[Any]], records: dict[str, list[Sequence[Any]]]
    ) -> None:
        """One transaction; rolled back if any statement fails.

        A failure loses what was pending, so the journal stays failed: every later commit
        (and every close waiting for one) raises, and no close is sent without its intent.
        """
        with self._store_lock:
            if self._failed is not None:
                raise JournalError(self._failed)
            if not intents and not records:
                return
            try:
                self._write(intents, records)
            except Exception as exc:
                self._failed = f"the journal {self.name} failed a commit: {exc}"
                raise JournalError(self._failed) from None

    def _queue(self, table: str, params: Sequence[Any]) -> None:
        """Keep a record for a later commit (see the module docstring)."""
        self._queue_sql(self._statements[table], params)

    def _queue_sql(self, sql: str, params: Sequence[Any]) -> None:
        rows = self._records.get(sql)
        if rows is None:
            self._records[sql] = [params]
        else:
            rows.append(params)

    # The store: SQLite. Called with _store_lock held.

    def _upsert(self, table: str) -> str:
        keys, others = TABLES[table]
        columns = ", ".join(keys + others)
        marks = ", ".join("?" * len(keys + others))
        return f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})"

    def _write(
        self, intents: Sequence[Sequence[Any]], records: dict[str, list[Sequence[Any]]]
    ) -> None:
        db = self._db
        with db:
            db.execute("BEGIN")
            if intents:
                attempts, client_ids = split_intents(intents)
                _insert_rows(db, self._statements["attempts"], attempts)
                _insert_rows(db, self._statements["client_ids"], client_ids)
            for sql, rows in records.items():
                _insert_rows(db, sql, rows)
            stamp = self._now().isoformat()
            for run_id in self._writers(intents, records):
                db.execute(_CLOCK_UPSERT, (run_id, stamp))
        # Into the main file (fsync'd), and the log emptied: see the module docstring.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _writers(
        self, intents: Sequence[Sequence[Any]], records: dict[str, list[Sequence[Any]]]
    ) -> set[str]:
        """The runs whose intents or end this commit writes: their `run_clock` moves on."""
        return {row[0] for row in intents} | {row[2] for row in records.get(self._finish, ())}

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._store_lock:
            return self._read(sql, params)

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        with self._db:
            self._db.execute(sql, params)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _disconnect(self) -> None:
        self._db.close()


def _insert_rows(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """`executemany`, as one statement per ROWS_PER_STATEMENT rows of an INSERT.

    executemany steps SQLite once per row, and each step lets go of the GIL and waits to get it
    back from the busy fan-out: a 1,000-row batch took 100-160 ms in the journal's thread, and
    the intent commits queued behind it held workers up (bench/run.py).
    """
    head, values, marks = sql.partition(" VALUES ")
    if not values:  # (an UPDATE or a DELETE: few rows, at the end of a run)
        db.executemany(sql, rows)
        return
    width = marks.count("?")
    if any(len(row) != width for row in rows):  # flattened, a short row would shift the rest
        raise ValueError(f"a row for {head} does not have {width} values")
    # An SQLite built with a lower limit on ?s per statement (999 before 3.32) gets fewer rows.
    per_statement = min(
        ROWS_PER_STATEMENT, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    )
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        params = [value for row in chunk for value in row]
        db.execute(f"{head} VALUES {', '.join([marks] * len(chunk))}", params)


def _damaged(path: Path, what: str) -> str:
    return (
        f"the journal {path} is damaged ({what}); nothing was sent. Keep a copy of it (with any"
        f" {path.name}-wal beside it), run `liquidator journal verify`, then move the damaged"
        " files aside and check today's closing orders at the API before running again"
    )
