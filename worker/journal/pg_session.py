"""The run's one PostgreSQL session and the advisory lock it holds (`PgSession`).

The lock is a session advisory lock on the job's scope, taken on the one connection that also
commits every intent; a host that loses that session reconnects only to take the lock again when
no other run held it meanwhile, and otherwise sends nothing more. It never runs a statement on
a new session that does not hold the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

from worker.errors import JournalRefused, LockLost
from worker.journal.lock import UNNAMED, Holder, acquire
from worker.observe import events

# Who holds each lock, so a waiting run can name it and a reconnecting one can find itself.
HOLDERS_TABLE = """
CREATE TABLE IF NOT EXISTS journal_holders (
    lock_key BIGINT PRIMARY KEY, scope TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    since TEXT NOT NULL, backend_pid INTEGER NOT NULL)
"""
_HOLDER_NOW = (
    "SELECT h.host, h.pid, h.since FROM journal_holders h WHERE h.lock_key = %s AND h.backend_pid"
    " IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
)
T = TypeVar("T")
RECONNECT_FIRST_S = 0.5  # a lost session's first reconnect waits this: see `PgSession._reconnect`
RECONNECT_MAX_S = 2.0
_HOLDER_ROW = b"SELECT host, pid, since FROM journal_holders WHERE lock_key = %s"
_HOLDER_SESSION = b"UPDATE journal_holders SET backend_pid = pg_backend_pid() WHERE lock_key = %s"
# This session holds the run's advisory lock (a bigint key shows as classid/objid halves).
_LOCK_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND classid::bigint = %s AND objid::bigint = %s"
    " AND objsubid = 1)"
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


class PgSession:
    """One PostgreSQL connection, used by one transaction at a time (`lock`), whichever thread."""

    def __init__(
        self, conn: psycopg.Connection[tuple[Any, ...]], name: str, conninfo: str, timeout_s: float
    ) -> None:
        self.name = name
        self.conn = conn
        self._conninfo = conninfo  # to open a new session after a lost one
        self._timeout_s = timeout_s
        self._key = 0  # the run's lock, once `take` has it
        self._me: Holder | None = None  # as this run named itself in journal_holders
        self.lock = threading.Lock()  # one transaction at a time, whichever thread

    @classmethod
    def connect(cls, url: str, timeout_s: float) -> PgSession:
        """A new session; refuses (`JournalRefused`) when the database cannot be reached."""
        name = redact_url(url)
        conninfo = _conninfo(url, timeout_s)
        try:
            conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise JournalRefused(f"journal_url: cannot connect to {name}: {exc}") from None
        return cls(conn, name, conninfo, timeout_s)

    async def take(self, scope: str, *, lock_wait: float, stop: asyncio.Event | None) -> None:
        """Take the scope's lock (waiting up to `lock_wait`), then name this run as its holder."""
        self._key = lock_key(scope)
        await acquire(
            self._try_lock_standing_by,
            self._holder,
            what=f"the journal {self.name} for {scope}",
            wait_s=lock_wait,
            stop=stop,
        )
        self._say_who_holds(scope)

    def close(self) -> None:
        self.conn.close()  # the session ends, and with it the advisory lock

    def lock_held(self) -> tuple[bool, float]:
        """Whether this session holds the run's lock, and when (monotonic) the query that
        answered started: after any commit queued ahead of it and any reconnect."""
        high, low = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF

        def ask() -> tuple[bool, float]:
            started = time.monotonic()
            row = self.conn.execute(_LOCK_HELD.encode(), (high, low)).fetchone()
            return bool(row and row[0]), started

        with self.lock:
            return self.on_session(ask)

    # A lost session. Called with `lock` held (or before the run starts).

    def _session_lost(self) -> bool:
        return self.conn.closed or self.conn.broken

    def on_session(self, work: Callable[[], T]) -> T:
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
        started = time.monotonic()
        attempts = self._new_session(started)
        try:
            self._retake_lock()
        except psycopg.Error as exc:
            raise LockLost(
                f"the journal {self.name} lost this run's session; the new one failed: {exc}"
            ) from None
        events.journal_reconnected(
            journal=self.name, attempts=attempts, seconds=round(time.monotonic() - started, 3)
        )

    def _new_session(self, started: float) -> int:
        """Replace the lost connection, with backoff, for up to JOURNAL_TIMEOUT; the attempts."""
        attempts, pause = 0, RECONNECT_FIRST_S
        with contextlib.suppress(Exception):
            self.conn.close()
        while True:
            time.sleep(pause)
            attempts += 1
            try:
                self.conn = psycopg.connect(self._conninfo, autocommit=True)
                return attempts
            except psycopg.Error as exc:
                if time.monotonic() - started >= self._timeout_s:
                    raise LockLost(
                        f"the journal {self.name} lost this run's session and could not"
                        f" reconnect within {self._timeout_s:g} s (journal_timeout): {exc}"
                    ) from None
                pause = min(2 * pause, RECONNECT_MAX_S)

    def _retake_lock(self) -> None:
        """On a new session: the lock again, and this run's own name still on it."""
        if not self._try_lock():
            raise LockLost(
                f"the journal {self.name} lost this run's session, and another run holds"
                f" its lock now ({self._holder()}): nothing more is sent"
            )
        if self._me is not None:
            named = self.conn.execute(_HOLDER_ROW, (self._key,)).fetchone()
            found = None if named is None else Holder(named[0], int(named[1]), named[2])
            if found != self._me:
                held_by = "nobody" if found is None else str(found)
                raise LockLost(
                    f"the journal {self.name} lost this run's session and another run"
                    f" ({held_by}) held its lock meanwhile: nothing more is sent"
                )
            self.conn.execute(_HOLDER_SESSION, (self._key,))

    def _try_lock_standing_by(self) -> bool:
        """`_try_lock` for a run waiting for the lock: a lost session (the database restarted)
        is replaced and the wait goes on."""
        try:
            return self._try_lock()
        except psycopg.Error:
            if not self._session_lost():
                raise
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
            self.conn = psycopg.connect(self._conninfo, autocommit=True)
        return False

    def _try_lock(self) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        return bool(row and row[0])

    def _holder(self) -> str:
        if self._session_lost():
            return UNNAMED
        try:
            row = self.conn.execute(_HOLDER_NOW, (self._key,)).fetchone()
        except psycopg.Error:
            if not self._session_lost():
                raise
            return UNNAMED
        if row is None:
            return UNNAMED
        return str(Holder(row[0], int(row[1]), row[2]))

    def _say_who_holds(self, scope: str) -> None:
        me = self._me = Holder.me()
        self.conn.execute(
            "INSERT INTO journal_holders (lock_key, scope, host, pid, since, backend_pid)"
            " VALUES (%s, %s, %s, %s, %s, pg_backend_pid()) ON CONFLICT (lock_key) DO UPDATE SET"
            " scope = EXCLUDED.scope, host = EXCLUDED.host, pid = EXCLUDED.pid,"
            " since = EXCLUDED.since, backend_pid = EXCLUDED.backend_pid",
            (self._key, scope, me.host, me.pid, me.since),
        )


def _conninfo(url: str, timeout_s: float) -> str:
    """The URL with the session's settings: every statement and every lock wait bounded."""
    bound = f"{max(1, int(timeout_s * 1000))}"
    return make_conninfo(
        url,
        **_CONNECT,
        connect_timeout=max(2, math.ceil(timeout_s)),
        options=f"-c statement_timeout={bound} -c lock_timeout={bound}",
    )
