"""A target's orders: listed in its result, journaled and logged (`note_order`, `record_orders`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from worker.api.models import Order
from worker.closing.target.value import CloseOrders, JournalRecords, Target
from worker.observe import events
from worker.results import OrderSummary, TargetResult


def note_order(
    result: TargetResult, order: Order, *, own: bool, adopted: bool = False, prior: bool = False
) -> None:
    """Add an order, or refresh the status of one already listed (own stays own).

    `prior`: created before this run sent anything for the target (an earlier run's, found by a
    look, a 409 on the first send, or adopted), so its fills so far are in the plan's read."""
    for known in result.orders:
        if known.id == order.id:
            known.status, known.filled_quantity = order.status, str(order.filled_quantity)
            known.own = known.own or own
            known.adopted = known.adopted or adopted
            if order.average_fill_price is not None:
                known.average_fill_price = str(order.average_fill_price)
            if order.limit_price is not None:
                known.limit_price = str(order.limit_price)
            return
    result.orders.append(_summary(order, own=own, adopted=adopted, prior=prior))


def _summary(
    order: Order, *, own: bool, adopted: bool = False, prior: bool = False
) -> OrderSummary:
    return OrderSummary(
        order.id,
        order.side,
        # Interned: a run holds one per order, and few distinct quantities.
        sys.intern(str(order.quantity)),
        order.status,
        sys.intern(str(order.filled_quantity)),
        own,
        order.client_order_id,
        adopted,
        prior or adopted,
        None if order.average_fill_price is None else str(order.average_fill_price),
        sys.intern(order.order_type),
        None if order.limit_price is None else str(order.limit_price),
        order.created_at,
    )


def canceled_by_close(target: Target, result: TargetResult, ended: Iterable[Order]) -> None:
    """cancel_orders: others' orders that worked on the instrument before the run's close and
    read CANCELED after it were cancelled by it (close_position cancels them at the server,
    submit_orders before its close). Each is named: an event, and the report's list."""
    if not target.cancel_orders:
        return
    for order in ended:
        if order.status != "CANCELED" or any(o.id == order.id for o in result.canceled_orders):
            continue
        result.canceled_orders = (*result.canceled_orders, _summary(order, own=False))
        events.order_canceled_by_close(
            order, account_id=target.account_id, instrument=target.instrument
        )


def record_orders(
    journal: JournalRecords,
    run_id: str,
    target: Target,
    result: TargetResult,
    shown: CloseOrders,
    *,
    reconciled: bool,
) -> None:
    """Orders of a close (in its reply, or found): listed, journaled, and logged."""
    orders, request_id, prior = shown.orders, shown.request_id, shown.prior
    for order in orders:
        # A reply may echo another instrument's order (a mixed-up reply): journaled and
        # logged below, but not this target's close.
        if (
            order.instrument_id is None
            or order.instrument_id.lower() == target.instrument_id.lower()
        ):
            note_order(result, order, own=not reconciled, prior=prior)
    journal.orders(
        run_id, target.account_id, target.instrument_id, orders, request_id, reconciled=reconciled
    )
    for order in orders:
        events.close_order(
            order,
            account_id=target.account_id,
            instrument_id=target.instrument_id,
            request_id=request_id,
            attempt=result.attempts,
            reconciled=reconciled,
            arrival=result.quote_fields(),
        )
