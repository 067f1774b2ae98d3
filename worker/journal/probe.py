"""`liquidator check`: would the run be able to open the journal it would use?

It looks at the same journal the run would open (the SQLite file under STATE_DIR, or JOURNAL_URL's
database), so a passing check is not followed by a run that refuses. It creates nothing, writes
nothing and takes no lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from worker.inputs.settings import Settings
from worker.journal.files import connect_read_only, wal_problem
from worker.journal.open import SQLITE_FILE
from worker.journal.schema import TABLES, schema_probes

_SQLITE_HEADER = b"SQLite format 3\x00"
_CONNECT_TIMEOUT_S = 10


def journal_problems(settings: Settings) -> tuple[str, list[str]]:
    """The journal's name and what would stop a run from using it (empty: nothing)."""
    if settings.journal_url is not None:
        return _postgres(settings.journal_url.get_secret_value())
    return _sqlite(settings.journal_dir)


def _sqlite(directory: Path) -> tuple[str, list[str]]:
    path = directory / SQLITE_FILE
    name = str(path)
    if directory.exists():
        if not directory.is_dir():
            return name, [f"state_dir {directory} is not a directory"]
        if not os.access(directory, os.W_OK | os.X_OK):
            return name, [f"state_dir {directory} is not writable"]
    else:
        nearest = directory.parent
        while not nearest.exists() and nearest != nearest.parent:
            nearest = nearest.parent
        if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
            return name, [f"state_dir {directory} does not exist and cannot be created"]
        return name, []  # the run creates it
    if not path.exists():
        return name, []
    try:
        with path.open("rb") as f:
            if f.read(16) not in (_SQLITE_HEADER, b""):
                return name, [f"{path}: not a SQLite database (its header is overwritten)"]
    except OSError as exc:
        return name, [f"{path}: cannot be read: {exc.strerror}"]
    wal = wal_problem(path)
    if wal is not None:
        return name, [wal]
    try:
        with contextlib.closing(connect_read_only(path)) as db:
            found = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.Error as exc:
        return name, [f"{path}: {exc}"]
    if found != ["ok"]:
        return name, [f"{path}: {problem}" for problem in found[:10]]
    return name, []


def _postgres(url: str) -> tuple[str, list[str]]:
    from worker.journal.pg_session import redact_url

    name = redact_url(url)
    try:
        import psycopg
    except ImportError as exc:
        return name, [f"journal_url needs the PostgreSQL driver ({exc})"]
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        return name, [f"journal_url: cannot connect to {name}: {exc}".strip()]
    problems: list[str] = []
    try:
        missing: list[str] = []
        for table, probe in zip(TABLES, schema_probes(), strict=True):
            try:
                conn.execute(probe.encode())
            except psycopg.errors.UndefinedTable:
                missing.append(table)
                continue
            except psycopg.Error as exc:
                problems.append(
                    f"the journal {name}: table {table} is not as this version writes it: {exc}"
                )
                continue
            row = conn.execute(
                "SELECT has_table_privilege(%s, 'SELECT, INSERT, UPDATE')", (table,)
            ).fetchone()
            if not (row and row[0]):
                problems.append(f"the journal {name}: no right to write table {table}")
        if missing:
            row = conn.execute("SELECT has_schema_privilege(current_schema(), 'CREATE')").fetchone()
            if not (row and row[0]):
                problems.append(
                    f"the journal {name}: tables {', '.join(missing)} are missing and this"
                    " user may not create them"
                )
    except psycopg.Error as exc:
        problems.append(f"the journal {name}: {exc}".strip())
    finally:
        conn.close()
    return name, problems
