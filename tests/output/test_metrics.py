"""A metrics file in a missing directory: a warning, no directory made, the run goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support import events_emitted
from worker.inputs.targets import TargetSpec
from worker.observe import events
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Simulator


async def test_a_metrics_file_in_a_missing_directory_is_a_warning_and_no_directory_is_made(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    """`--metrics-file /nonexistent/m.prom` (a typo, or node_exporter not installed): the
    directory is the operator's to create, never made by the worker, whoever it runs as."""
    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "10")
    metrics = tmp_path / "nonexistent" / "m.prom"
    with events_emitted() as emitted:
        result = await run(
            settings_for(sim, metrics_file=metrics, follow_pause=0.02),
            RunRequest(specs=[TargetSpec(19816, "AAPL")]),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.OK  # metrics never change the flatten's exit code
    assert sim.position_quantity(19816, "AAPL") == 0
    assert sim.stats.by_route["close"] == 1
    assert not metrics.parent.exists()
    names = [e["event"] for e in emitted]
    [warning] = [e for e in emitted if e["event"] == events.METRICS_UNAVAILABLE]
    assert warning["error"] == f"the directory {metrics.parent} does not exist"
    assert warning["log_level"] == "warning"
    assert names.index(events.METRICS_UNAVAILABLE) < names.index("close_order")
    [failed] = [e for e in emitted if e["event"] == events.WRITE_FAILED]
    assert failed["what"] == "metrics"
    assert result.notices == [
        f"could not write the metrics {metrics}: its directory does not exist"
    ]
