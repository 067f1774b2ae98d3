"""Evidence and residue: is an order the worker's close, and may a close be sent for the rest?

Decisions only, from what the account's listings showed; `look` is the one read it makes.

An order found at the server is the worker's close only with evidence: it did not exist in the
orders snapshot taken before the fan-out (its identity, not its timestamp: order timestamps may
run behind the server's clock), it is a market order closing the position as it stood when the
attempt was sent, and its quantity matches.
Without evidence nothing settles the target as closed: no close is sent while any order on the
instrument can still fill, and the position's state decides (`follow_step`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum

from worker.api.models import Order
from worker.api.reads import Reader
from worker.closing.target import Target


class Verdict(Enum):
    CLOSED = "closed"  # an order with evidence of being this attempt's close exists
    FLAT = "flat"  # no such order, and the position is gone or zero
    BUSY = "busy"  # no evidence, but an order on the instrument can still fill: send nothing
    OPEN = "open"  # no order working, no evidence, position open: a close may be sent


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    orders: list[Order]  # the orders that are evidence (CLOSED), else empty
    request_id: str  # of the look-up that decided the verdict
    position: Decimal | None = None  # signed quantity read, when the positions were read


def closing_side(quantity: Decimal) -> str:
    return "SELL" if quantity > 0 else "BUY"


def is_our_close(
    order: Order,
    *,
    instrument_id: str,
    reference: Decimal,
    preexisting: Collection[str] | None,
) -> bool:
    """Evidence that `order` is the close sent while the position stood at `reference`.

    `preexisting` None: no snapshot was read, so no order can be told from an older one.
    """
    return (
        preexisting is not None
        and reference != 0
        and order.id not in preexisting
        and order.order_type == "MARKET"
        and order.side == closing_side(reference)
        and order.quantity == abs(reference)
        and not order.dead
        and (order.instrument_id is None or order.instrument_id.lower() == instrument_id.lower())
    )


async def look(
    reader: Reader,
    target: Target,
    since: datetime,
    *,
    reference: Decimal,
    preexisting: Collection[str] | None,
) -> Finding:
    """What an unanswered close did. Raises `ApiError` when the reads fail even after retries.

    Every order on the instrument that can still fill is listed by status (any age, whatever its
    timestamp says), and the instrument's orders without a time bound (a close that filled
    already): one not in the snapshot is told apart by identity, never by a window on the
    local or the order's clock. `since` is kept for callers; it bounds nothing here.
    """
    working, _ = await reader.working_orders(target.account_id, [target.instrument_id])
    listed, order_request_ids = await reader.orders(target.account_id, [target.instrument_id], None)
    orders = list({o.id: o for o in [*listed, *working]}.values())
    ours = [
        o
        for o in orders
        if is_our_close(
            o,
            instrument_id=target.instrument_id,
            reference=reference,
            preexisting=preexisting,
        )
    ]
    if ours:
        return Finding(Verdict.CLOSED, ours, order_request_ids[-1])
    if any(o.working for o in orders):
        return Finding(Verdict.BUSY, [], order_request_ids[-1])
    positions, position_request_ids = await reader.positions(
        target.account_id, [target.instrument_id]
    )
    quantity = sum(
        (p.quantity for p in positions if p.instrument_id.lower() == target.instrument_id.lower()),
        Decimal(0),
    )
    verdict = Verdict.OPEN if quantity != 0 else Verdict.FLAT
    return Finding(verdict, [], position_request_ids[-1], quantity)


class Step(Enum):
    """What following does next for one target, after one read of its account."""

    FLAT = "flat"  # read zero, and nothing sent during the run can still move it
    WAIT = "wait"  # an order can still fill, or a residue close must wait: read again later
    RESIDUE = "residue"  # open, nothing working: send a close for the rest
    STUCK = "stuck"  # open, nothing working, no residue close left: wait for the timeout


def follow_step(
    position: Decimal,
    orders: Sequence[Order],
    *,
    residue_sent: int,
    max_residue: int,
    may_send: bool,
) -> Step:
    """Decide from the position and the instrument's orders as one poll read them.

    Flat counts only when no order on the instrument can still fill, whoever placed it: one
    still working may reopen or flip the position. A residue close needs the same.
    """
    if any(o.working for o in orders):
        return Step.WAIT
    if position == 0:
        return Step.FLAT
    if not may_send:
        return Step.WAIT
    if residue_sent >= max_residue:
        return Step.STUCK
    return Step.RESIDUE
