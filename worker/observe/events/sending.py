"""The events of sending a close: the order, its retries and failure, batches, the cancels
before it, and the job's own orders adopted.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from worker.observe.events import sink
from worker.observe.events.names import (
    ADOPTION_SKIPPED,
    BATCH_SIZE_LOWERED,
    BATCH_SUBMITTED,
    CANCEL_REQUESTED,
    CLOSE_FAILED,
    CLOSE_ORDER,
    CLOSE_RETRY,
    ORDER_ADOPTED,
    ORDER_CANCELED_BY_CLOSE,
    ORDERS_CANCELED,
)
from worker.observe.events.orders import Order, order_fields, price_text
from worker.observe.events.sink import target_fields

__all__ = [
    "adoption_skipped",
    "batch_size_lowered",
    "batch_submitted",
    "cancel_requested",
    "close_failed",
    "close_order",
    "close_retry",
    "order_adopted",
    "order_canceled_by_close",
    "orders_canceled",
]


def close_order(
    order: Order,
    *,
    instrument_id: str,
    request_id: str,
    attempt: int,
    reconciled: bool = False,
    account_id: int | None = None,
    arrival: Mapping[str, Any] | None = None,
) -> None:
    """`account_id` (and `instrument`) from `bound_target` when not passed. `arrival`: the
    target's arrival quote as the report shows it (`TargetResult.quote_fields`)."""
    fields: MutableMapping[str, Any] = {
        **target_fields(account_id),
        "instrument_id": order.instrument_id or instrument_id,
        "symbol": order.symbol,
        "order_id": order.id,
        "client_order_id": order.client_order_id,
        "side": order.side,
        "quantity": str(order.quantity),
        "order_type": order.order_type,
        "limit_price": price_text(order.limit_price),
        "status": order.status,
        "request_id": request_id,
        "attempt": attempt,
    }
    if order.time_in_force is not None:
        fields["time_in_force"] = order.time_in_force
    if reconciled:
        fields["reconciled"] = True
    fields["average_fill_price"] = (
        None if order.average_fill_price is None else str(order.average_fill_price)
    )
    if arrival is not None:
        for name in ("arrival_bid", "arrival_ask", "arrival_midpoint", "arrival_age_s"):
            fields[name] = arrival.get(name)
        if "price_note" in arrival:
            fields["price_note"] = arrival["price_note"]
    sink.info_fast(CLOSE_ORDER, fields)


def close_retry(
    *,
    attempt: int,
    reason: str,
    wait_s: float,
    request_id: str | None,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    sink.log.warning(
        CLOSE_RETRY,
        **target_fields(account_id, instrument),
        attempt=attempt,
        reason=reason,
        wait_s=round(wait_s, 3),
        request_id=request_id,
    )


def close_failed(
    *,
    status: int | None,
    error: str,
    request_id: str | None,
    attempts: int,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    sink.log.error(
        CLOSE_FAILED,
        **target_fields(account_id, instrument),
        status=status,
        error=error,
        request_id=request_id,
        attempts=attempts,
    )


def batch_submitted(*, account_id: int, orders: int, listed: int, request_id: str) -> None:
    """One POST of `orders` closing orders was answered 2xx, its reply listing `listed`."""
    sink.log.info(
        BATCH_SUBMITTED,
        account_id=account_id,
        orders=orders,
        listed=listed,
        request_id=request_id,
    )


def batch_size_lowered(*, size: int, was: int, request_id: str | None) -> None:
    """A batch was refused as too large: batches are at most `size` orders for the run."""
    sink.log.warning(BATCH_SIZE_LOWERED, size=size, was=was, request_id=request_id)


def cancel_requested(
    *, account_id: int, instruments: int, orders: int, request_id: str | None
) -> None:
    """submit_orders with cancel_orders: the open orders on `instruments` of the account's
    targets were asked to cancel (`orders` 0: there were none, the server answered 404)."""
    sink.log.info(
        CANCEL_REQUESTED,
        account_id=account_id,
        instruments=instruments,
        orders=orders,
        request_id=request_id,
    )


def orders_canceled(*, account_id: int, seconds: float, polls: int) -> None:
    """None of the cancelled orders is working any more: the closes may be submitted."""
    sink.log.info(ORDERS_CANCELED, account_id=account_id, seconds=round(seconds, 3), polls=polls)


def order_adopted(order: Order, *, account_id: int, instrument: str, request_id: str) -> None:
    """A rerun found the job's own order still working (by its client id): it is followed as
    this run's close, neither cancelled nor sent again."""
    sink.log.info(
        ORDER_ADOPTED,
        account_id=account_id,
        instrument=instrument,
        instrument_id=order.instrument_id,
        order_id=order.id,
        client_order_id=order.client_order_id,
        side=order.side,
        quantity=str(order.quantity),
        filled_quantity=str(order.filled_quantity),
        order_type=order.order_type,
        limit_price=price_text(order.limit_price),
        time_in_force=order.time_in_force,
        status=order.status,
        request_id=request_id,
    )


def adoption_skipped(
    *, account_id: int, reason: str, request_id: str | None, instrument: str | None = None
) -> None:
    """The job's working orders were not adopted: the account's could not be read, or they
    would take the position past zero. Such orders are cancelled first, as any resting order."""
    sink.log.warning(
        ADOPTION_SKIPPED,
        **target_fields(account_id, instrument),
        reason=reason,
        request_id=request_id,
    )


def order_canceled_by_close(order: Order, *, account_id: int, instrument: str) -> None:
    """cancel_orders: another's order working on the instrument before the run's close, read
    CANCELED after it: the close cancelled it (as the report's `canceled_orders` lists)."""
    fields = {**order_fields(order), "account_id": account_id, "instrument": instrument}
    sink.log.warning(ORDER_CANCELED_BY_CLOSE, **fields)
