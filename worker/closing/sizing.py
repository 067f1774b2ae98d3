"""How large a first order may be: the plan's positions read against the ledger's recent fills.

A positions listing may not yet hold a fill the ledger shows (a desk order filled just before the
run). Before any order is sized, the targets' fills from the ledger's window on are read once
(one request per account and CHUNK instruments); each first order is then sized so that,
whichever of them the plan's read holds, it does not take the position past zero
(`worker.closing.ledger.safe_size`). Orders that could still fill when the run began are
counted before a first close is sized: an earlier run's order of the job means nothing is sent
from that read (`after_earlier_orders`), others' orders on the closing side are subtracted
(`after_others_orders`). Reads only; it never sends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from worker.api.client import IDS_PER_REQUEST
from worker.api.models import Order
from worker.api.reads import Reader
from worker.closing.books import read_fills
from worker.closing.evidence import closing_side
from worker.closing.ledger import Fill, fills_of, safe_size
from worker.closing.target import Target
from worker.errors import ApiError, Unauthorized
from worker.observe import events

Key = tuple[int, str]  # (account_id, instrument_id in lower case)
CHUNK = IDS_PER_REQUEST


async def recent_fills(
    reader: Reader,
    targets: Sequence[Target],
    since: datetime,
    working_before: Mapping[int, Sequence[Order]],
    is_job: Callable[[Order, Target], bool],
) -> dict[Key, list[Fill]]:
    """Per target, the fills from `since` (the server's time) that the plan's read may not hold.

    Left out: fills of others' orders still working at the snapshot (counted whole before a
    close is sized, `after_others_orders`), and of the job's own earlier orders (by client id; the
    run that sent them followed them). An account that cannot be read is sized from the plan.
    """
    by_account: dict[int, list[Target]] = {}
    for t in targets:
        by_account.setdefault(t.account_id, []).append(t)
    found: dict[Key, list[Fill]] = {}
    for account_id, batch in by_account.items():
        working = {o.id for o in working_before.get(account_id, ())}
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            try:
                read = await read_fills(reader, account_id, [t.instrument_id for t in chunk], since)
            except Unauthorized:
                raise
            except ApiError:
                continue
            if read is None:  # the server lists no executions
                continue
            listed = {
                iid: [e for e in executions if e.order_id not in working]
                for iid, executions in read.items()
            }
            fill_orders = {e.order_id for executions in listed.values() for e in executions}
            jobs = await _the_jobs(reader, account_id, chunk, fill_orders, is_job)
            for t in chunk:
                key = (t.account_id, t.instrument_id.lower())
                fills = fills_of(listed.get(key[1], []), t.instrument_id)
                fills = [f for f in fills if f.order_id not in jobs]
                if fills:
                    found[key] = fills
    return found


async def _the_jobs(
    reader: Reader,
    account_id: int,
    targets: Sequence[Target],
    order_ids: Collection[str],
    is_job: Callable[[Order, Target], bool],
) -> set[str]:
    """Which of these orders are the job's own, read by id CHUNK to a request; one that cannot
    be read, or is not listed, is counted as another's."""
    by_iid = {t.instrument_id.lower(): t for t in targets}
    ids = sorted(order_ids)
    jobs: set[str] = set()
    for start in range(0, len(ids), CHUNK):
        try:
            listed, _ = await reader.orders_by_id(account_id, ids[start : start + CHUNK])
        except Unauthorized:
            raise
        except ApiError:
            continue
        for o in listed:
            t = by_iid.get((o.instrument_id or "").lower())
            if t is not None and is_job(o, t):
                jobs.add(o.id)
    return jobs


def first_size(target: Target, position: Decimal, fills: Sequence[Fill] | None) -> Decimal:
    """What the target's first order may close, planned for `position` (signed); said when it
    is less (`close_sized_by_ledger`)."""
    if not fills or position == 0:
        return position
    size = safe_size(position, fills)
    if size != position:
        events.close_sized_by_ledger(
            account_id=target.account_id,
            instrument=target.instrument,
            planned=str(position),
            quantity=str(size),
            fills=[f.id for f in fills],
        )
    return size


def after_earlier_orders(
    target: Target, position: Decimal, earlier: tuple[list[Order], str] | None
) -> Decimal:
    """0 when the takeover confirmed the plan while an earlier run's order of the job on this
    position could still fill, and the order was not adopted (final by the fan-out's read, or
    refused adoption and cancelled): what it filled after the takeover's read is not in
    `position`, and the ledger's recent fills leave the job's own out. Nothing is sent from that
    read; following counts the order's fills from the takeover's point and closes what is left.
    """
    if position == 0 or earlier is None:
        return position
    working = [o.id for o in earlier[0] if o.working]
    if not working:
        return position
    events.close_waits_for_orders(
        account_id=target.account_id, instrument=target.instrument, orders=working, quantity="0"
    )
    return Decimal(0)


def after_others_orders(
    target: Target, position: Decimal, working_before: Sequence[Order], idempotent: bool
) -> Decimal:
    """The position a first close may be sized for, once others' orders still working on its
    closing side (left alone: cancel_orders off) are counted; 0 sends nothing now.

    close_position cannot be sized (the server closes all): it waits for them. A submission is
    sized for what they leave. Following reads the rest once they are final.
    """
    if target.cancel_orders or position == 0:
        return position
    side = closing_side(position)
    closing = [
        o
        for o in working_before
        if o.working
        and o.side.startswith(side)
        and (o.instrument_id or "").lower() == target.instrument_id.lower()
    ]
    if not closing:
        return position
    pending = sum((o.quantity - o.filled_quantity for o in closing), Decimal(0))
    left = Decimal(0)
    if idempotent and pending < abs(position):
        left = position - pending if position > 0 else position + pending
    events.close_waits_for_orders(
        account_id=target.account_id,
        instrument=target.instrument,
        orders=[o.id for o in closing],
        quantity=str(left),
    )
    return left
