"""The journal's store in PostgreSQL (`PgStore`), so that two hosts on one timer flatten once.

Every intent is committed on the one session that holds the run's lock (`PgSession`), and the
lock is checked before each send (`LockCheck`); this module runs the journal's statements on
that session. It never commits an intent on a session that does not hold the lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

import psycopg

from worker.errors import JournalRefused
from worker.journal.backend import Batch, Row
from worker.journal.pg_lock_check import LockCheck
from worker.journal.pg_session import HOLDERS_TABLE, PgSession
from worker.journal.schema import SCHEMA, TABLES, schema_probes
from worker.journal.store import Journal

_SCHEMA_LOCK = 0x6C697175  # a transaction lock so two hosts never create the tables at once
# The run's last write, in the database's time; and how long ago earlier runs of a job wrote.
_CLOCK_NOW = (
    b"INSERT INTO run_clock (run_id, last_at) VALUES (%s, clock_timestamp()::text)"
    b" ON CONFLICT (run_id) DO UPDATE SET last_at = EXCLUDED.last_at"
)
_SINCE_LAST_WRITE = (
    b"SELECT EXTRACT(EPOCH FROM clock_timestamp() - MAX(c.last_at::timestamptz))::float8"
    b" FROM run_clock c JOIN runs r ON r.run_id = c.run_id WHERE r.job = %s AND r.run_id != %s"
)


class PgJournal:
    """How a run opens its journal in PostgreSQL: a `Journal` over a `PgStore`."""

    @staticmethod
    async def open(
        url: str,
        *,
        scope: str,
        lock_wait: float,
        timeout_s: float = 3.0,
        stop: asyncio.Event | None = None,
    ) -> Journal:
        store = await PgStore.open(
            url, scope=scope, lock_wait=lock_wait, timeout_s=timeout_s, stop=stop
        )
        journal = Journal(store)
        journal.lock_taken()
        return journal


class PgStore:
    """The journal's store on one PostgreSQL session that holds the run's advisory lock."""

    mark = "%s"

    def __init__(self, session: PgSession, *, timeout_s: float = 3.0) -> None:
        self.name = session.name
        self._session = session
        self._lock_check = LockCheck(session, timeout_s)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        scope: str,
        lock_wait: float,
        timeout_s: float = 3.0,
        stop: asyncio.Event | None = None,
    ) -> PgStore:
        """Connect, create or check the tables, and take the scope's lock (waiting up to
        `lock_wait`); refuses (`JournalRefused`) when it cannot."""
        session = PgSession.connect(url, timeout_s)
        try:
            _create_schema(session)
            await session.take(scope, lock_wait=lock_wait, stop=stop)
        except psycopg.Error as exc:
            session.close()
            raise JournalRefused(f"the journal {session.name} could not be opened: {exc}") from None
        except BaseException:
            session.close()
            raise
        return cls(session, timeout_s=timeout_s)

    async def still_locked(self, thread: Executor) -> None:
        """`LockCheck.still_locked`: return if the session still holds the lock."""
        await self._lock_check.still_locked(thread)

    def since_last_write(self, job: str, current_run: str) -> float | None:
        s = self._session
        with s.lock:
            row = s.on_session(
                lambda: s.conn.execute(_SINCE_LAST_WRITE, (job, current_run)).fetchone()
            )
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    def upsert(self, table: str) -> str:
        keys, others = TABLES[table]
        columns = ", ".join(keys + others)
        marks = ", ".join(["%s"] * len(keys + others))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in others)
        return (
            f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        )

    def write(self, batch: Batch, stamped: Collection[str]) -> None:
        with self._session.lock:
            self._session.on_session(lambda: self._write_once(batch, stamped))

    def _write_once(self, batch: Batch, stamped: Collection[str]) -> None:
        conn = self._session.conn
        with conn.transaction(), conn.cursor() as cur:
            for sql, rows in batch:
                if rows:
                    cur.executemany(sql.encode(), rows)
            for run_id in stamped:
                cur.execute(_CLOCK_NOW, (run_id,))

    def read(self, sql: str, params: Row) -> list[tuple[Any, ...]]:
        s = self._session
        with s.lock:
            return s.on_session(lambda: s.conn.execute(_pg(sql), params).fetchall())

    def execute(self, sql: str, params: Row) -> None:
        s = self._session

        def once() -> None:
            with s.conn.transaction():
                s.conn.execute(_pg(sql), params)

        with s.lock:
            s.on_session(once)

    def use_clock(self, now: Callable[[], datetime]) -> None:
        """PostgreSQL stamps `run_clock` with its own clock."""

    def close(self) -> None:
        self._session.close()  # the session ends, and with it the advisory lock


def _create_schema(session: PgSession) -> None:
    """The journal's tables, created by one host at a time, then checked as this version
    writes them."""
    conn = session.conn
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in [*SCHEMA.split(";"), HOLDERS_TABLE]:
            if statement.strip():
                conn.execute(statement.encode())
    try:
        for probe in schema_probes():
            conn.execute(probe.encode())
    except psycopg.Error as exc:
        raise JournalRefused(
            f"the journal {session.name} does not have the journal's tables as this version"
            f" writes them ({exc}); nothing was sent. Point journal_url at another database,"
            " or check what changed them"
        ) from None


def _pg(sql: str) -> bytes:
    """The journal's statements use SQLite's `?`; psycopg wants `%s`."""
    return sql.replace("?", "%s").encode()
