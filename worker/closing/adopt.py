"""A rerun's own working orders: found by the job's client ids, adopted, never cancelled or re-sent.

An earlier run of today's job (stopped, killed, or one whose market-on-close orders rest until
the close) may have left orders working at the server. They are the job's by their client ids:
each id is derived from (job, account, instrument, generation) and committed in the journal
before it was sent, so the highest generation earlier runs recorded names every id they could
have sent. A working one is adopted: the rerun follows it to flat like a close of its own, and
neither cancels it (an exchange refuses to cancel market-on-close orders near the close) nor
sends the position another order. Orders on the instrument that are not the job's are still
cancelled (`worker.closing.modes`).

The orders listing may lag order entry, so it cannot prove an id is not working: ids it does
not show are looked up one by one (GET .../orders/{client id}, current while the order is open).

An order is adopted only while it cannot take the position past zero: on the side that closes the
position as the plan read it, and, with others' working orders on that side counted (any age,
read by status; with cancel_orders off they stay and may fill), for no more than is open.
Otherwise it is not adopted: it is cancelled (with the instrument's other orders under
cancel_orders, alone without) and the position is closed the ordinary way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from worker.api.client import IDS_PER_REQUEST, TradingApi
from worker.api.models import Order
from worker.api.reads import Reader
from worker.closing.client_ids import client_order_id
from worker.closing.evidence import closing_side
from worker.closing.target import Target
from worker.errors import ApiError, NotFound, Unauthorized
from worker.observe import events

Key = tuple[int, str]  # (account_id, instrument_id in lower case), as the journal keys priors
IDS_PER_READ = IDS_PER_REQUEST


@dataclass(frozen=True, slots=True)
class Adopted:
    """A target's own orders still working at the server, and the read that found them."""

    orders: list[Order]
    request_id: str


@dataclass(slots=True)
class OwnWorking:
    """What the job has working at the server, as the rerun found it."""

    adopted: dict[Key, Adopted] = field(default_factory=dict)
    # Per account, the job's working orders that were not adopted, on targets that leave
    # others' orders alone (cancel_orders off): nothing else cancels them, and left working they
    # would close the position a second time. (Under cancel_orders the instrument's cancel
    # takes them with the rest.)
    to_cancel: dict[int, list[tuple[Target, Order]]] = field(default_factory=dict)


@dataclass(slots=True)
class _Read:
    """One account's orders as adoption needs them."""

    own: list[tuple[Order, str]]  # the job's working orders, each with the request that found it
    others: list[Order]  # every working order of the account not under the job's client ids


def own_client_ids(
    job: str, targets: Iterable[Target], generations: Mapping[Key, int]
) -> dict[str, Target]:
    """Every client id earlier runs of `job` may have sent for these targets, and its target."""
    ids: dict[str, Target] = {}
    for t in targets:
        last = generations.get((t.account_id, t.instrument_id.lower()))
        if last is None:  # no earlier run sent this position under a client id
            continue
        for generation in range(last + 1):
            ids[client_order_id(job, t.account_id, t.instrument_id, generation)] = t
    return ids


async def find_own_working(
    reader: Reader, api: TradingApi, ids: Mapping[str, Target]
) -> OwnWorking:
    """The working orders under the job's client ids, by target, each checked for adoption.

    An account whose orders cannot be read adopts nothing: its targets go the ordinary way
    (resting orders cancelled, the same client id sent again and found by its 409).
    """
    by_account: dict[int, list[str]] = {}
    for client_id, t in ids.items():
        by_account.setdefault(t.account_id, []).append(client_id)
    found = OwnWorking()
    for account_id, client_ids in by_account.items():
        try:
            read = await _read(reader, api, account_id, client_ids)
        except Unauthorized:
            raise
        except ApiError as err:
            events.adoption_skipped(
                account_id=account_id, reason=str(err), request_id=err.request_id
            )
            continue
        by_target: dict[Key, list[Order]] = {}
        request_ids: dict[Key, str] = {}
        for order, request_id in read.own:
            t = ids[order.client_order_id]
            key = (t.account_id, t.instrument_id.lower())
            by_target.setdefault(key, []).append(order)
            request_ids[key] = request_id
        for key, orders in by_target.items():
            target = ids[orders[0].client_order_id]
            refusal = _cannot_adopt(target, orders, read.others)
            if refusal is None:
                found.adopted[key] = Adopted(orders, request_ids[key])
                continue
            events.adoption_skipped(
                account_id=account_id,
                instrument=target.instrument,
                reason=refusal,
                request_id=request_ids[key],
            )
            if not target.cancel_orders:
                found.to_cancel.setdefault(account_id, []).extend((target, o) for o in orders)
    return found


