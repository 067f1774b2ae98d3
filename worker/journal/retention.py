"""The retention the service applies: at the end of every run that ended 0, while it still holds
the journal's lock, the jobs older than JOURNAL_KEEP_DAYS are pruned (`worker.journal.prune`).

There rather than in the unit's ExecStartPost: the run already holds the lock (no second
process to race a run or be refused by one), it works wherever the worker runs (a timer, cron,
by hand; SQLite or PostgreSQL), and "today" is the API server's date, not this host's clock.
Only after a run that ended 0, so a failed day's runs are never what a prune reaches for first.
A prune that fails is an event and nothing more: it never changes a run's exit code.
"""

from __future__ import annotations

from datetime import date

from worker.journal.prune import cutoff
from worker.journal.store import Journal
from worker.observe import events


def retain(journal: Journal, keep_days: int | None, today: date) -> None:
    """Prune what is older than `keep_days` (None: retention off)."""
    if keep_days is None:
        return
    try:
        pruned = journal.prune(cutoff(today, keep_days))
    except Exception as exc:
        events.journal_prune_failed(journal=journal.name, error=f"{type(exc).__name__}: {exc}")
        return
    if pruned.jobs or pruned.kept:
        events.journal_pruned(
            journal=journal.name,
            before=pruned.before,
            jobs_pruned=len(pruned.jobs),
            jobs_kept=len(pruned.kept),
            rows=sum(pruned.rows.values()),
        )
