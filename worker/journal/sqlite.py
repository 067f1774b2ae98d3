"""The journal's store in one SQLite file under STATE_DIR: opened, checked and made durable before
any intent is acknowledged.

SQLite runs in WAL mode with `synchronous=FULL`, and every commit is followed by a checkpoint that
copies it into the main file (fsync'd) and empties the log, so an acknowledged intent never lives
only in a log that a crash could damage. It never opens a journal whose log is damaged
(`worker.journal.files`) or that fails `PRAGMA quick_check`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from worker.errors import JournalRefused
from worker.journal.backend import Batch, Row
from worker.journal.files import wal_problem
from worker.journal.schema import SCHEMA, TABLES, schema_probes

ROWS_PER_STATEMENT = 200  # rows per INSERT statement (10 columns: 2,000 of SQLite's 32,766 ?s)

_CLOCK_UPSERT = "INSERT OR REPLACE INTO run_clock (run_id, last_at) VALUES (?, ?)"
_LAST_WRITES = (
    "SELECT c.last_at FROM run_clock c JOIN runs r ON r.run_id = c.run_id"
    " WHERE r.job = ? AND r.run_id != ?"
)


class SqliteStore:
    """One SQLite connection, used by one statement at a time from whichever thread.

    Its lock is a `flock` beside the file (`worker.journal.lock.FileLock`), held as long as this
    process keeps the journal open; `release` drops it when the store closes.
    """

    mark = "?"

    def __init__(self, path: Path, *, release: Callable[[], None] | None = None) -> None:
        self.path = path
        self.name = str(path)
        damage = wal_problem(path)  # before SQLite opens it and shrugs the damage off
        if damage is not None:
            raise JournalRefused(_damaged(path, damage))
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise JournalRefused(f"state_dir: cannot open the journal {path}: {exc}") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA wal_autocheckpoint=0")  # every commit checkpoints itself
            problems = [row[0] for row in self.db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:5]))
            self.db.executescript(SCHEMA)
            for sql in schema_probes():
                self.db.execute(sql)
        except sqlite3.Error as exc:
            self.db.close()
            raise JournalRefused(_damaged(path, str(exc))) from None
        self._release = release
        self._lock = threading.Lock()  # one transaction at a time, whichever thread
        # SQLite has no clock worth trusting here: `run_clock` takes the API server's time as the
        # run reads it (`use_clock`), the wall clock until then.
        self._now: Callable[[], datetime] = partial(datetime.now, UTC)

    def upsert(self, table: str) -> str:
        keys, others = TABLES[table]
        columns = ", ".join(keys + others)
        marks = ", ".join("?" * len(keys + others))
        return f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})"

    def write(self, batch: Batch, stamped: Collection[str]) -> None:
        with self._lock:
            db = self.db
            with db:
                db.execute("BEGIN")
                for sql, rows in batch:
                    if rows:
                        _insert_rows(db, sql, rows)
                stamp = self._now().isoformat()
                for run_id in stamped:
                    db.execute(_CLOCK_UPSERT, (run_id, stamp))
            # Into the main file (fsync'd), and the log emptied: see the module docstring.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def read(self, sql: str, params: Row) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.db.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Row) -> None:
        with self._lock:
            with self.db:
                self.db.execute(sql, params)
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def use_clock(self, now: Callable[[], datetime]) -> None:
        self._now = now

    def since_last_write(self, job: str, current_run: str) -> float | None:
        """A later time than now counts as now."""
        stamps = [
            datetime.fromisoformat(at) for (at,) in self.read(_LAST_WRITES, (job, current_run))
        ]
        if not stamps:
            return None
        return max(0.0, (self._now() - max(stamps)).total_seconds())

    async def still_locked(self, thread: Executor) -> None:
        """The `flock` is held while the journal is open, and a closed journal says so itself."""

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            if self._release is not None:
                self._release()
                self._release = None


def _insert_rows(db: sqlite3.Connection, sql: str, rows: Sequence[Row]) -> None:
    """`executemany`, as one statement per ROWS_PER_STATEMENT rows of an INSERT.

    executemany steps SQLite once per row, and each step lets go of the GIL and waits to get it
    back from the busy fan-out, holding up the intent commits queued behind (bench/README.md).
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
