"""The fan-out and following, as one stage of a run: each account's orders read first (the
snapshot), every close sent (`worker.fanout`), every sent close followed to flat
(`worker.follow`). It returns every target's result and the first reason it stopped the run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from worker import events
from worker.closer import CloseContext, send_one_close
from worker.errors import ApiError, Unauthorized
from worker.fanout import fan_out
from worker.follow import Follower, FollowSettings
from worker.models import Order
from worker.outcomes import TargetResult
from worker.plan import Target
from worker.reads import Reader
from worker.run_end import Ended, FirstReason
from worker.settings import Settings


async def orders_snapshot(
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


async def close_and_follow(
    ctx: CloseContext,
    settings: Settings,
    targets: Sequence[Target],
    *,
    since: datetime,
    on_result: Callable[[TargetResult], None] | None,
) -> Ended:
    """The fan-out, and following each sent close to flat while the others are in flight."""
    follow_since = min([since, *(p.since for p in ctx.priors.values())])
    stopped_by = FirstReason()

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
        on_result=on_result,
        on_abort=stopped_by,
    )
    try:
        results = await fan_out(
            ctx,
            targets,
            workers=2 * settings.concurrency,
            grace_s=settings.stop_grace,
            on_result=on_result,
            on_abort=stopped_by,
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
    return Ended(results, stopped_by.reason)
