"""The fan-out and following, as one stage of a run: the close mode chosen (CLOSE_VIA), every
close sent (`worker.run.fanout`), every sent close followed to flat (`worker.closing.follow`),
each outcome recorded as its target settles (`worker.run.bookkeeping`). It returns every target's
result and the first reason it stopped the run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from worker.api.client import TradingApi
from worker.closing.follow import Follower, FollowSettings
from worker.closing.modes import (
    CancelWait,
    ClientIds,
    ClosePositionSender,
    OrderStyle,
    ReadBefore,
    Sender,
    SubmitOrdersSender,
    submit_generations,
)
from worker.closing.protect import EscalationBudget, Protector, ProtectRun
from worker.closing.send import CloseContext
from worker.closing.stop import FirstReason
from worker.closing.target import Target
from worker.closing.waves import most_waves
from worker.errors import JournalError, Unauthorized
from worker.inputs.settings import Settings
from worker.journal.store import Prior
from worker.observe import events
from worker.run.bookkeeping import Bookkeeper
from worker.run.close_style import collar_of, waves_of
from worker.run.ended import Ended
from worker.run.fanout import Handover, Pool, fan_out
from worker.run.scope import RunScope
from worker.run.snapshot import Snapshot


def choose_sender(
    run: RunScope, job: str, priors: Mapping[tuple[int, str], Prior], snapshot: Snapshot
) -> Sender:
    """CLOSE_VIA: how each close is sent, the one place the mode is chosen. `job` and `priors`:
    today's job and its earlier runs' orders; `snapshot`: the accounts' orders before the
    fan-out (close_position's evidence; in both modes, others' orders that can still fill)."""
    settings = run.settings
    if settings.close_via == "close_position":
        return ClosePositionSender(run.api, run.reader, snapshot.preexisting)
    return SubmitOrdersSender(
        run.api,
        run.reader,
        ids=ClientIds(job, submit_generations(priors)),
        style=OrderStyle(
            time_in_force="AT_THE_CLOSE" if settings.at_close else "DAY",
            batch_size=settings.batch_size,
            collar=collar_of(settings),
            waves=waves_of(settings),
        ),
        cancel_wait=CancelWait(
            timeout_s=settings.flat_timeout,
            first_pause_s=settings.follow_pause,
            max_pause_s=settings.follow_pause_max,
            sleep=run.policy.sleep,
        ),
        before=ReadBefore(
            working_before=snapshot.working_before,
            read_accounts=set(snapshot.preexisting),
            ledger_from=snapshot.since,
        ),
    )


def fan_out_workers(settings: Settings, targets: int) -> int:
    """Closes in flight at once: twice the requests in flight, or, when orders go out in
    batches, enough that every request can carry a full batch (the workers only wait)."""
    workers = 2 * settings.concurrency
    if settings.close_via == "submit_orders" and settings.batch_size > 1:
        workers = max(workers, settings.concurrency * settings.batch_size)
    return max(1, min(workers, targets))


@dataclass(frozen=True)
class CloseOptions:
    """What the close stage needs beyond the settings: where following's ledger window starts,
    and where today's close bears on following (--at-close, protected)."""

    since: datetime  # the run's start by the server's clock
    extra_s: float = 0.0  # following waits this much longer than FLAT_TIMEOUT (the close)
    # --at-close: today's close, when the resting orders fill. Once the fan-out is over, what
    # still rests is told (`Bookkeeper.waiting`), so a long wait says what it waits for.
    close_at: datetime | None = None
    moc_cutoff: datetime | None = None  # protected: escalations go out before it


async def close_and_follow(
    ctx: CloseContext,
    settings: Settings,
    targets: Sequence[Target],
    options: CloseOptions,
    books: Bookkeeper,
    api: TradingApi | None = None,
) -> Ended:
    """The fan-out, and following each sent close to flat while the others are in flight;
    every outcome recorded by `books` as its target settles. `api`: the protected style's
    re-prices and escalations (none without it, nor with IOC waves)."""
    if _plan_waves(ctx, targets, options):
        api = None  # IOC waves: nothing rests, so nothing is re-priced or cancelled
    follower = _follower(ctx, settings, options, books.stopped_by)
    protector = None if api is None else _protector(ctx, settings, options, api, follower)
    protecting = None if protector is None else asyncio.ensure_future(_protect(protector, books))
    draining = asyncio.ensure_future(books.drain(follower.settled()))
    try:
        pool = Pool(fan_out_workers(settings, len(targets)), settings.stop_grace)
        results = await fan_out(ctx, targets, pool, books, Handover(follower, protector))
        follower.all_sent()
        if protector is not None:
            protector.all_sent()
        _tell_waiting(ctx, follower, options, books)
        await _finish(ctx, follower, protecting)
        await draining  # every result following settled is recorded
    except BaseException:
        follower.abandon()
        await follower.finish()
        if protecting is not None:
            protecting.cancel()
        with contextlib.suppress(Exception):
            await draining  # what the shutdown settled is recorded before the error goes on
        raise
    finally:
        draining.cancel()
    return Ended(results, books.stopped_by.reason)


