"""The events of a run as a whole: its start and end, the plan, the stop, the reads and
pace it reports, and the files it could not write.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from worker.observe.events import sink
from worker.observe.events.names import (
    GUARD_OVERRIDDEN,
    INTERNAL_ERROR,
    MARKET_CLOSED,
    METRICS_UNAVAILABLE,
    MULTIPLIERS_UNAVAILABLE,
    PACE_CHANGED,
    PAGINATION_STOPPED,
    PLAN_POSITION,
    PLAN_READY,
    PREVIOUS_RUN_FOUND,
    QUOTES_UNAVAILABLE,
    READ_RETRY,
    RUN_ABORTED,
    RUN_FINISHED,
    RUN_STARTED,
    STOP_REQUESTED,
    WRITE_FAILED,
)

__all__ = [
    "guard_overridden",
    "internal_error",
    "market_closed",
    "metrics_unavailable",
    "multipliers_unavailable",
    "pace_changed",
    "pagination_stopped",
    "plan_position",
    "plan_ready",
    "previous_run_found",
    "quotes_unavailable",
    "read_retry",
    "run_aborted",
    "run_finished",
    "run_started",
    "stop_requested",
    "write_failed",
]


def run_started(*, base_url: str, dry_run: bool, concurrency: int, rate_limit: float) -> None:
    sink.log.info(
        RUN_STARTED,
        base_url=base_url,
        dry_run=dry_run,
        concurrency=concurrency,
        rate_limit=rate_limit,
    )


def run_finished(
    *,
    exit_code: int,
    aborted: str | None,
    seconds: float,
    summary: Mapping[str, int],
    costs: Mapping[str, Any] | None = None,
) -> None:
    """`summary`: targets by outcome, as `worker.output.totals.summarize` counts them;
    `costs`: `worker.output.totals.cost_summary` (gross value closed, cost, the worst)."""
    sink.log.info(
        RUN_FINISHED,
        exit_code=exit_code,
        aborted=aborted,
        seconds=round(seconds, 3),
        **summary,
        **(costs or {}),
    )


def run_aborted(reason: str, *, declined: bool = False) -> None:
    """`declined`: the operator answered no at the prompt, a choice rather than an error, so
    the line is at info level."""
    if declined:
        sink.log.info(RUN_ABORTED, reason=reason)
    else:
        sink.log.error(RUN_ABORTED, reason=reason)


def plan_ready(
    *,
    positions: int,
    already_settled: int,
    failed: int,
    accounts: int,
    guarded: int = 0,
    close_style: str = "market",
    not_held: int = 0,
    requests: dict[str, dict[str, object]] | None = None,
) -> None:
    """`already_settled`: targets that ended at planning without a failure (already flat, or
    not held); `failed`: those that failed there (each also named by a `close_failed`);
    `guarded`: those a guard holds back, not sent (each also a `target_settled`, outcome
    `guarded`, with why); `not_held`: named instruments their account does not hold (each a
    `target_settled`, outcome `not_held`, naming what it holds on them); `close_style`:
    CLOSE_STYLE, market or protected; `requests`: per style, the requests the plan needs and
    their seconds at RATE_LIMIT (protected: `fits`, and `advice` when not)."""
    sink.log.info(
        PLAN_READY,
        positions=positions,
        already_settled=already_settled,
        failed=failed,
        accounts=accounts,
        guarded=guarded,
        close_style=close_style,
        not_held=not_held,
        requests=requests or {},
    )


def plan_position(
    *,
    account_id: int,
    instrument: str,
    instrument_id: str,
    symbol: str,
    instrument_type: str,
    side: str,
    quantity: str,
    market_value: str,
    multiplier: str | None = "1",
) -> None:
    """A position a run would close: a dry run's plan, for anyone reading JSON. `multiplier`:
    its contract multiplier (`1` for a share; None: an option's could not be learned)."""
    sink.log.info(
        PLAN_POSITION,
        account_id=account_id,
        instrument=instrument,
        instrument_id=instrument_id,
        symbol=symbol,
        instrument_type=instrument_type,
        side=side,
        quantity=quantity,
        market_value=market_value,
        multiplier=multiplier,
    )


def previous_run_found(*, job: str, positions_touched: int, settle_s: float) -> None:
    """An earlier run today sent closes on this run's accounts: waited out before the plan."""
    sink.log.info(
        PREVIOUS_RUN_FOUND,
        job=job,
        positions_touched=positions_touched,
        settle_s=round(settle_s, 3),
    )


def stop_requested(grace_s: float) -> None:
    sink.log.warning(STOP_REQUESTED, grace_s=grace_s)


def market_closed(*, reason: str, request_id: str | None) -> None:
    sink.log.info(MARKET_CLOSED, reason=reason, request_id=request_id)


def internal_error(err: BaseException) -> None:
    """A fault in the worker itself (not a target's outcome); the run stops as for SIGTERM."""
    sink.log.error(
        INTERNAL_ERROR,
        error=f"{type(err).__name__}: {err}",
        traceback="".join(traceback.format_exception(err)),
    )


def quotes_unavailable(*, instruments: int, error: str) -> None:
    """Snapshots that could not be read: these instruments have no arrival price, and the
    guards that need a quote cannot judge them (docs/prices.md)."""
    sink.log.warning(QUOTES_UNAVAILABLE, instruments=instruments, error=error)


def multipliers_unavailable(*, instruments: int, error: str) -> None:
    """Option contracts that could not be read: these instruments' multipliers are unknown, so
    their value and cost are, and a guard holds them (docs/prices.md)."""
    sink.log.warning(MULTIPLIERS_UNAVAILABLE, instruments=instruments, error=error)


def guard_overridden(*, account_id: int, instrument: str, why: str) -> None:
    """--force: a target a guard would have held is sent anyway."""
    sink.log.warning(GUARD_OVERRIDDEN, account_id=account_id, instrument=instrument, why=why)


def read_retry(*, what: str, attempt: int, reason: str, wait_s: float) -> None:
    sink.log.warning(READ_RETRY, what=what, attempt=attempt, reason=reason, wait_s=round(wait_s, 3))


def pace_changed(old: float | None, new: float, reason: str) -> None:
    sink.log.warning(
        PACE_CHANGED,
        old_rate=None if old is None else round(old, 2),
        new_rate=round(new, 2),
        reason=reason,
    )


def pagination_stopped(*, what: str, reason: str, pages: int, items: int) -> None:
    sink.log.warning(PAGINATION_STOPPED, what=what, reason=reason, pages=pages, items=items)


def write_failed(*, what: str, path: str, error: str) -> None:
    sink.log.error(WRITE_FAILED, what=what, path=path, error=error)


def metrics_unavailable(*, path: str, error: str) -> None:
    """At the start: the metrics file cannot be written. The run goes on, its exit code its
    own; the write is still tried at the end (`write_failed` if it fails then)."""
    sink.log.warning(METRICS_UNAVAILABLE, path=path, error=error)
