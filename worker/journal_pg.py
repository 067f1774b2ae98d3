"""The journal in PostgreSQL, so that two hosts on one timer flatten once.

The run's lock is a session advisory lock on the job's scope, taken on the one connection that
also commits every intent. The scope is the API's canonical origin without the trading date: two
hosts whose clocks straddle midnight in New York must still contend for one lock. While that
session lives no other host can take the lock; if the host dies (killed, or its database session
lost) PostgreSQL releases the lock and a standby waiting up to LOCK_WAIT takes over, looking up
first every position an intent names. A host that loses its connection cannot commit an intent,
and an intent that cannot commit is never sent; psycopg never reconnects on its own, so a commit
cannot land on a new session that does not hold the lock.

The group commit, the statements' shape and the reads are `worker.journal.Journal`'s; this
module supplies the store underneath. PostgreSQL's default `synchronous_commit=on` makes each
commit durable before it returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from worker.errors import JournalRefused, LockLost
from worker.journal import LOCK_FRESH_S, Journal
from worker.journal_lock import UNNAMED, Holder, acquire
from worker.journal_schema import SCHEMA, TABLES, schema_probes, split_intents

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
    "connect_timeout": 10,
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


class PgJournal(Journal):
    """The journal on one PostgreSQL session that holds the run's advisory lock."""

    _mark = "%s"

    def __init__(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        name: str,
        key: int,
        *,
        timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self._conn = conn
        self._key = key
        self._timeout_s = timeout_s
        # The lock check in progress (when it was asked for, and its answer): every send that
        # arrives while it runs shares it, so a busy fan-out costs one query per round trip.
        self._check: tuple[float, asyncio.Future[bool]] | None = None
        self._init_group_commit(None)

    async def still_locked(self) -> None:
        """Ask the database whether this session still holds the run's advisory lock.

        A session that ended (terminated, the server restarted, the network gone) has lost it,
        and a standby may hold it now: nothing more may be sent. An answer older than
        LOCK_FRESH_S when the send would go out (this host was paused meanwhile) is asked again.
        """
        await super().still_locked()
        loop = asyncio.get_running_loop()
        while True:
            if self._check is None or self._check[1].done():
                check = loop.run_in_executor(self._thread, self._lock_held)
                check.add_done_callback(lambda c: c.cancelled() or c.exception())
                self._check = (time.monotonic(), check)
            asked_at, check = self._check
            try:
                held = await asyncio.wait_for(asyncio.shield(check), self._timeout_s)
            except TimeoutError:
                raise LockLost(
                    f"the journal {self.name} did not confirm this run's lock within"
                    f" {self._timeout_s:g} s (journal_timeout): nothing more is sent"
                ) from None
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
            if time.monotonic() - asked_at <= LOCK_FRESH_S:
                return

    def _since_last_write(self, job: str, current_run: str) -> float | None:
        with self._store_lock:
            row = self._conn.execute(_SINCE_LAST_WRITE, (job, current_run)).fetchone()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    def _lock_held(self) -> bool:
        high, low = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF
        with self._store_lock:
            row = self._conn.execute(_LOCK_HELD.encode(), (high, low)).fetchone()
        return bool(row and row[0])

    @classmethod
    async def open(
        cls, url: str, *, scope: str, lock_wait: float, stop: asyncio.Event | None = None
    ) -> PgJournal:
        name = redact_url(url)
        try:
            conn = psycopg.connect(make_conninfo(url, **_CONNECT), autocommit=True)
        except psycopg.Error as exc:
            raise JournalRefused(f"journal_url: cannot connect to {name}: {exc}") from None
        journal = cls(conn, name, lock_key(scope))
        try:
            journal._create_schema()
            await acquire(
                journal._try_lock,
                journal._holder,
                what=f"the journal {name} for {scope}",
                wait_s=lock_wait,
                stop=stop,
            )
            journal._say_who_holds(scope)
            journal.lock_taken()
        except psycopg.Error as exc:
            conn.close()
            raise JournalRefused(f"the journal {name} could not be opened: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return journal

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
        row = self._conn.execute(_HOLDER_NOW, (self._key,)).fetchone()
        if row is None:
            return UNNAMED
        return str(Holder(row[0], int(row[1]), row[2]))

    def _say_who_holds(self, scope: str) -> None:
        me = Holder.me()
        self._conn.execute(
            "INSERT INTO journal_holders (lock_key, scope, host, pid, since, backend_pid)"
            " VALUES (%s, %s, %s, %s, %s, pg_backend_pid()) ON CONFLICT (lock_key) DO UPDATE SET"
            " scope = EXCLUDED.scope, host = EXCLUDED.host, pid = EXCLUDED.pid,"
            " since = EXCLUDED.since, backend_pid = EXCLUDED.backend_pid",
            (self._key, scope, me.host, me.pid, me.since),
        )

    # The store. Called with _store_lock held (see Journal).

    def _upsert(self, table: str) -> str:
        keys, others = TABLES[table]
        columns = ", ".join(keys + others)
        marks = ", ".join(["%s"] * len(keys + others))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in others)
        return (
            f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        )

    def _write(
        self, intents: Sequence[Sequence[Any]], records: dict[str, list[Sequence[Any]]]
    ) -> None:
        with self._conn.transaction(), self._conn.cursor() as cur:
            if intents:
                attempts, client_ids = split_intents(intents)
                cur.executemany(self._statements["attempts"].encode(), attempts)
                if client_ids:
                    cur.executemany(self._statements["client_ids"].encode(), client_ids)
            for sql, rows in records.items():
                cur.executemany(sql.encode(), rows)
            for run_id in self._writers(intents, records):
                cur.execute(_CLOCK_NOW, (run_id,))

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn.execute(_pg(sql), params).fetchall()

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        with self._conn.transaction():
            self._conn.execute(_pg(sql), params)

    def _disconnect(self) -> None:
        self._conn.close()  # the session ends, and with it the advisory lock


def _pg(sql: str) -> bytes:
    """The journal's statements use SQLite's `?`; psycopg wants `%s`."""
    return sql.replace("?", "%s").encode()
