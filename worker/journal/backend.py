"""What the journal asks of the database it keeps its rows in: the `Store` Protocol, implemented by
`worker.journal.sqlite.SqliteStore` and `worker.journal.postgres.PgStore`.

A store runs the statements it is given, stamps the journal's clock and holds the run's lock; it
never decides what is written or when (the `Journal` and its group commit do).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from datetime import datetime
from typing import Any, Protocol

Row = Sequence[Any]
# Statements with their rows, in the order they run: one transaction.
Batch = Sequence[tuple[str, Sequence[Row]]]

# A lock check is good for a send that goes out this soon after the check was asked for; a host
# paused in between (SIGSTOP, a VM stopped) asks again when it resumes. A run that takes over
# adds it to the wait for the requests a lost host may still have had in flight.
LOCK_FRESH_S = 0.25


class Store(Protocol):
    """An open, checked journal database whose lock this run holds (one run per journal)."""

    name: str  # how messages name it (a URL without its password)
    mark: str  # the parameter mark its statements use

    def upsert(self, table: str) -> str:
        """The statement that inserts or replaces one row of `table` (`worker.journal.schema`)."""
        ...

    def write(self, batch: Batch, stamped: Collection[str]) -> None:
        """Run `batch` in one transaction, moving `run_clock` on for the runs in `stamped` in
        the journal's time; durable once it returns. Raises if any statement fails."""
        ...

    def read(self, sql: str, params: Row) -> list[tuple[Any, ...]]:
        """The rows of one query, written with `?` marks."""
        ...

    def execute(self, sql: str, params: Row) -> None:
        """One statement, written with `?` marks, in a transaction of its own."""
        ...

    def use_clock(self, now: Callable[[], datetime]) -> None:
        """The time to stamp `run_clock` with, for a store without a clock of its own."""
        ...

    def since_last_write(self, job: str, current_run: str) -> float | None:
        """Seconds since earlier runs of `job` last wrote, in the journal's time; None when
        none did."""
        ...

    async def still_locked(self, thread: Executor) -> None:
        """Return if this run still holds the lock, raise `LockLost` otherwise; `thread` is the
        journal's commit thread, where any query to ask it runs."""
        ...

    def close(self) -> None:
        """End the connection and, with it, this run's lock."""
        ...
