"""One run, start to finish: check the key, wait for the close window, plan, confirm, fan out
the closes (`worker.fanout`), journal, report, exit code.

The orchestrator owns the pacer (in-flight and per-second bounds) and the stop event. A stop
request (SIGTERM, SIGINT) is an event, not an exception: no new close starts, requests in flight
finish or time out, unknown outcomes are looked at while the grace period lasts, and the run
ends with exit 3 and its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from zoneinfo import ZoneInfo

from worker import events
from worker.api import TradingApi, open_session
from worker.closer import CloseContext, send_one_close
from worker.counters import RunCounters
from worker.errors import ApiError, InputError, JournalError, JournalRefused, Unauthorized
from worker.fanout import fan_out
from worker.follow import Follower, FollowSettings
from worker.journal import Journal
from worker.journal_keys import job_key
from worker.journal_open import open_journal
from worker.metrics import write_metrics
from worker.models import Order
from worker.outcomes import Outcome, TargetResult, summarize
from worker.pace import Pacer
from worker.plan import Plan, Target, make_plan
from worker.policy import RetryPolicy, Sleep
from worker.reads import Reader
from worker.report import write_report
from worker.schedule import Go, wait_for_close_window
from worker.secrets import Scrubber
from worker.settings import Settings
from worker.targets import WHOLE_ACCOUNT, TargetSpec

MARKET_TZ = ZoneInfo("America/New_York")
# The key check's tries. Only transient failures (timeouts, 5xx, 429, refused connections) are
# tried again; a rejected key (401) ends the run at the first reply.
KEY_CHECK_ATTEMPTS = 5


class ExitCode(IntEnum):
    OK = 0  # every target closed (verified flat) or already flat (or a dry run succeeded)
    FAILED = 1  # at least one target failed or is not flat
    INVALID = 2  # invalid input or configuration, or the journal refused the run; nothing sent
    # Credentials rejected, a termination signal, or the report or metrics could not be
    # written; the report is still written when it can be.
    ABORTED = 3


@dataclass
class RunRequest:
    specs: list[TargetSpec]
    dry_run: bool = False
    report_path: Path | None = None
    # Asked with the plan before any close is sent; False ends the run with nothing sent.
    confirm: Callable[[Plan], Awaitable[bool]] | None = None
    max_positions_override: bool = False  # --force
    on_plan: Callable[[Plan], None] | None = None
    on_result: Callable[[TargetResult], None] | None = None
    before_close: timedelta | None = None  # wait for today's close minus this, or skip


@dataclass
class RunResult:
    run_id: str
    exit_code: ExitCode
    results: list[TargetResult] = field(default_factory=list)
    aborted: str | None = None
    refused: bool = False  # the journal refused the run (held, damaged, unreachable): exit 2
    write_failures: list[str] = field(default_factory=list)  # one line each, for stderr
    retries: int = 0
    reconciliations: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def stop_aware_sleep(stop: asyncio.Event) -> Sleep:
    """A retry wait that ends early when a stop is requested."""

    async def sleep(seconds: float) -> None:
        if seconds > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    return sleep


async def run(settings: Settings, request: RunRequest, stop: asyncio.Event) -> RunResult:
    run_id = uuid.uuid4().hex
    events.bind_run(run_id)
    outcome = RunResult(run_id, ExitCode.OK)
    events.run_started(
        base_url=settings.base_url,
        dry_run=request.dry_run,
        concurrency=settings.concurrency,
        rate_limit=settings.rate_limit,
    )
    try:
        await _run(settings, request, stop, outcome)
    except Unauthorized as err:
        _abort(outcome, f"credentials rejected: {err}")
    except JournalRefused as err:
        outcome.refused = not stop.is_set()  # a stop while waiting for the lock is an abort
        _abort(outcome, str(err))
    outcome.finished_at = datetime.now(UTC)
    outcome.exit_code = _exit_code(outcome)
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    if not outcome.results:
        outcome.results.extend(_unplanned(request.specs, outcome.aborted or "nothing was planned"))
    _write_outputs(settings, request, outcome, scrub=Scrubber.for_key(key).text)
    events.run_finished(
        exit_code=int(outcome.exit_code),
        aborted=outcome.aborted,
        seconds=(outcome.finished_at - outcome.started_at).total_seconds(),
        summary=summarize(outcome.results),
    )
    return outcome


def _write_outputs(
    settings: Settings, request: RunRequest, outcome: RunResult, *, scrub: Callable[[str], str]
) -> None:
    """The report first, then the metrics; a failure of either is one line and exit 3."""
    exit_code = int(outcome.exit_code)
    writes: list[tuple[str, Path | None, Callable[[Path], None]]] = [
        (
            "report",
            request.report_path,
            lambda path: write_report(
                path,
                run_id=outcome.run_id,
                started_at=outcome.started_at,
                finished_at=outcome.finished_at,
                dry_run=request.dry_run,
                results=outcome.results,
                exit_code=exit_code,
                aborted=outcome.aborted,
                scrub=scrub,
            ),
        ),
        (
            "metrics",
            settings.metrics_file,
            lambda path: write_metrics(
                path,
                results=outcome.results,
                retries=outcome.retries,
                reconciliations=outcome.reconciliations,
                duration_s=(outcome.finished_at - outcome.started_at).total_seconds(),
                exit_code=exit_code,
                finished_at=outcome.finished_at.timestamp(),
            ),
        ),
    ]
    for what, path, write in writes:
        if path is None:
            continue
        try:
            write(path)
        except OSError as err:
            line = f"could not write the {what} {path}: {err.strerror or err}"
            events.write_failed(what=what, path=str(path), error=err.strerror or str(err))
            outcome.write_failures.append(line)
            outcome.exit_code = ExitCode.ABORTED


def _abort(outcome: RunResult, why: str) -> None:
    if outcome.aborted is None:
        outcome.aborted = why
        events.run_aborted(why)


async def _run(
    settings: Settings, request: RunRequest, stop: asyncio.Event, outcome: RunResult
) -> None:
    assert settings.api_key is not None, "the CLI refuses to run without a key"
    sleep = stop_aware_sleep(stop)
    policy = RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_initial_s=settings.retry_backoff,
        backoff_max_s=settings.retry_backoff_max,
        settle_s=settings.reconcile_delay,
        sleep=sleep,
    )
    pacer = Pacer(settings.concurrency, settings.rate_limit, on_change=events.pace_changed)
    counters = RunCounters()  # the run's own: bumped where things happen, read here
    # Opened, checked and locked before any request; a dry run sends nothing and takes no lock.
    journal = None if request.dry_run else await open_journal(settings, stop)
    try:
        await _run_session(settings, request, stop, outcome, policy, pacer, counters, journal)
    finally:
        outcome.retries, outcome.reconciliations = counters.retries, counters.looks
        if journal is not None:
            try:
                journal.close()  # and the lock with it
            except JournalError as err:
                _abort(outcome, str(err))


async def _run_session(
    settings: Settings,
    request: RunRequest,
    stop: asyncio.Event,
    outcome: RunResult,
    policy: RetryPolicy,
    pacer: Pacer,
    counters: RunCounters,
    journal: Journal | None,
) -> None:
    assert settings.api_key is not None
    key = settings.api_key.get_secret_value()
    async with open_session(settings.concurrency, settings.request_timeout, key) as session:
        api = TradingApi(session, settings.base_url, pacer)
        reader = Reader(api, policy, counters=counters)
        check = Reader(api, dataclasses.replace(policy, max_attempts=KEY_CHECK_ATTEMPTS))
        try:
            clock = await check.clock()
        except ApiError as err:
            _abort(outcome, f"the API did not accept the key or could not be reached: {err}")
            return
        offset = clock.data - datetime.now(UTC)

        def server_now() -> datetime:
            return datetime.now(UTC) + offset

        if request.before_close is not None:
            timing = await wait_for_close_window(
                reader, request.before_close, server_now, stop, policy.sleep
            )
            if timing.go is Go.MARKET_CLOSED:
                outcome.results.extend(
                    _unplanned(
                        request.specs, f"market closed: {timing.reason}", Outcome.MARKET_CLOSED
                    )
                )
                return
            if timing.go is Go.STOPPED:
                _abort(outcome, timing.reason)
                return
        plan = await make_plan(reader, request.specs)
        _check_ceiling(settings, plan, request.max_positions_override)
        events.plan_ready(plan)
        if request.on_plan is not None:
            request.on_plan(plan)
        outcome.results.extend(plan.settled)
        if request.dry_run:
            outcome.results.extend(_unsent(plan.targets, "dry run: nothing sent"))
            return
        if request.confirm is not None and not await _unless_stopped(request.confirm(plan), stop):
            outcome.results.extend(_unsent(plan.targets, "not confirmed by the operator"))
            _abort(outcome, "stop requested" if stop.is_set() else "the operator declined")
            return
        if stop.is_set():
            outcome.results.extend(_unsent(plan.targets, "run stopped before any close"))
            _abort(outcome, "stop requested")
            return
        assert journal is not None, "every run that sends opens the journal first"
        results: list[TargetResult] | None = None
        try:
            trading_day = server_now().astimezone(MARKET_TZ).date().isoformat()
            job = job_key(settings.base_url, trading_day)
            priors = journal.priors(job, outcome.run_id)
            touched = sum((t.account_id, t.instrument_id) in priors for t in plan.targets)
            if touched:
                settle_s = journal.settle_after_takeover(
                    job, outcome.run_id, settings.request_timeout + settings.reconcile_delay
                )
                events.previous_run_found(job=job, positions_touched=touched, settle_s=settle_s)
                await policy.sleep(settle_s)
            journal.start_run(
                run_id=outcome.run_id,
                job=job,
                base_url=settings.base_url,
                trading_day=trading_day,
                started_at=outcome.started_at,
                dry_run=False,
            )
            lookback = timedelta(seconds=settings.reconcile_lookback)
            since = server_now() - lookback
            ctx = CloseContext(
                run_id=outcome.run_id,
                api=api,
                reader=reader,
                policy=policy,
                journal=journal,
                stopping=stop,
                server_now=server_now,
                lookback=lookback,
                priors=priors,
                preexisting=await _orders_snapshot(reader, plan.targets, since),
                counters=counters,
            )
            results = await _close_and_follow(
                ctx, settings, request, outcome, plan.targets, since=since
            )
            outcome.results.extend(results)
            for target, result in zip(plan.targets, results, strict=True):
                journal.outcome(outcome.run_id, result, str(target.quantity))
            if stop.is_set():
                _abort(outcome, outcome.aborted or "stop requested")
            journal.finish_run(outcome.run_id, datetime.now(UTC), _exit_code(outcome))
        except JournalError as err:
            # No close was sent after it (the fan-out stops); the report still says what happened.
            if results is None:  # before the fan-out: nothing was sent
                outcome.results.extend(_unsent(plan.targets, f"not sent: {err}"))
            _abort(outcome, str(err))


async def _orders_snapshot(
    reader: Reader, targets: Sequence[Target], since: datetime
) -> dict[int, frozenset[str]]:
    """Each account's orders before the fan-out: evidence that a later order is not one of them.

    An account whose orders cannot be read gets no entry: no order found later is taken for its
    close, and its closes are still sent.
    """
    accounts = list(dict.fromkeys(t.account_id for t in targets))

    async def one(account_id: int) -> tuple[int, frozenset[str] | None]:
        try:
            orders, request_ids = await reader.orders(account_id, (), since)
        except Unauthorized:
            raise
        except ApiError as err:
            events.orders_snapshot(account_id=account_id, orders=-1, request_id=err.request_id)
            return account_id, None
        events.orders_snapshot(
            account_id=account_id, orders=len(orders), request_id=request_ids[-1]
        )
        return account_id, frozenset(o.id for o in orders)

    snapshots = await asyncio.gather(*(one(a) for a in accounts))
    return {a: ids for a, ids in snapshots if ids is not None}


async def _close_and_follow(
    ctx: CloseContext,
    settings: Settings,
    request: RunRequest,
    outcome: RunResult,
    targets: Sequence[Target],
    *,
    since: datetime,
) -> list[TargetResult]:
    """The fan-out, and following each sent close to flat while the others are in flight."""
    follow_since = min([since, *(p.since for p in ctx.priors.values())])

    async def send_residue(target: Target, result: TargetResult) -> list[Order] | None:
        return await send_one_close(ctx, target, result, ctx.server_now() - ctx.lookback)

    follower = Follower(
        ctx,
        FollowSettings(
            timeout_s=settings.flat_timeout,
            first_pause_s=settings.follow_pause,
            max_pause_s=settings.follow_pause_max,
            max_residue=settings.max_residue_closes,
            grace_s=settings.stop_grace,
        ),
        since=follow_since,
        send_close=send_residue,
        on_result=request.on_result,
        on_abort=lambda why: _abort(outcome, why),
    )
    try:
        results = await fan_out(
            ctx,
            targets,
            workers=2 * settings.concurrency,
            grace_s=settings.stop_grace,
            on_result=request.on_result,
            on_abort=lambda why: _abort(outcome, why),
            follow=follower.follow,
        )
    except BaseException:
        follower.abandon()
        await follower.finish()
        raise
    # Nothing is in flight any more: once a stop is requested, one more read decides.
    finishing = asyncio.ensure_future(follower.finish())
    stopped = asyncio.ensure_future(ctx.stopping.wait())
    try:
        await asyncio.wait({finishing, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not finishing.done():
            follower.last_look()
        await finishing
    finally:
        stopped.cancel()
        finishing.cancel()
    return results


async def _unless_stopped(question: Awaitable[bool], stop: asyncio.Event) -> bool:
    """The answer, or False as soon as a stop is requested."""
    answer = asyncio.ensure_future(question)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({answer, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (answer, stopped):
        task.cancel()
    return answer.done() and not answer.cancelled() and answer.result()


def _unplanned(
    specs: Sequence[TargetSpec], why: str, outcome: Outcome = Outcome.SKIPPED
) -> list[TargetResult]:
    """One result per named target (skipped, or market_closed), for runs ended before planning."""
    names = dict.fromkeys((s.account_id, s.instrument or WHOLE_ACCOUNT) for s in specs)
    return [TargetResult(a, i).settle(outcome, why) for a, i in names]


def _unsent(targets: Sequence[Target], why: str) -> list[TargetResult]:
    return [t.result().settle(Outcome.SKIPPED, why) for t in targets]


def _check_ceiling(settings: Settings, plan: Plan, force: bool) -> None:
    ceiling = settings.max_positions
    if ceiling is not None and len(plan.targets) > ceiling and not force:
        raise InputError(
            f"the targets resolve to {len(plan.targets)} positions, above max_positions"
            f" ({ceiling}); re-run with --force to close them all"
        )


def _exit_code(outcome: RunResult) -> ExitCode:
    if outcome.refused:
        return ExitCode.INVALID
    if outcome.aborted is not None:
        return ExitCode.ABORTED
    if any(r.outcome in (Outcome.FAILED, Outcome.NOT_FLAT) for r in outcome.results):
        return ExitCode.FAILED
    return ExitCode.OK
