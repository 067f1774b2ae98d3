"""One run, as its stages: preflight, plan, confirm, journal, fan-out and follow
(`run.close_stage`), finish. Each stage returns its value or how the run ended
(`worker.run.ended.Ended`).

The orchestrator owns the pacer, the stop event and the run's counters; a stop request is an
event, never an exception thrown into a stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from worker.api.client import TradingApi, open_session
from worker.api.pace import Pacer
from worker.api.policy import RetryPolicy, Sleep
from worker.api.reads import Reader
from worker.closing.schedule import StyleCost, plan_costs
from worker.closing.send import CloseContext
from worker.closing.stop import CutOff, before
from worker.closing.waves import waves_cost
from worker.errors import InputError, JournalError, JournalRefused, Unauthorized
from worker.inputs.settings import Settings
from worker.inputs.targets import TargetSpec
from worker.journal.keys import trading_day
from worker.journal.open import HeldJournal
from worker.journal.probe import journal_problems
from worker.journal.retention import retain
from worker.journal.store import Journal
from worker.observe import events
from worker.observe.counters import RunCounters
from worker.output.exit_codes import ExitCode as ExitCode  # re-exported; its home is exit_codes
from worker.output.exit_codes import exit_code
from worker.output.metrics import unwritable as metrics_unwritable
from worker.results import Outcome, TargetResult
from worker.run.close_stage import (
    CloseOptions,
    choose_sender,
    close_and_follow,
    collar_of,
    orders_snapshot,
    waves_of,
)
from worker.run.ended import Ended, aborted, unplanned, unsent
from worker.run.ended import RunResult as RunResult  # re-exported: what `run` returns
from worker.run.finish import finish
from worker.run.journal_entry import Journaled, held_earlier, start_run, take_over
from worker.run.multipliers import read_multipliers, with_multipliers
from worker.run.plan import Plan, make_plan
from worker.run.preflight import Ready, preflight
from worker.run.prices import apply_guards, guards_of, priced, read_quotes
from worker.run.takeover import TakenOver, take_over_plan

T = TypeVar("T")


@dataclass
class RunRequest:
    specs: list[TargetSpec]
    dry_run: bool = False
    report_path: Path | None = None
    # Asked with the plan before any close is sent; False ends the run with nothing sent.
    confirm: Callable[[Plan], Awaitable[bool]] | None = None
    max_positions_override: bool = False  # --force: also overrides the price guards
    on_plan: Callable[[Plan], None] | None = None
    on_result: Callable[[TargetResult], None] | None = None
    # --at-close, once every close is sent: (orders resting, today's close, seconds until it)
    on_waiting: Callable[[int, datetime, float], None] | None = None
    before_close: timedelta | None = None  # wait for today's close minus this, or skip
    # The local wall clock: what the journal and the report are stamped with, and nothing
    # else. Windows and evidence run on the server's time and the monotonic clock (a test
    # steps this one to prove it).
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # `check`: a dry run that also looks at the journal the run would open (read only, no lock)
    probe_journal: bool = False


def stop_aware_sleep(stop: asyncio.Event) -> Sleep:
    """A retry wait that ends early when a stop is requested."""

    async def sleep(seconds: float) -> None:
        if seconds > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    return sleep


async def run(settings: Settings, request: RunRequest, stop: asyncio.Event) -> RunResult:
    run_id, started_at = uuid.uuid4().hex, request.wall_clock()
    events.bind_run(run_id)
    events.run_started(
        base_url=settings.base_url,
        dry_run=request.dry_run,
        concurrency=settings.concurrency,
        rate_limit=settings.rate_limit,
    )
    if settings.metrics_file is not None and not request.dry_run:
        why = metrics_unwritable(settings.metrics_file)
        if why is not None:  # a warning only: observability never stops a flatten
            events.metrics_unavailable(path=str(settings.metrics_file), error=why)
    counters = RunCounters()  # the run's own: bumped where things happen, read here
    ended = await _journaled(settings, request, stop, run_id, started_at, counters)
    return finish(
        settings,
        run_id,
        started_at,
        ended,
        counters,
        specs=request.specs,
        report_path=request.report_path,
        dry_run=request.dry_run,
    )


async def _journaled(
    settings: Settings,
    request: RunRequest,
    stop: asyncio.Event,
    run_id: str,
    started_at: datetime,
    counters: RunCounters,
) -> Ended:
    """Every stage, the journal held: opened, checked and locked before any request (a dry run
    sends nothing and takes no lock), closed, and the lock with it, on every path."""
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
        ended = await _session(settings, request, stop, run_id, started_at, counters, journal)
    if held.close_error is not None:
        ended = ended.unless_aborted(held.close_error)
    return ended


@dataclass(frozen=True, slots=True)
class _Run:
    """What every step of a session shares: the run's identity, its stop, its connection."""

    settings: Settings
    request: RunRequest
    stop: asyncio.Event
    run_id: str
    started_at: datetime
    counters: RunCounters
    api: TradingApi
    reader: Reader
    policy: RetryPolicy