async def _read(
    reader: Reader, api: TradingApi, account_id: int, client_ids: Sequence[str]
) -> _Read:
    """The account's working orders by status (others' of any age, and the job's the listing
    shows), then the job's ids it did not show: by the `order_ids` filter (final ones are
    listed there too), and those still unseen one by one, which no lag hides."""
    wanted = set(client_ids)
    working, request_ids = await reader.working_orders(account_id, ())
    request_id = request_ids[-1] if request_ids else ""
    own = [(o, request_id) for o in working if o.client_order_id in wanted]
    others = [o for o in working if o.client_order_id not in wanted]
    seen = {o.client_order_id for o, _ in own}
    own += await working_by_client_id(
        reader, api, account_id, [c for c in client_ids if c not in seen]
    )
    return _Read(own, others)


async def working_by_client_id(
    reader: Reader, api: TradingApi, account_id: int, client_ids: Sequence[str]
) -> list[tuple[Order, str]]:
    """The working orders under these client ids, each with the request that found it, past a
    lagging listing: by the `order_ids` filter (final ones are listed there too), then those
    still unseen one by one, which no lag hides. (`liquidator status` and `cancel` find the
    job's orders so as well.)"""
    own: list[tuple[Order, str]] = []
    seen: set[str] = set()
    for start in range(0, len(client_ids), IDS_PER_READ):
        chunk = client_ids[start : start + IDS_PER_READ]
        reply = await reader.retried(
            f"orders of account {account_id} by client id",
            functools.partial(api.orders_by_client_id, account_id, chunk),
        )
        for o in reply.data:
            if o.client_order_id not in seen:
                seen.add(o.client_order_id)
                if o.working:
                    own.append((o, reply.request_id))
    looked_up = await asyncio.gather(
        *(_one(reader, api, account_id, c) for c in client_ids if c not in seen)
    )
    return own + [found for found in looked_up if found is not None]


async def _one(
    reader: Reader, api: TradingApi, account_id: int, client_id: str
) -> tuple[Order, str] | None:
    """The job's order under `client_id` while it is open; None: none open under it (404)."""
    try:
        reply = await reader.retried(
            f"order {client_id} of account {account_id}",
            functools.partial(api.get_order, account_id, client_id),
        )
    except NotFound:
        return None
    order = reply.data
    # Only a client-id match counts: an engine id can never pass for one of ours.
    if order.client_order_id != client_id or not order.working:
        return None
    return order, reply.request_id


def _cannot_adopt(target: Target, orders: Sequence[Order], others: Sequence[Order]) -> str | None:
    """Why these working orders must not be left to fill (None: they may)."""
    side = closing_side(target.quantity)
    if any(o.side != side for o in orders):
        return f"an order of the job is on {orders[0].side}, not the closing side {side}"
    open_ = abs(target.quantity)
    left = sum((o.quantity - o.filled_quantity for o in orders), Decimal(0))
    if left > open_:
        return (
            f"the job's working orders would {side} {left}, more than the {open_}"
            " open: they are cancelled and the position closed for what it holds"
        )
    iid = target.instrument_id.lower()
    theirs = [
        o
        for o in others
        if o.working and o.side.startswith(side) and (o.instrument_id or "").lower() == iid
    ]
    pending = sum((o.quantity - o.filled_quantity for o in theirs), Decimal(0))
    if left + pending > open_:
        return (
            f"the job's working orders would {side} {left} and others' working orders"
            f" ({', '.join(o.id for o in theirs)}) {pending}, more than the {open_} open:"
            " the job's are cancelled and the position closed the ordinary way"
        )
    return None
