"""Look at the account to learn what an unanswered close did, before anything is sent again.

The look asks two questions, in this order: did a closing order for this position appear since
the attempt began (allowing for clock skew)? Is the position still open? Only "no order, still
open" allows a new close. A resting order placed by someone else is not mistaken for our close:
a close is a MARKET order on the closing side, created after the attempt began.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from worker.models import Order
from worker.plan import Target
from worker.reads import Reader


class Verdict(Enum):
    CLOSED = "closed"  # a closing order exists (working or filled): the close happened
    FLAT = "flat"  # no closing order, and the position is gone or zero
    OPEN = "open"  # no closing order, position still open: safe to send a close


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    orders: list[Order]
    request_id: str  # of the look-up that decided the verdict


def is_our_close(order: Order, target: Target, since: datetime) -> bool:
    """A live or filled market order on the closing side, created since the attempt began."""
    return (
        order.side == target.closing_side
        and order.order_type == "MARKET"
        and not order.dead
        and order.created_at >= since
        and order.instrument_id in (None, target.instrument_id)
    )


async def look(reader: Reader, target: Target, since: datetime) -> Finding:
    """Raises `ApiError` when the reads fail even after their own retries."""
    reader.tally.looks += 1
    orders, order_request_ids = await reader.orders(
        target.account_id, [target.instrument_id], since
    )
    ours = [o for o in orders if is_our_close(o, target, since)]
    if ours:
        return Finding(Verdict.CLOSED, ours, order_request_ids[-1])
    positions, position_request_ids = await reader.positions(
        target.account_id, [target.instrument_id]
    )
    still_open = any(p.instrument_id == target.instrument_id and p.quantity != 0 for p in positions)
    return Finding(Verdict.OPEN if still_open else Verdict.FLAT, [], position_request_ids[-1])
