"""Batches under unknown outcomes: a batch applied with its reply lost, a 5xx after applying, a
gateway that applies late. The same batch is sent again under the same ids: what exists is
refused (409) and found, never doubled. Counted at the server."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests.support import liquidate as liquidate_with
from tests.support import seed_held as seed
from tests.support import the_truth
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode
from worker.simulator import Faults, Simulator

liquidate = functools.partial(liquidate_with, close_via="submit_orders")


@pytest.mark.parametrize(
    "fault",
    [
        {"p_drop_after": 1.0},  # applied, the connection dropped before the reply
        {"p_500_after": 1.0},  # applied, then a 500
        {"p_apply_late": 1.0, "apply_late_s": 0.5},  # applied after the client gave up
    ],
    ids=["dropped-after", "500-after", "late-gateway"],
)
async def test_an_unknown_outcome_resends_the_same_ids_and_nothing_is_doubled(
    sim: Simulator, settings_for: Any, tmp_path: Path, fault: dict[str, Any]
) -> None:
    keys = seed(sim, 82001, [10 + k if k % 2 else -(10 + k) for k in range(25)])
    faults = Faults(**fault)
    faults.max_faults = 1  # the first batch only; the re-send meets a sound server
    sim.config.faults = {"submit": faults}
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(82001, None)], request_timeout=0.2
    )
    assert result.exit_code == ExitCode.OK, doc["summary"]
    assert sim.stats.submit_batch_sizes[0] == 25
    assert sum(sim.stats.faults_injected.values()) == 1
    assert sim.stats.by_route["submit"] >= 2  # the same batch, sent again
    # Applied first: the re-sent ids were refused as taken (409), looked up and found. Applied
    # late: the re-send was booked and the late copy refused. Never a second order.
    if "p_apply_late" not in fault:
        assert sim.stats.status_counts[409] >= 1
    the_truth(sim, doc, keys, one_order=True, flat=True, client_ids=True)
    assert sim.crossed_zero() == []
