"""A run's lifetimes around its stages: the journal held (opened, checked and locked before any
request; closed, and the lock with it, on every path) and the HTTP session open, with the pacer
and the retry policy every request shares."""

from __future__ import annotations

import asyncio
import contextlib

from worker.api.client import TradingApi, open_session
from worker.api.pace import Pacer
from worker.api.policy import RetryPolicy
from worker.api.reads import Reader
from worker.errors import JournalRefused, Unauthorized
from worker.inputs.settings import Settings
from worker.journal.open import HeldJournal
from worker.journal.probe import journal_problems
from worker.journal.store import Journal
from worker.observe import events
from worker.run.ended import Ended, aborted
from worker.run.scope import RunScope, Started
from worker.run.stages import stages
from worker.run.stops import stop_aware_sleep


async def journaled(started: Started) -> Ended:
    """Every stage, the journal held: a dry run sends nothing and takes no lock; `check` looks
    at the journal the run would open first."""
    settings, request, stop = started.settings, started.request, started.stop
    if request.probe_journal:
        name, problems = await asyncio.to_thread(journal_problems, settings)
        if problems:  # the run would refuse (exit 2): so does the check
            return aborted(
                f"the journal would refuse the run: {'; '.join(problems)}", [], refused=True
            )
        events.journal_checked(name)
    held = HeldJournal(settings, stop, dry_run=request.dry_run)
    async with contextlib.AsyncExitStack() as stack:
        try:
            journal = await stack.enter_async_context(held)
        except JournalRefused as err:  # a stop while waiting for the lock is an abort
            return aborted(str(err), [], refused=not stop.is_set())
        ended = await _session(started, journal)
    if held.close_error is not None:
        ended = ended.unless_aborted(held.close_error)
    return ended


async def _session(started: Started, journal: Journal | None) -> Ended:
    settings, stop = started.settings, started.stop
    assert settings.api_key is not None, "the CLI refuses to run without a key"
    policy = retry_policy(settings, stop)
    pacer = Pacer(
        settings.concurrency,
        settings.rate_limit,
        on_change=events.pace_changed,
        retry_after_cap_s=policy.retry_after_cap_s,
        stop=stop,  # ends a Retry-After hold: the last reads find out what the closes did
    )
    key = settings.api_key.get_secret_value()
    async with open_session(settings.concurrency, settings.request_timeout, key) as session:
        # No request that changes anything goes out unless the run still holds the journal's lock.
        lock_check = journal.still_locked if journal is not None else None
        api = TradingApi(session, settings.base_url, pacer, before_send=lock_check)
        reader = Reader(api, policy, counters=started.counters)
        try:
            return await stages(RunScope.of(started, api, reader, policy), journal)
        except Unauthorized as err:
            return aborted(f"credentials rejected: {err}", [])


def retry_policy(settings: Settings, stop: asyncio.Event) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_initial_s=settings.retry_backoff,
        backoff_max_s=settings.retry_backoff_max,
        settle_s=settings.reconcile_delay,
        sleep=stop_aware_sleep(stop),
    )
