"""Each account's orders read before the fan-out: the evidence close_position needs that a later
order is not one of them, and, in both modes, the orders of others that can still fill, which a
close counts before it is sized."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.api.models import Order
from worker.api.reads import Reader
from worker.closing.target import Target
from worker.errors import ApiError, Unauthorized
from worker.observe import events


@dataclass(frozen=True)
class Snapshot:
    """What the accounts held before the fan-out: per account read, the ids of its orders then
    (`preexisting`: created since `since`, by the server's clock, or still able to fill), and
    those that could still fill (`working_before`). Empty when a stop cut the read short:
    nothing is sent then."""

    since: datetime
    preexisting: dict[int, frozenset[str]] = field(default_factory=dict)
    working_before: dict[int, list[Order]] = field(default_factory=dict)


async def orders_snapshot(reader: Reader, targets: Sequence[Target], since: datetime) -> Snapshot:
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
    return Snapshot(since, preexisting, {a: working for a, _, working in snapshots if working})


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A read left behind when its pair failed: its own failure is not worth a warning."""
    if not task.cancelled():
        task.exception()
