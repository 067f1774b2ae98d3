"""Journal retention: the jobs of old trading days deleted, what a rerun and an audit need kept.

A job (one API, one trading day) is pruned whole, every row of every run of it, or not at all:
its runs, targets, intents, their replies, client ids, orders and clock. Only jobs of trading
days before `before` (today less JOURNAL_KEEP_DAYS, by the API server's clock at the end of a
run, New York's date for `liquidator journal prune`) are pruned, and of those never one whose
last run did not finish (killed, or still running) nor one whose last run has an intent with no
reply recorded: what became of that close is known only at the API, and an audit starts there.
A rerun only ever reads today's job, so no rerun needs what is pruned.

Each job goes in one transaction, child rows first: a prune cut short leaves whole jobs and no
row naming a run the journal has no record of (what `journal verify` checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from worker.journal.backend import Store

# The tables whose rows name a run; `runs` itself goes last.
CHILD_TABLES = ("targets", "attempt_results", "client_ids", "attempts", "orders", "run_clock")
RUNS_PER_STATEMENT = 500  # run ids per `IN (...)`: far under either backend's limit

_OLD_RUNS = "SELECT job, run_id, started_at, finished_at FROM runs WHERE trading_day < ?"
# Intents of old runs with no reply recorded: the process ended before one came.
_NO_REPLY = (
    "SELECT DISTINCT a.run_id FROM attempts a JOIN runs r ON r.run_id = a.run_id"
    " LEFT JOIN attempt_results x ON x.run_id = a.run_id AND x.account_id = a.account_id"
    " AND x.instrument_id = a.instrument_id AND x.attempt = a.attempt"
    " WHERE r.trading_day < ? AND x.run_id IS NULL"
)


@dataclass(slots=True)
class Pruned:
    before: str  # jobs of trading days before this one (YYYY-MM-DD) were looked at
    dry_run: bool
    jobs: list[str] = field(default_factory=list)  # pruned (or, in a dry run, to be)
    kept: dict[str, str] = field(default_factory=dict)  # old jobs kept, and why
    rows: dict[str, int] = field(default_factory=dict)  # rows deleted (or to be), by table

    def as_json(self) -> dict[str, object]:
        return {
            "before": self.before,
            "dry_run": self.dry_run,
            "jobs_pruned": self.jobs,
            "jobs_kept": [{"job": j, "why": w} for j, w in self.kept.items()],
            "rows": self.rows,
        }


def cutoff(today: date, keep_days: int) -> str:
    """The first trading day kept: `keep_days` days before `today` (today always kept)."""
    return (today - timedelta(days=max(0, keep_days))).isoformat()


def prune_jobs(store: Store, before: str, *, dry_run: bool) -> Pruned:
    """Delete (or, `dry_run`, count) the jobs of trading days before `before` that may go."""
    result = Pruned(before, dry_run)
    runs: dict[str, list[tuple[str, str, str | None]]] = {}
    for job, run_id, started_at, finished_at in store.read(_OLD_RUNS, (before,)):
        runs.setdefault(job, []).append((run_id, started_at, finished_at))
    no_reply = {run_id for (run_id,) in store.read(_NO_REPLY, (before,))}
    result.rows = dict.fromkeys((*CHILD_TABLES, "runs"), 0)
    for job, job_runs in sorted(runs.items()):
        last_id, _, last_finished = max(job_runs, key=lambda r: r[1])
        if last_finished is None:
            result.kept[job] = "its last run never finished (killed, or still running)"
            continue
        if last_id in no_reply:
            result.kept[job] = "its last run has an intent with no reply recorded"
            continue
        ids = [r[0] for r in job_runs]
        for table, count in _count(store, ids).items():
            result.rows[table] += count
        if not dry_run:
            _delete(store, ids)
        result.jobs.append(job)
    return result


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[n : n + RUNS_PER_STATEMENT] for n in range(0, len(ids), RUNS_PER_STATEMENT)]


def _count(store: Store, ids: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys((*CHILD_TABLES, "runs"), 0)
    for chunk in _chunks(ids):
        marks = ", ".join("?" * len(chunk))
        for table in counts:
            sql = f"SELECT COUNT(*) FROM {table} WHERE run_id IN ({marks})"
            counts[table] += int(store.read(sql, chunk)[0][0])
    return counts


def _delete(store: Store, ids: Sequence[str]) -> None:
    """One job's rows, in one transaction: its runs' child rows, then the runs."""
    batch = []
    for chunk in _chunks(ids):
        marks = ", ".join([store.mark] * len(chunk))
        for table in (*CHILD_TABLES, "runs"):
            batch.append((f"DELETE FROM {table} WHERE run_id IN ({marks})", [tuple(chunk)]))
    store.write(batch, ())
