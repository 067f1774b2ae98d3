"""A run's entry in the journal, before its first close: today's job, the closes earlier runs
of it sent for this run's targets (after waiting out a run this one took over from), and this
run's start. A journal that fails here ends the run with nothing sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from worker.api.policy import RetryPolicy
from worker.errors import JournalError
from worker.inputs.settings import Settings
from worker.journal.keys import job_key
from worker.journal.store import Journal, Prior
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
        trading_day = ready.server_now().astimezone(MARKET_TZ).date().isoformat()
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
