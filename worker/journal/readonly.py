"""The journal opened to read only, lock-free, on either backend: what `liquidator journal`,
`status` and `cancel` read while a run may hold the journal's lock."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from worker.errors import InputError
from worker.inputs.settings import Settings
from worker.journal.files import connect_read_only
from worker.journal.open import PG_DRIVER_HINT, SQLITE_FILE


class ReadOnlyJournal:
    """Read-only queries in SQLite's `?` style, on either backend."""

    def __init__(self, settings: Settings) -> None:
        self._pg: Any = None
        self._db: sqlite3.Connection | None = None
        if settings.journal_url is not None:
            try:
                import psycopg
            except ImportError as exc:
                raise InputError(
                    f"journal_url needs the PostgreSQL driver ({exc}): {PG_DRIVER_HINT}"
                ) from None

            from worker.journal.pg_session import redact_url

            url = settings.journal_url.get_secret_value()
            self.name = redact_url(url)
            self._pg = psycopg.connect(url, autocommit=True, connect_timeout=10)
        else:
            self.path = settings.journal_dir / SQLITE_FILE
            self.name = str(self.path)

    def open_sqlite(self) -> None:
        self._db = connect_read_only(self.path)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return list(self._pg.execute(sql.replace("?", "%s").encode(), params).fetchall())
        assert self._db is not None
        return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        if self._db is not None:
            self._db.close()

    def has_client_ids(self) -> bool:
        """False for a journal written before client ids existed: sound, and the next run that
        opens it adds their table (the schema is created if missing at every open)."""
        if self._pg is not None:
            return bool(self.rows("SELECT to_regclass('client_ids') IS NOT NULL")[0][0])
        found = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'client_ids'"
        return bool(self.rows(found))
