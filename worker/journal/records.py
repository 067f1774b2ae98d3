"""The records a `Journal` queues besides intents, column by column in `schema.TABLES`' order,
and the statements that withdraw unused intents and finish a run. It builds rows; it never
writes them (the `Journal`'s group commit does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.api.models import Order
from worker.results import TargetResult


def order_row(
    o: Order, run_id: str, account_id: int, instrument_id: str, request_id: str, reconciled: bool
) -> tuple[Any, ...]:
    """An `orders` row: one order as a read or a reply showed it."""
    return (
        o.id,
        run_id,
        account_id,
        o.instrument_id or instrument_id,
        o.side,
        str(o.quantity),
        o.status,
        o.created_at.isoformat(),
        request_id,
        int(reconciled),
    )


def outcome_row(
    run_id: str, result: TargetResult, quantity: str | None, scrub: Callable[[str], str]
) -> tuple[Any, ...]:
    """A `targets` row: a target's outcome, its error passed through `scrub`."""
    return (
        run_id,
        result.account_id,
        result.instrument,
        result.instrument_id,
        result.symbol,
        quantity,
        str(result.outcome) if result.outcome else None,
        None if result.error is None else scrub(result.error),
        result.attempts,
    )


def withdrawals(m: str) -> list[str]:
    """The statements that withdraw an intent recorded ahead and never sent (`m`: the store's
    parameter mark)."""
    return [
        f"DELETE FROM {table} WHERE run_id = {m} AND account_id = {m}"
        f" AND instrument_id = {m} AND attempt = {m}"
        for table in ("attempts", "client_ids")
    ]


def finish_statement(m: str) -> str:
    """The statement that records a run's end and exit code."""
    return f"UPDATE runs SET finished_at = {m}, exit_code = {m} WHERE run_id = {m}"