async def _session(
    settings: Settings,
    request: RunRequest,
    stop: asyncio.Event,
    run_id: str,
    started_at: datetime,
    counters: RunCounters,
    journal: Journal | None,
) -> Ended:
    assert settings.api_key is not None, "the CLI refuses to run without a key"
    policy = _retry_policy(settings, stop)
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
        reader = Reader(api, policy, counters=counters)
        run = _Run(settings, request, stop, run_id, started_at, counters, api, reader, policy)
        try:
            return await _stages(run, journal)
        except Unauthorized as err:
            return aborted(f"credentials rejected: {err}", [])


def _retry_policy(settings: Settings, stop: asyncio.Event) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_initial_s=settings.retry_backoff,
        backoff_max_s=settings.retry_backoff_max,
        settle_s=settings.reconcile_delay,
        sleep=stop_aware_sleep(stop),
    )


async def _stages(run: _Run, journal: Journal | None) -> Ended:
    """Preflight, the job taken over, the plan, the operator's yes, then the closes: each stage
    may end the run (an `Ended`) before the next."""
    request = run.request
    ready = await preflight(
        run.api,
        run.reader,
        run.policy,
        run.settings,
        specs=request.specs,
        before_close=request.before_close,
        dry_run=request.dry_run,
        stop=run.stop,
    )
    if isinstance(ready, Ended):
        return ready
    journaled: Journaled | None = None
    if journal is not None:
        job = await _take_over(run, journal, ready)
        if isinstance(job, Ended):
            return job
        journaled = job
    planned = await _plan(run.settings, request, run.reader, ready, run.stop, run.api, journaled)
    if isinstance(planned, Ended):
        return planned
    plan, taken = planned
    if request.dry_run:
        return Ended(plan.settled + unsent(plan.targets, "dry run: nothing sent"))
    declined = await _confirm(request, plan, run.stop)
    if declined is not None:
        return declined
    assert journal is not None, "every run that sends opens the journal first"
    assert journaled is not None, "and reads its job in it before the plan"
    refused = _start(run, journal, journaled, taken, plan)
    if refused is not None:
        return refused
    return await _send(run, journal, journaled, taken, plan, ready)


async def _take_over(run: _Run, journal: Journal, ready: Ready) -> Journaled | Ended:
    """Earlier runs of today's job waited out first: the plan reads what they did."""
    accounts = {s.account_id for s in run.request.specs}
    try:
        return await take_over(run.settings, journal, run.run_id, ready, run.policy, accounts)
    except JournalError as err:
        return aborted(str(err), unplanned(run.request.specs, f"not sent: {err}"))


def _start(
    run: _Run, journal: Journal, journaled: Journaled, taken: TakenOver, plan: Plan
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
    run: _Run, journal: Journal, journaled: Journaled, taken: TakenOver, plan: Plan, ready: Ready
) -> Ended:
    """The accounts' orders read, the sender chosen, then the closes fanned out and followed."""
    settings = run.settings
    lookback = timedelta(seconds=settings.reconcile_lookback)
    since = ready.server_now() - lookback
    try:
        # Evidence for close_position (submit_orders knows its orders by client id), and
        # in both modes the orders of others that can still fill, counted before a close
        # is sized. Cut short by a stop: nothing is sent then, so none is needed.
        snapshot = await _until_stopped(orders_snapshot(run.reader, plan.targets, since), run.stop)
    except Unauthorized as err:
        why = f"credentials rejected: {err}"
        return aborted(why, plan.settled + unsent(plan.targets, f"not sent: {why}"))
    preexisting, working_before = snapshot or ({}, {})
    read_accounts = set(preexisting) if snapshot is not None else set()
    if settings.close_via != "close_position":
        preexisting = {}
    sender = choose_sender(
        settings,
        run.api,
        run.reader,
        journaled.job,
        journaled.priors,
        preexisting,
        run.policy.sleep,
        working_before=working_before,
        read_accounts=read_accounts,
        ledger_from=since,
    )
    for target in taken.at_market(plan.targets):
        sender.at_market(target)  # its limit was sent by an earlier run: the rest
    ctx = CloseContext(
        run_id=run.run_id,
        reader=run.reader,
        policy=run.policy,
        journal=journal,
        stopping=run.stop,
        server_now=ready.server_now,
        lookback=lookback,
        priors=journaled.priors,
        sender=sender,
        working_before=working_before,
        read_accounts=frozenset(read_accounts),
        counters=run.counters,
        earlier_orders={k: (e.orders, e.request_id) for k, e in taken.earlier.items()},
    )
    run.counters.closing_since = run.request.wall_clock()
    return await _close(ctx, settings, run.request, plan, since, ready, run.api)


