"""The journal's events: opened, checked, pruned, its lock waited for and taken, a lost
PostgreSQL session replaced.
"""

from __future__ import annotations

from worker.observe.events import sink
from worker.observe.events.names import (
    JOURNAL_CHECKED,
    JOURNAL_OPENED,
    JOURNAL_PRUNE_FAILED,
    JOURNAL_PRUNED,
    JOURNAL_RECONNECTED,
    LOCK_ACQUIRED,
    LOCK_WAITING,
)

__all__ = [
    "journal_checked",
    "journal_opened",
    "journal_prune_failed",
    "journal_pruned",
    "journal_reconnected",
    "lock_acquired",
    "lock_waiting",
]


def journal_opened(journal: str) -> None:
    sink.log.info(JOURNAL_OPENED, journal=journal)


def journal_pruned(
    *, journal: str, before: str, jobs_pruned: int, jobs_kept: int, rows: int
) -> None:
    """Retention at the end of a run: the jobs of trading days before `before` deleted
    (`jobs_kept`: old ones kept, a run unfinished or an intent with no reply)."""
    sink.log.info(
        JOURNAL_PRUNED,
        journal=journal,
        before=before,
        jobs_pruned=jobs_pruned,
        jobs_kept=jobs_kept,
        rows=rows,
    )


def journal_prune_failed(*, journal: str, error: str) -> None:
    sink.log.warning(JOURNAL_PRUNE_FAILED, journal=journal, error=error)


def journal_checked(journal: str) -> None:
    """`check`: the journal the run would use is reachable and usable (read only, no lock)."""
    sink.log.info(JOURNAL_CHECKED, journal=journal)


def lock_waiting(*, journal: str, holder: str, wait_s: float) -> None:
    sink.log.warning(LOCK_WAITING, journal=journal, holder=holder, wait_s=wait_s)


def lock_acquired(*, journal: str, holder: str) -> None:
    sink.log.info(LOCK_ACQUIRED, journal=journal, holder=holder)


def journal_reconnected(*, journal: str, attempts: int, seconds: float) -> None:
    sink.log.warning(JOURNAL_RECONNECTED, journal=journal, attempts=attempts, seconds=seconds)
