"""A run's entry in the journal, before its first close: today's job, the closes earlier runs
of it sent for this run's targets (after waiting out a run this one took over from), and this
run's start. A journal that fails here ends the run with nothing sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from worker.api.policy import RetryPolicy
from worker.errors import JournalError
from worker.inputs.settings import Settings
from worker.journal.earlier import closed_by_job
from worker.journal.keys import job_key
from worker.journal.store import Journal, Key, Prior
from worker.output import events
from worker.run.ended import Ended, aborted, unsent
from worker.run.plan import Plan
from worker.run.preflight import Ready

MARKET_TZ = ZoneInfo("America/New_York")  # a trading day is New York's


@dataclass(frozen=True)
class Journaled:
    """The run is in the journal under today's `job`; `priors`: earlier runs' closes, by target."""

    job: str
    priors: dict[tuple[int, str], Prior]


def trading_day_of(ready: Ready) -> str:
    """Today, as the market (New York) counts it, by the server's clock."""
    return ready.server_now().astimezone(MARKET_TZ).date().isoformat()


async def held_earlier(
    settings: Settings, journal: Journal | None, ready: Ready, run_id: str
) -> set[Key]:
    """The positions earlier runs of today's job sent a close for: held then, so a named
    instrument among them that is not held now is `already_flat`, not `not_held`. A dry run
    (no journal opened) reads the journal the run would use, read only. Raises
    `JournalError`."""
    job = job_key(trading_day_of(ready))
    if journal is None:
        return await asyncio.to_thread(closed_by_job, settings, job)
    return set(journal.priors(job, run_id))


async def start_run(
    settings: Settings,
    journal: Journal,
    run_id: str,
    started_at: datetime,
    ready: Ready,
    policy: RetryPolicy,
    plan: Plan,
) -> Journaled | Ended:
    """Today's job and the earlier runs' closes in it (after waiting out a run taken over
    from); this run's start recorded under it."""
    try:
        journal.use_clock(ready.server_now)  # SQLite's time for `run_clock`
        trading_day = trading_day_of(ready)
        job = job_key(trading_day)
        priors = journal.priors(job, run_id)
        touched = sum((t.account_id, t.instrument_id.lower()) in priors for t in plan.targets)
        if touched:
            settle_s = journal.settle_after_takeover(
                job, run_id, settings.request_timeout + settings.reconcile_delay
            )
            events.previous_run_found(job=job, positions_touched=touched, settle_s=settle_s)
            await policy.sleep(settle_s)
        journal.start_run(
            run_id=run_id,
            job=job,
            base_url=settings.base_url,
            trading_day=trading_day,
            started_at=started_at,
            dry_run=False,
        )
    except JournalError as err:  # nothing was sent
        return aborted(str(err), plan.settled + unsent(plan.targets, f"not sent: {err}"))
    return Journaled(job, priors)