async def _plan(
    settings: Settings,
    request: RunRequest,
    reader: Reader,
    ready: Ready,
    stop: asyncio.Event,
    api: TradingApi,
    journaled: Journaled | None,
) -> tuple[Plan, TakenOver] | Ended:
    """Raises `InputError` above the MAX_POSITIONS ceiling without --force."""
    try:  # what earlier runs of today's job closed: not held now, those are already flat
        closed_earlier = await held_earlier(settings, journaled, ready)
    except JournalError as err:  # nothing was sent
        return aborted(str(err), unplanned(request.specs, f"not sent: {err}"))
    # Reads only, retried up to MAX_ATTEMPTS times REQUEST_TIMEOUT: a stop ends them at once.
    plan = await _until_stopped(make_plan(reader, request.specs, closed_earlier), stop)
    if plan is None:
        return aborted("stop requested", unplanned(request.specs, "run stopped before any close"))
    if plan.refusals:
        why = "; ".join(plan.refusals) + "; nothing was sent"
        return aborted(why, unplanned(request.specs, why), refused=True)
    taken = TakenOver()
    if journaled is not None and journaled.priors:
        # A takeover: the job's earlier orders read, and the plan confirmed against them.
        confirmed = await _until_stopped(
            take_over_plan(reader, api, plan, journaled, request.specs), stop
        )
        if confirmed is None:
            return aborted(
                "stop requested", unplanned(request.specs, "run stopped before any close")
            )
        taken = confirmed
    plan.moc_cutoff = ready.cutoff_line()
    plan.close_style = style_line(settings)
    ceiling = settings.max_positions
    if ceiling is not None and len(plan.targets) > ceiling and not request.max_positions_override:
        raise InputError(
            f"the targets resolve to {len(plan.targets)} positions, above max_positions"
            f" ({ceiling}); re-run with --force to close them all"
        )
    if plan.targets or taken.flat:
        # The arrival quotes and the options' multipliers, before the first close; the guards
        # hold back blind orders.
        ids = [t.instrument_id for t in plan.targets] + taken.instrument_ids()
        read = await _until_stopped(
            asyncio.gather(
                read_quotes(reader, ids, ready.server_now),
                read_multipliers(reader, plan.targets, taken.multiplied_ids()),
            ),
            stop,
        )
        if read is None:
            return aborted(
                "stop requested", unplanned(request.specs, "run stopped before any close")
            )
        quotes, multipliers = read
        plan.targets, plan.guarded = apply_guards(
            priced(with_multipliers(plan.targets, multipliers), quotes),
            quotes,
            guards_of(settings),
            force=request.max_positions_override,
        )
        plan.settled.extend(plan.guarded)
        taken.settle(plan, quotes.by_instrument, multipliers)
    plan.costs = costs_of(settings, plan, ready)
    failed = sum(1 for r in plan.settled if r.outcome is Outcome.FAILED)
    events.plan_ready(
        positions=len(plan.targets),
        already_settled=len(plan.settled) - failed - len(plan.guarded),
        failed=failed,
        accounts=len({t.account_id for t in plan.targets}),
        guarded=len(plan.guarded),
        close_style=settings.close_style,
        not_held=sum(1 for r in plan.settled if r.outcome is Outcome.NOT_HELD),
        requests={c.style: c.fields() for c in plan.costs},
    )
    if request.on_plan is not None:
        request.on_plan(plan)
    return plan, taken


def costs_of(settings: Settings, plan: Plan, ready: Ready) -> list[StyleCost]:
    """What closing the plan costs in requests at RATE_LIMIT, per style (protected: whether its
    schedule fits before DEADLINE_S and the cutoff, and what would make it fit)."""
    by_account: dict[int, int] = {}
    for t in plan.targets:
        by_account[t.account_id] = by_account.get(t.account_id, 0) + 1
    to_cutoff = None
    if settings.at_close and ready.cutoff is not None and ready.cutoff.cutoff is not None:
        to_cutoff = (ready.cutoff.cutoff - ready.server_now()).total_seconds()
    via_batches = settings.close_via == "submit_orders"
    waves = waves_of(settings)
    if waves is not None:
        market = plan_costs(
            by_account.values(),
            rate_limit=settings.rate_limit,
            batch_size=settings.batch_size,
            collar=None,
        )
        return [
            *market,
            waves_cost(
                by_account.values(),
                rate_limit=settings.rate_limit,
                batch_size=settings.batch_size,
                collar=waves.collar,
                seconds_to_cutoff=to_cutoff,
            ),
        ]
    return plan_costs(
        by_account.values(),
        rate_limit=settings.rate_limit,
        batch_size=settings.batch_size if via_batches else 1,
        collar=collar_of(settings),
        seconds_to_cutoff=to_cutoff,
    )


