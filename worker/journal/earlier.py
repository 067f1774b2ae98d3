"""What earlier runs of a job sent closes for, read without the lock and without writing.

A dry run and `check` open no journal, yet must tell a position today's job closed (it was held:
`already_flat`) from one the account never held (`not_held`) as the run would. This reads the
journal the run would use (SQLite under STATE_DIR, or JOURNAL_URL's database) read only. It
creates nothing: no journal yet, or one that cannot be read, is an empty answer (`check` reports
a journal the run would refuse on its own).
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from worker.inputs.settings import Settings
from worker.journal.files import connect_read_only, wal_problem
from worker.journal.open import SQLITE_FILE
from worker.journal.store import Key

_CLOSED = (
    "SELECT DISTINCT a.account_id, a.instrument_id FROM attempts a"
    " JOIN runs r ON r.run_id = a.run_id WHERE r.job = {mark}"
)
_CONNECT_TIMEOUT_S = 10


def closed_by_job(settings: Settings, job: str) -> set[Key]:
    """(account, instrument UUID in lower case) that runs of `job` sent a close for."""
    if settings.journal_url is not None:
        rows = _postgres(settings.journal_url.get_secret_value(), job)
    else:
        rows = _sqlite(settings, job)
    return {(int(account), str(instrument).lower()) for account, instrument in rows}


def _sqlite(settings: Settings, job: str) -> list[tuple[Any, ...]]:
    path = settings.journal_dir / SQLITE_FILE
    if not path.is_file() or wal_problem(path) is not None:
        return []
    try:
        with contextlib.closing(connect_read_only(path)) as db:
            return db.execute(_CLOSED.format(mark="?"), (job,)).fetchall()
    except sqlite3.Error:
        return []


def _postgres(url: str, job: str) -> list[tuple[Any, ...]]:
    try:
        import psycopg
    except ImportError:
        return []
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
            return list(conn.execute(_CLOSED.format(mark="%s").encode(), (job,)).fetchall())
    except psycopg.Error:
        return []
