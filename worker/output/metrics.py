"""Prometheus text metrics for node_exporter's textfile collector, written at the end of a run.

Every metric describes the last run, so every one is a gauge, named as `promtool check metrics`
wants (no `_total`: that suffix is for counters); the file is replaced atomically with mode 0644,
and the last success's timestamp carries over a failed run. Metrics never stop a flatten nor change
its exit code: a file that cannot be written is a warning and an error event, and its directory is
never made (the textfile collector's directory is the operator's to create).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.output.report import write_atomically
from worker.output.totals import cost_summary, summarize
from worker.results import Outcome, TargetResult

_LAST_SUCCESS = "liquidator_last_success_timestamp_seconds"


@dataclass(frozen=True)
class RunFigures:
    """What one run's metrics are made of: its targets' results, its retries and looks, how long
    it took (and, once something was closing, until every position was flat), its exit code and
    when it finished (epoch seconds)."""

    results: list[TargetResult]
    retries: int
    reconciliations: int
    duration_s: float
    exit_code: int
    finished_at: float
    time_to_flat_s: float | None = None


def write_metrics(path: Path, run: RunFigures) -> None:
    results, exit_code, finished_at = run.results, run.exit_code, run.finished_at
    # Imported here, not at start-up: only a run that writes metrics pays for it.
    from prometheus_client import CollectorRegistry, generate_latest

    counts = summarize(results)
    # A run skipped because the market is closed flattened nothing: it is no success.
    succeeded = exit_code == 0 and counts[str(Outcome.MARKET_CLOSED)] == 0
    last_success = finished_at if succeeded else _previous_success(path)
    registry = CollectorRegistry()  # the run's own, not the process-wide default
    # Written in the order they are made: outcomes, costs, the run's figures, its end.
    _outcome_gauges(registry, counts)
    _cost_gauges(registry, results)
    _run_gauges(registry, run.retries, run.reconciliations, run.duration_s, run.time_to_flat_s)
    _end_gauges(registry, exit_code, finished_at, last_success)
    if not path.parent.is_dir():  # not made here: a typo'd path must not grow a directory tree
        raise FileNotFoundError(errno.ENOENT, "its directory does not exist", str(path.parent))
    # node_exporter reads it as another user; the unit's UMask=0077 would leave 0600.
    write_atomically(path, generate_latest(registry).decode("utf-8"), mode=0o644)


def _gauge(registry: Any, name: str, documentation: str, value: float) -> None:
    from prometheus_client import Gauge

    Gauge(name, documentation, registry=registry).set(value)


def _outcome_gauges(registry: Any, counts: Mapping[str, int]) -> None:
    """The targets by outcome, and those with more than one filled closing order."""
    from prometheus_client import Gauge

    positions = Gauge(
        "liquidator_positions",
        "Targets of the last run, by outcome.",
        ["outcome"],
        registry=registry,
    )
    for outcome in Outcome:  # every outcome, zeros included, so absent means "no run"
        positions.labels(outcome=str(outcome)).set(counts[str(outcome)])
    _gauge(
        registry,
        "liquidator_extra_orders",
        "Targets with more than one filled closing order.",
        counts["extra_orders"],
    )


def _run_gauges(
    registry: Any,
    retries: int,
    reconciliations: int,
    duration_s: float,
    time_to_flat_s: float | None,
) -> None:
    """The run's retries, looks and durations."""
    # Per-run values: gauges, so no `_total` (a counter's suffix; promtool refuses it on a gauge).
    _gauge(registry, "liquidator_retries", "Requests retried in the last run.", retries)
    _gauge(
        registry,
        "liquidator_reconciliations",
        "Looks at orders/positions after unknown outcomes in the last run.",
        reconciliations,
    )
    _gauge(
        registry,
        "liquidator_run_duration_seconds",
        "Wall time of the last run.",
        round(duration_s, 3),
    )
    if time_to_flat_s is not None:  # absent: the run ended before closing (market closed, refused)
        _gauge(
            registry,
            "liquidator_time_to_flat_seconds",
            "From the start of closing (the plan made, any wait over) to the end of the last run.",
            round(max(time_to_flat_s, 0.0), 3),
        )


def _end_gauges(
    registry: Any, exit_code: int, finished_at: float, last_success: float | None
) -> None:
    """How and when the last run ended, and when the last that closed everything did."""
    _gauge(
        registry,
        "liquidator_last_exit_code",
        "Exit code of the last run: 0 ok, 1 failed, 2 refused, 3 aborted.",
        exit_code,
    )
    _gauge(
        registry,
        "liquidator_last_run_timestamp_seconds",
        "When the last run finished (Unix time).",
        round(finished_at, 3),
    )
    if last_success is not None:
        _gauge(
            registry,
            _LAST_SUCCESS,
            "When the last run that closed everything finished.",
            round(last_success, 3),
        )


def _cost_gauges(registry: Any, results: list[TargetResult]) -> None:
    """What the fills were worth and cost against the arrival midpoints, in all (`account`
    "all") and per account, with the worst target's cost: only what is known is set."""
    from prometheus_client import Gauge

    names = {
        "gross_value_closed": ("liquidator_gross_value_closed", "Gross value filled (currency)."),
        "cost": ("liquidator_cost", "Cost of the fills against the arrival midpoint (currency)."),
        "cost_bps": ("liquidator_cost_bps", "That cost in bps of the fills at arrival."),
        "worst_cost": ("liquidator_worst_cost", "The costliest target's cost (currency)."),
    }
    gauges = {k: Gauge(n, d, ["account"], registry=registry) for k, (n, d) in names.items()}
    costs = cost_summary(results)
    for account, tally in [("all", costs), *costs["cost_by_account"].items()]:
        for key, gauge in gauges.items():
            value = tally[key]
            if isinstance(value, dict):  # the worst target: its cost
                value = value["cost"]
            if value is not None:
                gauge.labels(account=account).set(float(value))


def unwritable(path: Path) -> str | None:
    """Why the metrics file cannot be written, or None: as far as can be told before writing."""
    if path.is_dir():
        return "is a directory; name a file"
    directory = path.parent
    if not directory.exists():  # never made: the textfile collector's directory is not ours
        return f"the directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):  # also False on a read-only mount
        return f"the directory {directory} is not writable"
    return None


def _previous_success(path: Path) -> float | None:
    """The last success recorded in the previous file; none if it is missing or unparsable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
            if family.name == _LAST_SUCCESS and family.samples:
                return float(family.samples[0].value)
    except (OSError, ValueError):  # ValueError: not UTF-8, or not Prometheus text
        return None
    return None
