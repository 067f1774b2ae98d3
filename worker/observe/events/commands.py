"""The events of `liquidator status` and `liquidator cancel`: what was read, and what was
cancelled.
"""

from __future__ import annotations

from worker.observe.events import sink
from worker.observe.events.names import (
    CANCEL_FAILED,
    ORDER_CANCEL_REQUESTED,
    ORDER_CANCELED,
    STATUS_ACCOUNT,
    STATUS_ORDER,
    STATUS_POSITION,
)
from worker.observe.events.orders import Order, order_fields

__all__ = [
    "cancel_failed",
    "order_cancel_requested",
    "order_canceled",
    "status_account",
    "status_order",
    "status_position",
]


def status_position(
    *,
    account_id: int,
    instrument: str,
    instrument_id: str,
    symbol: str,
    instrument_type: str,
    side: str,
    quantity: str,
    market_value: str,
) -> None:
    sink.log.info(
        STATUS_POSITION,
        account_id=account_id,
        instrument=instrument,
        instrument_id=instrument_id,
        symbol=symbol,
        instrument_type=instrument_type,
        side=side,
        quantity=quantity,
        market_value=market_value,
    )


def status_order(order: Order, *, own: bool) -> None:
    """`own`: the job's own order (a client id today's job derives), as a rerun would adopt."""
    sink.log.info(STATUS_ORDER, **order_fields(order), own=own)


def status_account(
    *, account_id: int, positions: int, working_orders: int, own_orders: int, error: str | None
) -> None:
    (sink.log.error if error else sink.log.info)(
        STATUS_ACCOUNT,
        account_id=account_id,
        positions=positions,
        working_orders=working_orders,
        own_orders=own_orders,
        error=error,
    )


def order_cancel_requested(order: Order, *, own: bool, request_id: str) -> None:
    """`liquidator cancel`: the server took the cancel (the order may fill until it ends)."""
    sink.log.info(ORDER_CANCEL_REQUESTED, **order_fields(order), own=own, request_id=request_id)


def order_canceled(order: Order, *, own: bool, request_id: str) -> None:
    """No longer working: `status` says how it ended (CANCELED, or FILLED before the cancel)."""
    sink.log.info(ORDER_CANCELED, **order_fields(order), own=own, request_id=request_id)


def cancel_failed(order: Order, *, own: bool, error: str, request_id: str | None) -> None:
    sink.log.error(
        CANCEL_FAILED, **order_fields(order), own=own, error=error, request_id=request_id
    )
