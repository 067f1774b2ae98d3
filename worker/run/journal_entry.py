"""A run's entry in the journal: today's job and what earlier runs of it did (after waiting out a
run this one takes over from), read before the plan; then, before its first close, this run's
start. A journal that fails here ends the run with nothing sent."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from worker.api.policy import RetryPolicy
from worker.errors import JournalError
from worker.inputs.settings import Settings
from worker.journal.earlier import closed_by_job
from worker.journal.keys import job_key, trading_day
from worker.journal.store import Journal, Key, Prior
from worker.observe import events
from worker.run.ended import Ended, aborted, unsent
from worker.run.plan import Plan
from worker.run.preflight import Ready


@dataclass(frozen=True)
class Journaled:
    """Today's `job`; `priors`: earlier runs' closes, by position; `order_ids`: the ids of the
    orders they recorded, by position; `reported`: the positions one of them that ended with
    exit 0 reported flat (its report lists their orders)."""

    trading_day: str
    priors: dict[Key, Prior]
    order_ids: dict[Key, set[str]] = field(default_factory=dict)
    reported: set[Key] = field(default_factory=set)

    @property
    def job(self) -> str:
        return job_key(self.trading_day)


def trading_day_of(ready: Ready) -> str:
    """Today, as the market (New York) counts it, by the server's clock."""
    return trading_day(ready.server_now()).isoformat()


async def held_earlier(settings: Settings, journaled: Journaled | None, ready: Ready) -> set[Key]:
    """The positions earlier runs of today's job sent a close for: held then, so a named
    instrument among them that is not held now is `already_flat`, not `not_held`. A dry run
    (no journal opened) reads the journal the run would use, read only. Raises
    `JournalError`."""
    if journaled is not None:
        return set(journaled.priors)
    return await asyncio.to_thread(closed_by_job, settings, job_key(trading_day_of(ready)))


async def take_over(
    settings: Settings,
    journal: Journal,
    run_id: str,
    ready: Ready,
    policy: RetryPolicy,
    accounts: Collection[int],
) -> Journaled:
    """Today's job and what earlier runs of it sent on these accounts, once their requests can
    no longer land: a run taken over from may have closes in flight (or held at a gateway) for
    REQUEST_TIMEOUT + RECONCILE_DELAY after it died. Called before the plan, so the positions
    it reads already hold whatever those closes did. Raises `JournalError`; nothing was sent."""
    journal.use_clock(ready.server_now)  # SQLite's time for `run_clock`
    trading_day = trading_day_of(ready)
    job = job_key(trading_day)
    priors = journal.priors(job, run_id)
    touched = sum(account in accounts for account, _ in priors)
    if not touched:
        return Journaled(trading_day, priors)
    settle_s = journal.settle_after_takeover(
        job, run_id, settings.request_timeout + settings.reconcile_delay
    )
    events.previous_run_found(job=job, positions_touched=touched, settle_s=settle_s)
    await policy.sleep(settle_s)
    return Journaled(
        trading_day,
        priors,
        journal.prior_orders(job, run_id),
        journal.reported_flat(job, run_id),
    )


def start_run(
    settings: Settings,
    journal: Journal,
    run_id: str,
    started_at: datetime,
    journaled: Journaled,
    plan: Plan,
) -> Ended | None:
    """This run's start, recorded under the job; an `Ended` if the journal failed."""
    try:
        journal.start_run(
            run_id=run_id,
            job=journaled.job,
            base_url=settings.base_url,
            trading_day=journaled.trading_day,
            started_at=started_at,
            dry_run=False,
        )
    except JournalError as err:  # nothing was sent
        return aborted(str(err), plan.settled + unsent(plan.targets, f"not sent: {err}"))
    return None
