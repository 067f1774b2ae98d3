"""The journal's store in PostgreSQL (`PgStore`), so that two hosts on one timer flatten once.

The run's lock is a session advisory lock on the job's scope, taken on the one connection that also
commits every intent; a host that loses that session reconnects only to take the lock again when
no other run held it meanwhile, and otherwise sends nothing more. It never commits an intent on a
session that does not hold the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Executor
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

from worker.errors import JournalRefused, LockLost
from worker.journal.backend import LOCK_FRESH_S, Batch, Row
from worker.journal.lock import UNNAMED, Holder, acquire
from worker.journal.schema import SCHEMA, TABLES, schema_probes
from worker.journal.store import Journal
from worker.observe import events

_HOLDERS = """
CREATE TABLE IF NOT EXISTS journal_holders (
    lock_key BIGINT PRIMARY KEY, scope TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    since TEXT NOT NULL, backend_pid INTEGER NOT NULL)
"""
_SCHEMA_LOCK = 0x6C697175  # a transaction lock so two hosts never create the tables at once
_HOLDER_NOW = (
    "SELECT h.host, h.pid, h.since FROM journal_holders h WHERE h.lock_key = %s AND h.backend_pid"
    " IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
)
T = TypeVar("T")
# Lock checks answered too late in a row (each older than LOCK_FRESH_S when it arrived) before
# the run stops: a host that cannot get a fresh answer does not know it still holds the lock.
LOCK_STALE_ANSWERS = 3
RECONNECT_FIRST_S = 0.5  # a lost session's first reconnect waits this: see `PgStore._reconnect`
RECONNECT_MAX_S = 2.0
_HOLDER_ROW = b"SELECT host, pid, since FROM journal_holders WHERE lock_key = %s"
_HOLDER_SESSION = b"UPDATE journal_holders SET backend_pid = pg_backend_pid() WHERE lock_key = %s"
# This session holds the run's advisory lock (a bigint key shows as classid/objid halves).
_LOCK_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND classid::bigint = %s AND objid::bigint = %s"
    " AND objsubid = 1)"
)
# The run's last write, in the database's time; and how long ago earlier runs of a job wrote.
_CLOCK_NOW = (
    b"INSERT INTO run_clock (run_id, last_at) VALUES (%s, clock_timestamp()::text)"
    b" ON CONFLICT (run_id) DO UPDATE SET last_at = EXCLUDED.last_at"
)
_SINCE_LAST_WRITE = (
    b"SELECT EXTRACT(EPOCH FROM clock_timestamp() - MAX(c.last_at::timestamptz))::float8"
    b" FROM run_clock c JOIN runs r ON r.run_id = c.run_id WHERE r.job = %s AND r.run_id != %s"
)
# A host whose database goes quiet gives up instead of hanging: keepalives notice a dead peer,
# tcp_user_timeout bounds a send that is never acknowledged.
_CONNECT: dict[str, str | int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "application_name": "liquidator",
}


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def lock_key(scope: str) -> int:
    """A stable signed 64-bit advisory lock key for a scope."""
    digest = hashlib.blake2b(f"liquidator:{scope}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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

    def __init__(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        name: str,
        key: int,
        *,
        conninfo: str = "",
        timeout_s: float = 3.0,
    ) -> None:
        self.name = name
        self._conn = conn
        self._conninfo = conninfo  # to open a new session after a lost one
        self._key = key
        self._timeout_s = timeout_s
        self._me: Holder | None = None  # as this run named itself in journal_holders
        self._store_lock = threading.Lock()  # one transaction at a time, whichever thread
        # The lock check in progress (whether the lock is held, and when its query started):
        # every send that arrives while it runs shares it, so a busy fan-out costs one query
        # per round trip.
        self._check: asyncio.Future[tuple[bool, float]] | None = None

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
        name = redact_url(url)
        conninfo = _conninfo(url, timeout_s)
        try:
            conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise JournalRefused(f"journal_url: cannot connect to {name}: {exc}") from None
        store = cls(conn, name, lock_key(scope), conninfo=conninfo, timeout_s=timeout_s)
        try:
            store._create_schema()
            await acquire(
                store._try_lock_standing_by,
                store._holder,
                what=f"the journal {name} for {scope}",
                wait_s=lock_wait,
                stop=stop,
            )
            store._say_who_holds(scope)
        except psycopg.Error as exc:
            store._conn.close()
            raise JournalRefused(f"the journal {name} could not be opened: {exc}") from None
        except BaseException:
            store._conn.close()
            raise
        return store

    async def still_locked(self, thread: Executor) -> None:
        """Ask the database whether this session still holds the run's advisory lock.

        A session that ended (terminated, the server restarted, the network gone) has lost it,
        and a standby may hold it now: the check reconnects and re-takes the lock only if no
        other run held it meanwhile (`_reconnect`), or nothing more is sent.

        An answer counts from when its query started on the database, not from when it was
        asked for: a check queued behind a slow group commit is as fresh as the query. An
        answer older than LOCK_FRESH_S by the time the send would go out (this host paused or
        too busy meanwhile) is asked again, at most LOCK_STALE_ANSWERS times in a row; then
        whether the lock is still held is unknown and nothing more is sent (`LockLost`). The query
        runs in `thread`, the journal's commit thread.
        """
        loop = asyncio.get_running_loop()
        # A statement that times out, then a reconnect that gives up: each JOURNAL_TIMEOUT.
        wait_s = 2 * self._timeout_s
        stale = 0
        while True:
            if self._check is None or self._check.done():
                self._check = loop.run_in_executor(thread, self._lock_held)
                self._check.add_done_callback(lambda c: c.cancelled() or c.exception())
            check = self._check
            try:
                held, ran_at = await asyncio.wait_for(asyncio.shield(check), wait_s)
            except TimeoutError:
                raise LockLost(
                    f"the journal {self.name} did not confirm this run's lock within"
                    f" {wait_s:g} s (journal_timeout): nothing more is sent"
                ) from None
            except LockLost:
                raise
            except Exception as exc:
                raise LockLost(
                    f"the journal {self.name} could not confirm this run's lock ({exc}): nothing"
                    " more is sent"
                ) from None
            if not held:
                raise LockLost(
                    f"this run no longer holds the lock on the journal {self.name}: nothing more"
                    " is sent"
                )
            age = time.monotonic() - ran_at
            if age <= LOCK_FRESH_S:
                return
            stale += 1
            if stale >= LOCK_STALE_ANSWERS:
                raise LockLost(
                    f"the journal {self.name} confirmed this run's lock {stale} times in a row,"
                    f" each answer older than {LOCK_FRESH_S:g} s (the last {age:.3f} s) by the"
                    " time the request would go out (this host paused or overloaded): whether"
                    " the run still holds the lock is unknown, nothing more is sent"
                )

    def since_last_write(self, job: str, current_run: str) -> float | None:
        with self._store_lock:
            row = self._on_session(
                lambda: self._conn.execute(_SINCE_LAST_WRITE, (job, current_run)).fetchone()
            )
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    def _lock_held(self) -> tuple[bool, float]:
        """Whether this session holds the run's lock, and when (monotonic) the query that
        answered started: after any commit queued ahead of it and any reconnect."""
        high, low = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF

        def ask() -> tuple[bool, float]:
            started = time.monotonic()
            row = self._conn.execute(_LOCK_HELD.encode(), (high, low)).fetchone()
            return bool(row and row[0]), started

        with self._store_lock:
            return self._on_session(ask)

    # A lost session. Called with _store_lock held (or before the run starts).

    def _session_lost(self) -> bool:
        return self._conn.closed or self._conn.broken

    def _on_session(self, work: Callable[[], T]) -> T:
        """`work()` on the run's session; if that session is gone, once more on a new one that
        holds the lock again (`_reconnect`). Every statement the journal runs is an upsert, a
        read or an idempotent update, so a transaction that may or may not have committed on
        the lost session is simply run again."""
        try:
            return work()
        except psycopg.Error:
            if not self._session_lost():
                raise  # the statement failed (a timeout, a lock not granted): the session lives
        self._reconnect()
        return work()

    def _reconnect(self) -> None:
        """A new session, with backoff, for up to JOURNAL_TIMEOUT; then the lock again, only if
        no other run held it in the meantime. Raises `LockLost` otherwise: the run stops.

        The first try waits RECONNECT_FIRST_S: a standby polling for the lock (every POLL_S)
        takes it first, and this host then stops rather than contend. A run that took the lock
        names itself in journal_holders before it records anything, so finding this run's own
        name there proves no other run recorded an intent or an outcome since.
        """
        started, attempts, pause = time.monotonic(), 0, RECONNECT_FIRST_S
        with contextlib.suppress(Exception):
            self._conn.close()
        while True:
            time.sleep(pause)
            attempts += 1
            try:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
                break
            except psycopg.Error as exc:
                if time.monotonic() - started >= self._timeout_s:
                    raise LockLost(
                        f"the journal {self.name} lost this run's session and could not"
                        f" reconnect within {self._timeout_s:g} s (journal_timeout): {exc}"
                    ) from None
                pause = min(2 * pause, RECONNECT_MAX_S)
        try:
            if not self._try_lock():
                raise LockLost(
                    f"the journal {self.name} lost this run's session, and another run holds"
                    f" its lock now ({self._holder()}): nothing more is sent"
                )
            if self._me is not None:
                named = self._conn.execute(_HOLDER_ROW, (self._key,)).fetchone()
                found = None if named is None else Holder(named[0], int(named[1]), named[2])
                if found != self._me:
                    held_by = "nobody" if found is None else str(found)
                    raise LockLost(
                        f"the journal {self.name} lost this run's session and another run"
                        f" ({held_by}) held its lock meanwhile: nothing more is sent"
                    )
                self._conn.execute(_HOLDER_SESSION, (self._key,))
        except psycopg.Error as exc:
            raise LockLost(
                f"the journal {self.name} lost this run's session; the new one failed: {exc}"
            ) from None
        events.journal_reconnected(
            journal=self.name, attempts=attempts, seconds=round(time.monotonic() - started, 3)
        )

    def _try_lock_standing_by(self) -> bool:
        """`_try_lock` for a run waiting for the lock: a lost session (the database restarted)
        is replaced and the wait goes on."""
        try:
            return self._try_lock()
        except psycopg.Error:
            if not self._session_lost():
                raise
        with contextlib.suppress(psycopg.Error):
            self._conn.close()
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
        return False

    def _create_schema(self) -> None:
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in [*SCHEMA.split(";"), _HOLDERS]:
                if statement.strip():
                    self._conn.execute(statement.encode())
        try:
            for probe in schema_probes():
                self._conn.execute(probe.encode())
        except psycopg.Error as exc:
            raise JournalRefused(
                f"the journal {self.name} does not have the journal's tables as this version"
                f" writes them ({exc}); nothing was sent. Point journal_url at another database,"
                " or check what changed them"
            ) from None

    def _try_lock(self) -> bool:
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        return bool(row and row[0])

    def _holder(self) -> str:
        if self._session_lost():
            return UNNAMED
        try:
            row = self._conn.execute(_HOLDER_NOW, (self._key,)).fetchone()
        except psycopg.Error:
            if not self._session_lost():
                raise
            return UNNAMED
        if row is None:
            return UNNAMED
        return str(Holder(row[0], int(row[1]), row[2]))

    def _say_who_holds(self, scope: str) -> None:
        me = self._me = Holder.me()
        self._conn.execute(
            "INSERT INTO journal_holders (lock_key, scope, host, pid, since, backend_pid)"
            " VALUES (%s, %s, %s, %s, %s, pg_backend_pid()) ON CONFLICT (lock_key) DO UPDATE SET"
            " scope = EXCLUDED.scope, host = EXCLUDED.host, pid = EXCLUDED.pid,"
            " since = EXCLUDED.since, backend_pid = EXCLUDED.backend_pid",
            (self._key, scope, me.host, me.pid, me.since),
        )

    # The store (`worker.journal.backend.Store`).

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
        with self._store_lock:
            self._on_session(lambda: self._write_once(batch, stamped))

    def _write_once(self, batch: Batch, stamped: Collection[str]) -> None:
        with self._conn.transaction(), self._conn.cursor() as cur:
            for sql, rows in batch:
                if rows:
                    cur.executemany(sql.encode(), rows)
            for run_id in stamped:
                cur.execute(_CLOCK_NOW, (run_id,))

    def read(self, sql: str, params: Row) -> list[tuple[Any, ...]]:
        with self._store_lock:
            return self._on_session(lambda: self._conn.execute(_pg(sql), params).fetchall())

    def execute(self, sql: str, params: Row) -> None:
        def once() -> None:
            with self._conn.transaction():
                self._conn.execute(_pg(sql), params)

        with self._store_lock:
            self._on_session(once)

    def use_clock(self, now: Callable[[], datetime]) -> None:
        """PostgreSQL stamps `run_clock` with its own clock."""

    def close(self) -> None:
        self._conn.close()  # the session ends, and with it the advisory lock


def _conninfo(url: str, timeout_s: float) -> str:
    """The URL with the session's settings: every statement and every lock wait bounded."""
    bound = f"{max(1, int(timeout_s * 1000))}"
    return make_conninfo(
        url,
        **_CONNECT,
        connect_timeout=max(2, math.ceil(timeout_s)),
        options=f"-c statement_timeout={bound} -c lock_timeout={bound}",
    )


def _pg(sql: str) -> bytes:
    """The journal's statements use SQLite's `?`; psycopg wants `%s`."""
    return sql.replace("?", "%s").encode()