def style_line(settings: Settings) -> str | None:
    """What the plan says of CLOSE_STYLE=protected; None for market orders."""
    if settings.close_style != "protected":
        return None
    rest = "at the close" if settings.at_close else "at market"
    if settings.protected_via == "ioc_waves":
        return (
            f"protected: IOC LIMIT waves every {settings.reprice_s:g} s from"
            f" {settings.collar_bps:g} to {settings.collar_max_bps:g} bps past the arrival"
            f" quote; the rest {rest} {settings.deadline_s:g} s after the first send"
        )
    return (
        f"protected: LIMIT {settings.collar_bps:g} bps past the touch, re-priced every"
        f" {settings.reprice_s:g} s up to {settings.collar_max_bps:g} bps; the rest {rest}"
        f" {settings.deadline_s:g} s after the first send"
    )


async def _confirm(request: RunRequest, plan: Plan, stop: asyncio.Event) -> Ended | None:
    """None: go on and send. Otherwise the run ends here, nothing sent."""
    if request.confirm is not None and not await _unless_stopped(request.confirm(plan), stop):
        results = plan.settled + unsent(plan.targets, "not confirmed by the operator")
        if stop.is_set():
            return aborted("stop requested", results)
        events.run_aborted("the operator declined", declined=True)
        return Ended(results, "the operator declined")
    if stop.is_set():
        results = plan.settled + unsent(plan.targets, "run stopped before any close")
        return aborted("stop requested", results)
    return None


async def _close(
    ctx: CloseContext,
    settings: Settings,
    request: RunRequest,
    plan: Plan,
    since: datetime,
    ready: Ready,
    api: TradingApi,
) -> Ended:
    """Fan out and follow, recording each target's outcome as it settles, then the run's end."""
    recorded = 0  # outcomes queued as their targets settled

    def on_result(result: TargetResult) -> None:
        # Queued now, it rides along with the fan-out's commits: the run's end commits only
        # the last few. (A journal that fails here fails the next commit too, which reports it.)
        nonlocal recorded
        with contextlib.suppress(JournalError):
            ctx.journal.outcome(ctx.run_id, result, result.quantity)
        recorded += 1
        if request.on_result is not None:
            request.on_result(result)

    try:
        await ctx.sender.before_fan_out(plan.targets, ctx.stopping)
        options = CloseOptions(
            since=since,
            on_result=on_result,
            extra_s=ready.until_close_s(),
            close_at=None if ready.cutoff is None else ready.cutoff.regular_close,
            on_waiting=request.on_waiting,
            moc_cutoff=None if ready.cutoff is None else ready.cutoff.cutoff,
        )
        closed = await close_and_follow(ctx, settings, plan.targets, options, api)
    except JournalError as err:  # before any close (the fan-out stops on one itself)
        return aborted(str(err), plan.settled + unsent(plan.targets, f"not sent: {err}"))
    ended = Ended(plan.settled + closed.results, closed.aborted)
    try:
        # A stop cuts targets off without an on_result: then every outcome is queued again
        # (an upsert each), rather than keeping which were (~8 MB for 100,000 targets).
        if ctx.stopping.is_set() or closed.aborted or recorded != len(closed.results):
            for target_result in closed.results:
                ctx.journal.outcome(ctx.run_id, target_result, target_result.quantity)
        if ctx.stopping.is_set():
            ended = ended.unless_aborted("stop requested")
        code = exit_code(
            ended.results, aborted=ended.aborted, fail_on_not_held=settings.fail_on_not_held
        )
        ctx.journal.finish_run(ctx.run_id, request.wall_clock(), code)
        if code is ExitCode.OK:  # retention, by the server's date (worker.journal.retention)
            today = trading_day(ready.server_now())
            retain(ctx.journal, settings.journal_keep_days, today)
    except JournalError as err:  # the closes were sent; the report still says what happened
        ended = ended.unless_aborted(str(err))
    return ended


async def _until_stopped(call: Awaitable[T], stop: asyncio.Event) -> T | None:
    """The call's result, or None as soon as a stop is requested (the call is cancelled)."""
    try:
        return await before(call, stop.wait())
    except CutOff:
        return None


async def _unless_stopped(question: Awaitable[bool], stop: asyncio.Event) -> bool:
    """The answer, or False as soon as a stop is requested."""
    return bool(await _until_stopped(question, stop))
