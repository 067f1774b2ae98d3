"""Prometheus text metrics for node_exporter's textfile collector, written at the end of a run.

The file is replaced atomically (write, then rename), so the collector never reads half of it.
The last successful run's timestamp is carried over from the previous file when this run failed,
so an alert on "no success today" keeps working.
"""

from __future__ import annotations

import re
from pathlib import Path

from worker.outcomes import Outcome
from worker.report import TargetResult, summarize, write_atomically

_LAST_SUCCESS = "liquidator_last_success_timestamp_seconds"
_LAST_SUCCESS_LINE = re.compile(rf"^{_LAST_SUCCESS}\s+([0-9.eE+]+)\s*$", re.MULTILINE)


def write_metrics(
    path: Path,
    *,
    results: list[TargetResult],
    retries: int,
    reconciliations: int,
    duration_s: float,
    exit_code: int,
    finished_at: float,
) -> None:
    counts = summarize(results)
    # A run skipped because the market is closed flattened nothing: it is no success.
    succeeded = exit_code == 0 and counts[str(Outcome.MARKET_CLOSED)] == 0
    last_success = finished_at if succeeded else _previous_success(path)
    lines = [
        "# HELP liquidator_positions Targets of the last run, by outcome.",
        "# TYPE liquidator_positions gauge",
        *(
            f'liquidator_positions{{outcome="{o}"}} {counts[str(o)]}'
            for o in Outcome  # every outcome, zeros included, so absent means "no run"
        ),
        "# HELP liquidator_extra_orders Targets with more than one filled closing order.",
        "# TYPE liquidator_extra_orders gauge",
        f"liquidator_extra_orders {counts['extra_orders']}",
        "# HELP liquidator_retries_total Requests retried in the last run.",
        "# TYPE liquidator_retries_total counter",
        f"liquidator_retries_total {retries}",
        "# HELP liquidator_reconciliations_total Looks at orders/positions after unknown outcomes.",
        "# TYPE liquidator_reconciliations_total counter",
        f"liquidator_reconciliations_total {reconciliations}",
        "# HELP liquidator_run_duration_seconds Wall time of the last run.",
        "# TYPE liquidator_run_duration_seconds gauge",
        f"liquidator_run_duration_seconds {duration_s:.3f}",
        "# HELP liquidator_last_exit_code Exit code of the last run: 0 ok, 1 failed, 3 aborted.",
        "# TYPE liquidator_last_exit_code gauge",
        f"liquidator_last_exit_code {exit_code}",
        "# HELP liquidator_last_run_timestamp_seconds When the last run finished (Unix time).",
        "# TYPE liquidator_last_run_timestamp_seconds gauge",
        f"liquidator_last_run_timestamp_seconds {finished_at:.3f}",
    ]
    if last_success is not None:
        lines += [
            f"# HELP {_LAST_SUCCESS} When the last run that closed everything finished.",
            f"# TYPE {_LAST_SUCCESS} gauge",
            f"{_LAST_SUCCESS} {last_success:.3f}",
        ]
    # Readable by node_exporter, which runs as another user.
    write_atomically(path, "\n".join(lines) + "\n", mode=0o644)


def _previous_success(path: Path) -> float | None:
    try:
        match = _LAST_SUCCESS_LINE.search(path.read_text(encoding="utf-8"))
    except OSError:
        return None
    return float(match.group(1)) if match else None
