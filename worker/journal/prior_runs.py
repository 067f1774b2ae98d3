"""What earlier runs of the job recorded, read as a run opens the journal (under its lock):
the positions they sent closes for, their client id generations and orders, what they reported
flat, which of them never finished; and the job key every run is filed under (`rekey`).

Reads only, but for `rekey`; a journal that cannot be read is a `JournalError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.errors import JournalError
from worker.journal.backend import Store

Key = tuple[int, str]  # (account_id, instrument_id)

_PRIORS = (
    "SELECT a.account_id, a.instrument_id, MIN(a.since) FROM attempts a"
    " JOIN runs r ON r.run_id = a.run_id WHERE r.job = ? AND r.run_id != ?"
    " GROUP BY a.account_id, a.instrument_id"
)
# submit_orders: the highest client id generation earlier runs of the job recorded per position.
_GENERATIONS = (
    "SELECT c.account_id, c.instrument_id, MAX(c.generation) FROM client_ids c"
    " JOIN runs r ON r.run_id = c.run_id WHERE r.job = ? AND r.run_id != ?"
    " GROUP BY c.account_id, c.instrument_id"
)
# The orders earlier runs of the job recorded (by id), per position: a rerun reports them.
_PRIOR_ORDERS = (
    "SELECT o.account_id, o.instrument_id, o.order_id FROM orders o"
    " JOIN runs r ON r.run_id = o.run_id WHERE r.job = ? AND r.run_id != ?"
)
# Positions an earlier run of the job reported flat and that run finished the job (exit 0): its
# report tells their orders' story. (A run killed, stopped or cut off from the journal did not
# finish the job: the run that does reports its orders.)
_REPORTED_FLAT = (
    "SELECT t.account_id, t.instrument_id FROM targets t JOIN runs r ON r.run_id = t.run_id"
    " WHERE r.job = ? AND r.run_id != ? AND r.exit_code = 0"
    " AND t.outcome IN ('closed', 'already_flat') AND t.instrument_id IS NOT NULL"
)
_UNFINISHED = "SELECT run_id FROM runs WHERE job = ? AND run_id != ? AND finished_at IS NULL"
_JOBS = "SELECT DISTINCT job, trading_day FROM runs"
_REKEY = "UPDATE runs SET job = ? WHERE job = ? AND trading_day = ?"


@dataclass(frozen=True, slots=True)
class Prior:
    """Earlier runs of the same job sent a close for this position.

    The resume look searches the position's orders from `since`, which covers every order those
    runs recorded (and any whose reply they never saw).
    """

    since: datetime  # the earliest moment their closing orders could carry
    # submit_orders: the highest generation whose client id they recorded before sending; a
    # rerun sends that id again (409: found). None: they sent through close_position.
    generation: int | None = None


def priors(store: Store, job: str, current_run: str) -> dict[Key, Prior]:
    """Positions that earlier runs of this job sent (or were about to send) a close for."""
    rows = _read(store, _PRIORS, (job, current_run))
    generations: dict[Key, int] = {}
    for a, i, g in _read(store, _GENERATIONS, (job, current_run)):
        key = (int(a), i.lower())
        generations[key] = max(int(g), generations.get(key, int(g)))
    # Keyed in lower case (UUIDs are case-insensitive): an earlier run's listing may have
    # spelled them otherwise. Of two spellings, the earlier attempt's start counts.
    found: dict[Key, Prior] = {}
    for account_id, instrument_id, since in rows:
        key = (int(account_id), instrument_id.lower())
        prior = Prior(datetime.fromisoformat(since), generations.get(key))
        if key not in found or prior.since < found[key].since:
            found[key] = prior
    return found


def prior_orders(store: Store, job: str, current_run: str) -> dict[Key, set[str]]:
    """The ids of the orders earlier runs of this job recorded, by position (lower case)."""
    found: dict[Key, set[str]] = {}
    for account_id, instrument_id, order_id in _read(store, _PRIOR_ORDERS, (job, current_run)):
        found.setdefault((int(account_id), instrument_id.lower()), set()).add(order_id)
    return found


def reported_flat(store: Store, job: str, current_run: str) -> set[Key]:
    """The positions an earlier run of this job reported `closed` or `already_flat` in a run
    that finished with exit 0."""
    return {(int(a), i.lower()) for a, i in _read(store, _REPORTED_FLAT, (job, current_run))}


def unfinished(store: Store, job: str, current_run: str) -> list[tuple[Any, ...]]:
    """The earlier runs of this job that never recorded their end."""
    return _read(store, _UNFINISHED, (job, current_run))


def rekey(store: Store, job_of: Callable[[str], str]) -> int:
    """Give every run the job key `job_of(trading_day)` names; how many keys changed."""
    changed = 0
    for job, day in store.read(_JOBS, ()):
        if job != job_of(day):
            store.execute(_REKEY, (job_of(day), job, day))
            changed += 1
    return changed


def _read(store: Store, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    try:
        return store.read(sql, params)
    except Exception as exc:
        raise JournalError(f"the journal {store.name} could not be read: {exc}") from None
