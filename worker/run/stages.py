"""A run's stages, in order, once its session is open: preflight, the job taken over, the plan
(`worker.run.plan_stage`), the operator's yes, the run started in the journal, then the closes
(`worker.run.close_stage`) and the run's end in the journal (`worker.run.bookkeeping`). Each
stage returns its value or how the run ended (`Ended`)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from worker.closing.send import CloseContext
from worker.errors import JournalError, Unauthorized
from worker.journal.keys import trading_day
from worker.journal.store import Journal
from worker.observe import events
from worker.run.bookkeeping import Bookkeeper, close_the_books
from worker.run.close_stage import CloseOptions, choose_sender, close_and_follow
from worker.run.ended import Ended, aborted, unplanned, unsent
from worker.run.journal_entry import Journaled, start_run, take_over
from worker.run.plan import Plan
from worker.run.plan_stage import plan_stage
from worker.run.preflight import Ready, preflight
from worker.run.scope import RunScope
from worker.run.snapshot import Snapshot, orders_snapshot
from worker.run.stops import unless_stopped, until_stopped
from worker.run.takeover import TakenOver


async def stages(run: RunScope, journal: Journal | None) -> Ended:
    """Each stage may end the run (an `Ended`) before the next."""
    request = run.request
    ready = await preflight(run)
    if isinstance(ready, Ended):
        return ready
    journaled: Journaled | None = None
    if journal is not None:
        job = await _take_over(run, journal, ready)
        if isinstance(job, Ended):
            return job
        journaled = job
    planned = await plan_stage(run, ready, journaled)
    if isinstance(planned, Ended):
        return planned
    plan, taken = planned
    if request.dry_run:
        return Ended(plan.settled + unsent(plan.targets, "dry run: nothing sent"))
    declined = await _confirm(run, plan)
    if declined is not None:
        return declined
    assert journal is not None, "every run that sends opens the journal first"
    assert journaled is not None, "and reads its job in it before the plan"
    refused = _start(run, journal, journaled, taken, plan)
    if refused is not None:
        return refused
    books = Bookkeeper(journal, run.run_id, request.watcher, run.stop)
    return await _send(run, books, journaled, taken, plan, ready)


async def _take_over(run: RunScope, journal: Journal, ready: Ready) -> Journaled | Ended:
    """Earlier runs of today's job waited out first: the plan reads what they did."""
    accounts = {s.account_id for s in run.request.specs}
    try:
        return await take_over(run.settings, journal, run.run_id, ready, run.policy, accounts)
    except JournalError as err:
        return aborted(str(err), unplanned(run.request.specs, f"not sent: {err}"))


async def _confirm(run: RunScope, plan: Plan) -> Ended | None:
    """None: go on and send. Otherwise the run ends here, nothing sent."""
    request, stop = run.request, run.stop
    if request.confirm and not await unless_stopped(request.watcher.confirm(plan), stop):
        results = plan.settled + unsent(plan.targets, "not confirmed by the operator")
        if stop.is_set():
            return aborted("stop requested", results)
        events.run_aborted("the operator declined", declined=True)
        return Ended(results, "the operator declined")
    if stop.is_set():
        results = plan.settled + unsent(plan.targets, "run stopped before any close")
        return aborted("stop requested", results)
    return None


def _start(
    run: RunScope, journal: Journal, journaled: Journaled, taken: TakenOver, plan: Plan
) -> Ended | None:
    """The run recorded as started (or refused), and what earlier runs closed as this one's."""
    refused = start_run(run.settings, journal, run.run_id, run.started_at, journaled, plan)
    if refused is not None:
        return refused
    # Closed by an earlier run, reported by this one. (A journal that fails here fails
    # the next commit too, which reports it.)
    with contextlib.suppress(JournalError):
        for settled in taken.settled:
            journal.outcome(run.run_id, settled, settled.quantity)
    return None


async def _send(
    run: RunScope,
    books: Bookkeeper,
    journaled: Journaled,
    taken: TakenOver,
    plan: Plan,
    ready: Ready,
) -> Ended:
    """The accounts' orders read, the sender chosen, then the closes fanned out and followed."""
    settings = run.settings
    lookback = timedelta(seconds=settings.reconcile_lookback)
    since = ready.server_now() - lookback
    try:
        # Evidence for close_position (submit_orders knows its orders by client id), and
        # in both modes the orders of others that can still fill, counted before a close
        # is sized. Cut short by a stop: nothing is sent then, so none is needed.
        snapshot = await until_stopped(orders_snapshot(run.reader, plan.targets, since), run.stop)
    except Unauthorized as err:
        why = f"credentials rejected: {err}"
        return aborted(why, plan.settled + unsent(plan.targets, f"not sent: {why}"))
    snapshot = snapshot or Snapshot(since)
    sender = choose_sender(run, journaled.job, journaled.priors, snapshot)
    for target in taken.at_market(plan.targets):
        sender.at_market(target)  # its limit was sent by an earlier run: the rest
    ctx = CloseContext(
        run_id=run.run_id,
        reader=run.reader,
        policy=run.policy,
        journal=books.journal,
        stopping=run.stop,
        server_now=ready.server_now,
        lookback=lookback,
        priors=journaled.priors,
        sender=sender,
        working_before=snapshot.working_before,
        read_accounts=frozenset(snapshot.preexisting),
        counters=run.counters,
        earlier_orders={k: (e.orders, e.request_id) for k, e in taken.earlier.items()},
    )
    run.counters.closing_since = run.request.wall_clock()
    return await _close(run, ctx, books, plan, ready, since)


async def _close(
    run: RunScope, ctx: CloseContext, books: Bookkeeper, plan: Plan, ready: Ready, since: datetime
) -> Ended:
    """Fan out and follow, each target's outcome recorded as it settles, then the run's end.
    `since`: the run's start by the server's clock, less RECONCILE_LOOKBACK."""
    cutoff = ready.cutoff
    options = CloseOptions(
        since=since,
        extra_s=ready.until_close_s(),
        close_at=None if cutoff is None else cutoff.regular_close,
        moc_cutoff=None if cutoff is None else cutoff.cutoff,
    )
    try:
        await ctx.sender.before_fan_out(plan.targets, ctx.stopping)
        closed = await close_and_follow(ctx, run.settings, plan.targets, options, books, run.api)
    except JournalError as err:  # before any close (the fan-out stops on one itself)
        return aborted(str(err), plan.settled + unsent(plan.targets, f"not sent: {err}"))
    ended = Ended(plan.settled + closed.results, closed.aborted)
    today = trading_day(ready.server_now())
    finished_at = run.request.wall_clock()
    return close_the_books(
        books, run.settings, ended, closed.results, finished_at=finished_at, today=today
    )
