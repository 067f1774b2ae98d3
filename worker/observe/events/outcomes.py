"""The events of following a target to its outcome: settled, priced, residue closes, the
ledger's sizing, still open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.observe.events import sink
from worker.observe.events.names import (
    CLOSE_SIZED_BY_LEDGER,
    CLOSE_WAITS_FOR_ORDERS,
    ORDERS_SNAPSHOT,
    RESIDUE_CLOSE,
    RESIDUE_CLOSE_FAILED,
    RESIDUE_CLOSE_SENT,
    TARGET_COST,
    TARGET_NOT_FLAT,
    TARGET_SETTLED,
)
from worker.observe.events.sink import target_fields

__all__ = [
    "close_sized_by_ledger",
    "close_waits_for_orders",
    "orders_snapshot",
    "residue_close",
    "residue_close_failed",
    "residue_close_sent",
    "target_cost",
    "target_not_flat",
    "target_settled",
]


def target_settled(
    *,
    outcome: str,
    why: str,
    account_id: int | None = None,
    instrument: str | None = None,
    prices: Mapping[str, Any] | None = None,
) -> None:
    """A target that ended without a close order of its own: flat, skipped, guarded, or
    reconciled. `prices`: its price fields (`TargetResult.price_fields`)."""
    sink.log.info(
        TARGET_SETTLED,
        **target_fields(account_id, instrument),
        outcome=outcome,
        why=why,
        **(prices or {}),
    )


def target_cost(
    *, outcome: str, prices: Mapping[str, Any], account_id: int, instrument: str
) -> None:
    """A target whose closing orders filled: its arrival quote, average fill and cost."""
    fields = {"account_id": account_id, "instrument": instrument, "outcome": outcome, **prices}
    sink.info_fast(TARGET_COST, fields)


def residue_close(
    *,
    remaining_quantity: str,
    residue: int,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """A close for what is left: the position is open and no order on it can still fill."""
    sink.log.warning(
        RESIDUE_CLOSE,
        **target_fields(account_id, instrument),
        remaining_quantity=remaining_quantity,
        residue=residue,
    )


def residue_close_sent(
    *,
    residue: int,
    orders: list[str],
    request_id: str | None,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """A residue close was answered with its orders."""
    sink.log.info(
        RESIDUE_CLOSE_SENT,
        **target_fields(account_id, instrument),
        residue=residue,
        orders=orders,
        request_id=request_id,
    )


def residue_close_failed(
    *,
    residue: int,
    outcome: str,
    error: str,
    request_id: str | None,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """A residue close got no answer that shows its orders. `outcome`: unknown (it may yet
    apply), refused, not_sent, or nothing_created (a look proved it changed nothing: it no
    longer counts against MAX_RESIDUE_CLOSES)."""
    sink.log.warning(
        RESIDUE_CLOSE_FAILED,
        **target_fields(account_id, instrument),
        residue=residue,
        outcome=outcome,
        error=error,
        request_id=request_id,
    )


def close_waits_for_orders(
    *,
    orders: list[str],
    quantity: str,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """Working orders of others on the closing side (cancel_orders off) were counted before the
    close was sized: `quantity` is what is sent now (0: nothing until they are final). Also 0
    on a rerun for the job's earlier orders that worked at its takeover read and were not
    adopted: following closes what they left."""
    sink.log.warning(
        CLOSE_WAITS_FOR_ORDERS,
        **target_fields(account_id, instrument),
        orders=orders,
        quantity=quantity,
    )


def close_sized_by_ledger(
    *, account_id: int, instrument: str, planned: str, quantity: str, fills: list[str]
) -> None:
    """The ledger shows fills on the instrument (`fills`: their ids) that the plan's positions
    read may not hold yet: the first order is sized for `quantity`, never past zero whichever
    it holds (0: nothing now; following sends for the rest once a read is confirmed)."""
    sink.log.warning(
        CLOSE_SIZED_BY_LEDGER,
        **target_fields(account_id, instrument),
        planned=planned,
        quantity=quantity,
        fills=fills,
    )


def target_not_flat(
    *,
    remaining_quantity: str | None,
    error: str,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """Following ended (FLAT_TIMEOUT, or a stop) with the position still open or unread."""
    sink.log.error(
        TARGET_NOT_FLAT,
        **target_fields(account_id, instrument),
        remaining_quantity=remaining_quantity,
        error=error,
    )


def orders_snapshot(*, account_id: int, orders: int, request_id: str | None) -> None:
    """The orders an account held before the fan-out: none of them is a close of this run."""
    sink.log.info(ORDERS_SNAPSHOT, account_id=account_id, orders=orders, request_id=request_id)