def _plan_waves(ctx: CloseContext, targets: Sequence[Target], options: CloseOptions) -> bool:
    """PROTECTED_VIA=ioc_waves: the sender's waves planned for these targets (it prices each
    wave and following sends them: `worker.closing.waves`). False without waves."""
    if not isinstance(ctx.sender, SubmitOrdersSender) or ctx.sender.waves is None:
        return False
    by_account: dict[int, int] = {}
    for t in targets:
        by_account[t.account_id] = by_account.get(t.account_id, 0) + 1
    to_cutoff = None
    if options.moc_cutoff is not None:
        to_cutoff = (options.moc_cutoff - ctx.server_now()).total_seconds()
    ctx.sender.waves.plan(by_account.values(), to_cutoff)
    return True


def _follower(
    ctx: CloseContext, settings: Settings, options: CloseOptions, stopped_by: FirstReason
) -> Follower:
    collar = collar_of(settings)
    return Follower(
        ctx,
        FollowSettings(
            # Protected: a limit may rest until its deadline; FLAT_TIMEOUT counts from there.
            timeout_s=settings.flat_timeout
            + options.extra_s
            + (0 if collar is None else collar.deadline_s),
            first_pause_s=settings.follow_pause,
            max_pause_s=settings.follow_pause_max,
            # Protected: the escalation's market order is planned, not a residue: one more;
            # with IOC waves, every wave after the first and the market wave too.
            max_residue=settings.max_residue_closes + _planned_closes(settings),
            grace_s=settings.stop_grace,
            resting_pause_s=None if collar is None else collar.reprice_s,
        ),
        # The ledger's window: from the earliest start of a run whose orders are followed.
        since=min([options.since, *(p.since for p in ctx.priors.values())]),
        stopped_by=stopped_by,
    )


def _planned_closes(settings: Settings) -> int:
    """The closes after a protected target's first that its style plans (not residues)."""
    collar = collar_of(settings)
    if collar is None:
        return 0
    return most_waves(collar) if settings.protected_via == "ioc_waves" else 1


def _protector(
    ctx: CloseContext,
    settings: Settings,
    options: CloseOptions,
    api: TradingApi,
    follower: Follower,
) -> Protector | None:
    """CLOSE_STYLE=protected: the re-prices and escalations of the job's limits."""
    collar = collar_of(settings)
    if collar is None:
        return None
    return Protector(
        ProtectRun(api, ctx.reader, ctx.sender, ctx.stopping, ctx.server_now),
        collar,
        EscalationBudget(
            rate_limit=settings.rate_limit,
            batch_size=settings.batch_size,
            # Round trips, and following's pause before it reads the limit final.
            slack_s=settings.follow_pause_max + 0.5,
            # A cancel is chased once following has had time to read it twice.
            chase_s=max(1.0, 2 * settings.follow_pause_max),
            moc_cutoff=options.moc_cutoff,
        ),
        others_working=follower.others_working,
        poke=follower.poke,
    )


def _tell_waiting(
    ctx: CloseContext, follower: Follower, options: CloseOptions, books: Bookkeeper
) -> None:
    """--at-close: what still rests once the fan-out is over, and until when."""
    close_at = options.close_at
    resting = follower.working_orders() if close_at is not None else 0
    if close_at is not None and resting:
        books.waiting(resting, close_at, max(0.0, (close_at - ctx.server_now()).total_seconds()))


async def _finish(
    ctx: CloseContext, follower: Follower, protecting: asyncio.Future[None] | None
) -> None:
    """Nothing is in flight any more: once a stop is requested, one more read decides."""
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
        if protecting is not None:
            protecting.cancel()  # every target has its outcome: nothing left to re-price
            await asyncio.gather(protecting, return_exceptions=True)


async def _protect(protector: Protector, books: Bookkeeper) -> None:
    """The protected style's task: a fault there stops the run (following reports the rest)."""
    try:
        await protector.run()
    except asyncio.CancelledError:
        raise
    except Unauthorized as err:
        books.stopped_by(f"credentials rejected mid-run: {err}")
    except JournalError as err:  # the lock is lost: no order change may go out
        books.stop(str(err))
    except Exception as bug:
        events.internal_error(bug)
        books.stopped_by(f"internal error: {type(bug).__name__}: {bug}")
