"""The fan-out and following, as one stage of a run: the close mode chosen (CLOSE_VIA), each
account's orders read first (the snapshot), every close sent (`worker.run.fanout`), every sent close
followed to flat (`worker.closing.follow`). It returns every target's result and the first reason it
stopped the run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.api.client import TradingApi
from worker.api.models import Order
from worker.api.policy import Sleep
from worker.api.reads import Reader
from worker.closing.collar import Collar
from worker.closing.follow import Follower, FollowSettings
from worker.closing.modes import (
    CancelWait,
    ClosePositionSender,
    Sender,
    SubmitOrdersSender,
    submit_generations,
)
from worker.closing.protect import Protector
from worker.closing.send import CloseContext
from worker.closing.target import Next, Target
from worker.closing.waves import Waves, most_waves
from worker.errors import ApiError, JournalError, Unauthorized
from worker.inputs.settings import Settings
from worker.journal.store import Prior
from worker.observe import events
from worker.results import TargetResult
from worker.run.ended import Ended, FirstReason
from worker.run.fanout import fan_out


async def orders_snapshot(
    reader: Reader, targets: Sequence[Target], since: datetime
) -> tuple[dict[int, frozenset[str]], dict[int, list[Order]]]:
    """Each account's orders before the fan-out: evidence that a later order is not one of them
    (those created since `since`, by the server's time, and every order that can still fill, of
    any age); and, per account, those that can still fill (others' orders a close must count).

    An account whose orders cannot be read gets no entry: no order found later is taken for its
    close, and its closes are still sent.
    """
    accounts = list(dict.fromkeys(t.account_id for t in targets))

    async def one(account_id: int) -> tuple[int, list[Order] | None, list[Order]]:
        try:
            # Two independent reads, both before any close: sent together.
            recent_read = asyncio.ensure_future(reader.orders(account_id, (), since))
            recent_read.add_done_callback(_retrieved)
            try:
                working, _ = await reader.working_orders(account_id, ())
                recent, request_ids = await recent_read
            finally:
                recent_read.cancel()  # (the other read failed: this one is not waited for)
        except Unauthorized:
            raise
        except ApiError as err:
            events.orders_snapshot(account_id=account_id, orders=-1, request_id=err.request_id)
            return account_id, None, []
        both = {o.id: o for o in [*recent, *working]}
        events.orders_snapshot(account_id=account_id, orders=len(both), request_id=request_ids[-1])
        return account_id, list(both.values()), [o for o in working if o.working]

    snapshots = await asyncio.gather(*(one(a) for a in accounts))
    preexisting = {
        a: frozenset(o.id for o in listed) for a, listed, _ in snapshots if listed is not None
    }
    return preexisting, {a: working for a, _, working in snapshots if working}


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A read left behind when its pair failed: its own failure is not worth a warning."""
    if not task.cancelled():
        task.exception()


def choose_sender(
    settings: Settings,
    api: TradingApi,
    reader: Reader,
    job: str,
    priors: Mapping[tuple[int, str], Prior],
    preexisting: Mapping[int, frozenset[str]],
    sleep: Sleep,
    working_before: Mapping[int, Sequence[Order]] | None = None,
    read_accounts: Collection[int] | None = None,
    ledger_from: datetime | None = None,
) -> Sender:
    """CLOSE_VIA: how each close is sent, the one place the mode is chosen."""
    if settings.close_via == "close_position":
        return ClosePositionSender(api, reader, preexisting)
    return SubmitOrdersSender(
        api,
        reader,
        job=job,
        time_in_force="AT_THE_CLOSE" if settings.at_close else "DAY",
        generations=submit_generations(priors),
        cancel_wait=CancelWait(
            timeout_s=settings.flat_timeout,
            first_pause_s=settings.follow_pause,
            max_pause_s=settings.follow_pause_max,
        ),
        sleep=sleep,
        batch_size=settings.batch_size,
        working_before=working_before,
        read_accounts=read_accounts,
        collar=collar_of(settings),
        ledger_from=ledger_from,
        waves=waves_of(settings),
    )


def waves_of(settings: Settings) -> Waves | None:
    """PROTECTED_VIA=ioc_waves: the schedule of the protected targets' IOC waves."""
    collar = collar_of(settings)
    if collar is None or settings.protected_via != "ioc_waves":
        return None
    return Waves(collar, rate_limit=settings.rate_limit, batch_size=settings.batch_size)


def collar_of(settings: Settings) -> Collar | None:
    """CLOSE_STYLE=protected: the collar its limits are priced and re-priced with."""
    if settings.close_style != "protected":
        return None
    return Collar(
        first_bps=settings.collar_bps,
        max_bps=settings.collar_max_bps,
        reprice_s=settings.reprice_s,
        deadline_s=settings.deadline_s,
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
    who hears each outcome, and where today's close bears on following (--at-close, protected)."""

    since: datetime  # the run's start by the server's clock
    on_result: Callable[[TargetResult], None] | None = None  # each target's outcome, once
    extra_s: float = 0.0  # following waits this much longer than FLAT_TIMEOUT (the close)
    # --at-close: today's close, when the resting orders fill. Once the fan-out is over, what
    # still rests is told (`waiting_for_fills`, and `on_waiting(orders, close_at, seconds until
    # then)`), so a long wait says what it waits for.
    close_at: datetime | None = None
    on_waiting: Callable[[int, datetime, float], None] | None = None
    moc_cutoff: datetime | None = None  # protected: escalations go out before it


async def close_and_follow(
    ctx: CloseContext,
    settings: Settings,
    targets: Sequence[Target],
    options: CloseOptions,
    api: TradingApi | None = None,
) -> Ended:
    """The fan-out, and following each sent close to flat while the others are in flight.
    `api`: the protected style's re-prices and escalations (none without it)."""
    stopped_by = FirstReason()
    if isinstance(ctx.sender, SubmitOrdersSender) and ctx.sender.waves is not None:
        # IOC waves: nothing rests, so nothing is re-priced or cancelled; the sender prices
        # each wave and following sends them (`worker.closing.waves`).
        api = None
        by_account: dict[int, int] = {}
        for t in targets:
            by_account[t.account_id] = by_account.get(t.account_id, 0) + 1
        to_cutoff = None
        if options.moc_cutoff is not None:
            to_cutoff = (options.moc_cutoff - ctx.server_now()).total_seconds()
        ctx.sender.waves.plan(by_account.values(), to_cutoff)
    follower = _follower(ctx, settings, options, stopped_by)
    protector = None if api is None else _protector(ctx, settings, options, api, follower)

    def follow(target: Target, result: TargetResult, step: Next) -> None:
        follower.follow(target, result, step)
        if protector is not None:
            protector.watch(target, result)

    protecting = (
        None
        if protector is None
        else asyncio.ensure_future(_protect(protector, stopped_by, ctx.stopping))
    )
    try:
        results = await fan_out(
            ctx,
            targets,
            workers=fan_out_workers(settings, len(targets)),
            grace_s=settings.stop_grace,
            on_result=options.on_result,
            on_abort=stopped_by,
            follow=follow,
        )
    except BaseException:
        follower.abandon()
        await follower.finish()
        if protecting is not None:
            protecting.cancel()
        raise
    follower.all_sent()
    if protector is not None:
        protector.all_sent()
    _tell_waiting(ctx, follower, options)
    await _finish(ctx, follower, protecting)
    return Ended(results, stopped_by.reason)


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
        on_result=options.on_result,
        on_abort=stopped_by,
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
        api,
        ctx.sender,
        collar,
        reader=ctx.reader,
        others_working=follower.others_working,
        poke=follower.poke,
        stopping=ctx.stopping,
        server_now=ctx.server_now,
        moc_cutoff=options.moc_cutoff,
        rate_limit=settings.rate_limit,
        batch_size=settings.batch_size,
        # Round trips, and following's pause before it reads the limit final.
        slack_s=settings.follow_pause_max + 0.5,
        # A cancel is chased once following has had time to read it twice.
        chase_s=max(1.0, 2 * settings.follow_pause_max),
    )


def _tell_waiting(ctx: CloseContext, follower: Follower, options: CloseOptions) -> None:
    """--at-close: what still rests once the fan-out is over, and until when."""
    close_at = options.close_at
    resting = follower.working_orders() if close_at is not None else 0
    if close_at is not None and resting:
        wait_s = max(0.0, (close_at - ctx.server_now()).total_seconds())
        events.waiting_for_fills(orders=resting, until=close_at, wait_s=wait_s)
        if options.on_waiting is not None:
            try:
                options.on_waiting(resting, close_at, wait_s)
            except Exception as bug:  # what a terminal shows never stops following
                events.internal_error(bug)


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


async def _protect(protector: Protector, stopped_by: FirstReason, stopping: asyncio.Event) -> None:
    """The protected style's task: a fault there stops the run (following reports the rest)."""
    try:
        await protector.run()
    except asyncio.CancelledError:
        raise
    except Unauthorized as err:
        stopped_by(f"credentials rejected mid-run: {err}")
    except JournalError as err:  # the lock is lost: no order change may go out
        stopped_by(str(err))
        stopping.set()
    except Exception as bug:
        events.internal_error(bug)
        stopped_by(f"internal error: {type(bug).__name__}: {bug}")
