"""The events of the protected close style (CLOSE_STYLE=protected): re-priced limits, and the
escalation to market at the deadline.
"""

from __future__ import annotations

from worker.observe.events import sink
from worker.observe.events.names import (
    CLOSE_ESCALATED,
    ESCALATION_CANCEL_FAILED,
    ESCALATION_CANCEL_STUCK,
    ORDER_REPRICED,
    REPRICE_FAILED,
)

__all__ = [
    "close_escalated",
    "escalation_cancel_failed",
    "escalation_cancel_stuck",
    "order_repriced",
    "reprice_failed",
]


def order_repriced(
    *,
    account_id: int,
    instrument: str,
    order_id: str,
    client_order_id: str,
    limit_price: str,
    collar_bps: float,
    reprice: int,
    quote: str,
    request_id: str,
) -> None:
    """CLOSE_STYLE=protected: a working LIMIT order re-priced (`quote`: priced from the touch
    read now, or from the arrival quote when the snapshot was not two-sided)."""
    sink.log.info(
        ORDER_REPRICED,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        client_order_id=client_order_id,
        order_type="LIMIT",
        limit_price=limit_price,
        collar_bps=collar_bps,
        reprice=reprice,
        quote=quote,
        request_id=request_id,
    )


def reprice_failed(
    *,
    account_id: int,
    instrument: str,
    order_id: str,
    limit_price: str,
    error: str,
    request_id: str | None,
) -> None:
    """A re-price whose outcome is unknown: it may apply late; the next tick replaces again."""
    sink.log.warning(
        REPRICE_FAILED,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        order_type="LIMIT",
        limit_price=limit_price,
        error=error,
        request_id=request_id,
    )


def close_escalated(
    *,
    account_id: int,
    instrument: str,
    order_id: str,
    remaining: str,
    reason: str,
    request_id: str | None,
    limit_price: str | None = None,
) -> None:
    """CLOSE_STYLE=protected: the limit was cancelled (`reason`: deadline or moc_cutoff); once it
    reads final, what it left (`remaining` as last read) goes at market (or at the close).
    `limit_price`: the limit's, as last set."""
    sink.log.warning(
        CLOSE_ESCALATED,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        order_type="LIMIT",
        limit_price=limit_price,
        remaining=remaining,
        reason=reason,
        request_id=request_id,
    )


def escalation_cancel_failed(
    *,
    account_id: int,
    instrument: str,
    order_id: str,
    error: str,
    request_id: str | None,
    limit_price: str | None = None,
) -> None:
    """The escalation's cancel got no answer: it is sent again next tick (cancel is idempotent)."""
    sink.log.warning(
        ESCALATION_CANCEL_FAILED,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        order_type="LIMIT",
        limit_price=limit_price,
        error=error,
        request_id=request_id,
    )


def escalation_cancel_stuck(
    *, account_id: int, instrument: str, order_id: str, status: str, cancels: int
) -> None:
    """CLOSE_STYLE=protected: an escalated limit still read working (`status`) after `cancels`
    cancels: it may not be cancellable; its rest waits while it can fill."""
    sink.log.error(
        ESCALATION_CANCEL_STUCK,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        status=status,
        cancels=cancels,
    )
