"""A target and the one owner of its result: every change to a `TargetResult` is made in this
package, and callers reach it here (`from worker.closing import target as life`).

Each transition sets outcome, fate and error together, emits its event, queues its journal record
and returns what happens next (`Next`) for the caller to pass on. Nothing here sends a request or
decides whether to retry, and no other module assigns a result's fields.

    value      `Target`, `Next`, `CloseOrders`, and the journal records a transition queues
    orders     a target's orders: listed in its result, journaled, logged
    in_flight  sent, failed to send, adopted, looked for, found; the position read while followed
    outcomes   the transitions that settle it: planned, failed, stopped, flat, not flat
    settling   the one place an outcome is set, and the price of what closed it
"""

from worker.closing.target.in_flight import (
    adopted,
    busy,
    closed_earlier,
    earlier_orders,
    found,
    looked,
    not_sent,
    position_read,
    read_flat,
    residue_begun,
    residue_uncounted,
    residue_unknown,
    send_failed,
    sending,
    sent,
    stopped_unsent,
)
from worker.closing.target.orders import canceled_by_close, note_order, record_orders
from worker.closing.target.outcomes import (
    cut_off,
    failed,
    flat,
    guarded,
    market_closed,
    next_of,
    not_flat,
    not_held,
    planned_flat,
    skipped,
    stopped,
    unknown_instrument,
    unreadable,
)
from worker.closing.target.value import NOT_STARTED, CloseOrders, Next, Target

__all__ = [
    "NOT_STARTED",
    "CloseOrders",
    "Next",
    "Target",
    "adopted",
    "busy",
    "canceled_by_close",
    "closed_earlier",
    "cut_off",
    "earlier_orders",
    "failed",
    "flat",
    "found",
    "guarded",
    "looked",
    "market_closed",
    "next_of",
    "not_flat",
    "not_held",
    "not_sent",
    "note_order",
    "planned_flat",
    "position_read",
    "read_flat",
    "record_orders",
    "residue_begun",
    "residue_uncounted",
    "residue_unknown",
    "send_failed",
    "sending",
    "sent",
    "skipped",
    "stopped",
    "stopped_unsent",
    "unknown_instrument",
    "unreadable",
]
