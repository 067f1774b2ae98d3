"""A rerun's own working orders: found by the job's client ids, adopted, never cancelled or re-sent.

An earlier run of today's job (stopped, killed, or one whose market-on-close orders rest until
the close) may have left orders working at the server. They are the job's by their client ids:
each id is derived from (job, account, instrument, generation) and committed in the journal
before it was sent, so the highest generation earlier runs recorded names every id they could
have sent. A working one is adopted: the rerun follows it to flat like a close of its own, and
neither cancels it (an exchange refuses to cancel market-on-close orders near the close) nor
sends the position another order. Orders on the instrument that are not the job's are still
cancelled (`worker.closing.modes`).

An order is adopted only while it cannot take the position past zero: on the side that closes the
position as the plan read it, and for no more than is open. Otherwise it is treated as any other
resting order (cancelled first) and the position is closed for what it holds now.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from worker.api.client import TradingApi
from worker.api.models import Order
from worker.api.reads import Reader
from worker.closing.client_ids import client_order_id
from worker.closing.evidence import closing_side
from worker.closing.target import Target
from worker.errors import ApiError, Unauthorized
from worker.output import events

Key = tuple[int, str]  # (account_id, instrument_id in lower case), as the journal keys priors
IDS_PER_READ = 100  # client ids per `order_ids` filter: ~4 kB of query string


@dataclass(frozen=True, slots=True)
class Adopted:
    """A target's own orders still working at the server, and the read that found them."""

    orders: list[Order]
    request_id: str


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
) -> dict[Key, Adopted]:
    """The working orders under the job's client ids, by target, each checked for adoption.

    An account whose orders cannot be read adopts nothing: its targets go the ordinary way
    (resting orders cancelled, the same client id sent again and found by its 409).
    """
    by_account: dict[int, list[str]] = {}
    for client_id, t in ids.items():
        by_account.setdefault(t.account_id, []).append(client_id)
    adopted: dict[Key, Adopted] = {}
    for account_id, client_ids in by_account.items():
        try:
            found = await _working(reader, api, account_id, client_ids)
        except Unauthorized:
            raise
        except ApiError as err:
            events.adoption_skipped(
                account_id=account_id, reason=str(err), request_id=err.request_id
            )
            continue
        by_target: dict[Key, list[Order]] = {}
        request_ids: dict[Key, str] = {}
        for order, request_id in found:
            t = ids[order.client_order_id]
            key = (t.account_id, t.instrument_id.lower())
            by_target.setdefault(key, []).append(order)
            request_ids[key] = request_id
        for key, orders in by_target.items():
            target = ids[orders[0].client_order_id]
            refusal = _cannot_adopt(target, orders)
            if refusal is not None:
                events.adoption_skipped(
                    account_id=account_id,
                    instrument=target.instrument,
                    reason=refusal,
                    request_id=request_ids[key],
                )
                continue
            adopted[key] = Adopted(orders, request_ids[key])
    return adopted


async def _working(
    reader: Reader, api: TradingApi, account_id: int, client_ids: Sequence[str]
) -> list[tuple[Order, str]]:
    found: list[tuple[Order, str]] = []
    for start in range(0, len(client_ids), IDS_PER_READ):
        chunk = client_ids[start : start + IDS_PER_READ]
        reply = await reader.retried(
            f"orders of account {account_id} by client id",
            functools.partial(api.orders_by_client_id, account_id, chunk),
        )
        found += [(o, reply.request_id) for o in reply.data if o.working]
    return found


def _cannot_adopt(target: Target, orders: Sequence[Order]) -> str | None:
    """Why these working orders must not be left to fill (None: they may)."""
    side = closing_side(target.quantity)
    if any(o.side != side for o in orders):
        return f"an order of the job is on {orders[0].side}, not the closing side {side}"
    left = sum((o.quantity - o.filled_quantity for o in orders), Decimal(0))
    if left > abs(target.quantity):
        return (
            f"the job's working orders would {side} {left}, more than the {abs(target.quantity)}"
            " open: they are cancelled and the position closed for what it holds"
        )
    return None
