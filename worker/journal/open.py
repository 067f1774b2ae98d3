"""Which journal a run uses, opened, checked and locked before any request is sent.

SQLite under STATE_DIR by default (nothing to install, one host); PostgreSQL when JOURNAL_URL
is set (several hosts on one timer). Either way the run holds the journal's lock for its whole
life, and a journal that is held, damaged or unreachable refuses the run (exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from worker.errors import JournalError, JournalRefused
from worker.inputs.secrets import Scrubber
from worker.inputs.settings import Settings
from worker.journal.keys import LOCK_SCOPE, job_key
from worker.journal.lock import FileLock, acquire
from worker.journal.sqlite import SqliteStore
from worker.journal.store import Journal
from worker.observe import events

SQLITE_FILE = "journal.sqlite3"
LOCK_FILE = "journal.lock"
# liquidator is installed from its checkout, not from a package index: say how to add the extra.
PG_DRIVER_HINT = (
    "install the PostgreSQL driver from the liquidator checkout: .venv/bin/pip install -e"
    " '.[postgres]' (or <venv>/bin/pip install '/path/to/liquidator[postgres]' for the"
    " virtual environment that runs it; liquidator is not on a package index)"
)


class HeldJournal:
    """The run's journal for the length of an `async with`: opened and locked on entry (None
    for a dry run, which sends nothing and takes no lock), closed, and the lock with it, on
    every path. Entry raises `JournalRefused` as `open_journal` does. A close that fails after
    the body ended normally does not raise: `close_error` says why, for the run to report."""

    def __init__(self, settings: Settings, stop: asyncio.Event, *, dry_run: bool) -> None:
        self._settings = settings
        self._stop = stop
        self._dry_run = dry_run
        self._journal: Journal | None = None
        self.close_error: str | None = None

    async def __aenter__(self) -> Journal | None:
        if not self._dry_run:
            self._journal = await open_journal(self._settings, self._stop)
        return self._journal

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        journal, self._journal = self._journal, None
        if journal is None:
            return
        if exc is not None:  # the body's error is the one to raise
            with contextlib.suppress(JournalError):
                journal.close()
            return
        try:
            journal.close()
        except JournalError as err:
            self.close_error = str(err)


async def open_journal(settings: Settings, stop: asyncio.Event | None = None) -> Journal:
    """The run's journal, locked for this run (waiting up to LOCK_WAIT for another, unless
    `stop` is set first)."""
    if settings.journal_url is not None:
        # psycopg loads only for a PostgreSQL journal: one host installs nothing more.
        try:
            from worker.journal.postgres import PgJournal
        except ImportError as exc:
            raise JournalRefused(
                f"journal_url needs the PostgreSQL driver ({exc}): {PG_DRIVER_HINT}"
            ) from None

        journal: Journal = await PgJournal.open(
            settings.journal_url.get_secret_value(),
            scope=LOCK_SCOPE,
            lock_wait=settings.lock_wait,
            timeout_s=settings.journal_timeout,
            stop=stop,
        )
    else:
        journal = await _open_sqlite(settings, stop)
    if settings.api_key is not None:
        journal.scrub_with(Scrubber.for_key(settings.api_key.get_secret_value()).text)
    try:
        # Runs recorded under a key that held the API's URL join their day's job.
        journal.rekey(job_key)
    except Exception as exc:
        journal.close()
        raise JournalRefused(f"the journal {journal.name} could not be read: {exc}") from None
    events.journal_opened(journal.name)
    return journal


async def _open_sqlite(settings: Settings, stop: asyncio.Event | None) -> Journal:
    directory = settings.journal_dir
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise JournalRefused(
            f"state_dir: cannot create the journal's directory {directory}: {exc.strerror}"
        ) from None
    path = directory / SQLITE_FILE
    lock = FileLock(directory / LOCK_FILE)
    try:
        await acquire(
            lock.try_acquire,
            lock.holder,
            what=f"the journal {path}",
            wait_s=settings.lock_wait,
            stop=stop,
        )
        journal = Journal(SqliteStore(path, release=lock.release))  # checked once the lock is ours
        journal.lock_taken()
        return journal
    except BaseException:
        lock.release()
        raise
