"""A named instrument the account does not hold is `not_held`, naming what the account holds on
it; FAIL_ON_NOT_HELD makes it fail the run. `already_flat` stays for what the account held: a
position an earlier run of today's job closed is not "not held" on the rerun."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import clean_env, run_cli
from worker.simulator import Simulator

PUT = "SPY   261218P00600000"


def _env(sim: Simulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    settings = {
        "LIQUIDATOR_API_KEY": sim.config.api_key,
        "LIQUIDATOR_LOG_FORMAT": "json",
        "LIQUIDATOR_STATE_DIR": str(tmp_path / "state"),
        "LIQUIDATOR_FOLLOW_PAUSE": "0.02",
    }
    return clean_env(**{**settings, **extra})


def _settled(out: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {e["instrument"]: e for e in lines if e["event"] == "target_settled"}


def _spy_option_account(sim: Simulator) -> None:
    sim.config.fill_delay_s = 0.05
    sim.add_position(19818, PUT, "-5", price="27.04", instrument_type="OPTION", underlying="SPY")
    sim.add_position(19818, "NVDA", "10")


@pytest.mark.parametrize("command", [("check",), ("run", "--dry-run", "--yes")])
async def test_a_named_underlying_held_only_as_an_option_is_not_held_and_names_the_option(
    sim: Simulator, tmp_path: Path, command: tuple[str, ...]
) -> None:
    _spy_option_account(sim)
    report = tmp_path / "report.json"
    args = (*command, "--base-url", sim.base_url, "--position", "19818:SPY")
    code, out = await run_cli(*args, "--report", str(report), env=_env(sim, tmp_path))
    assert code == 0, out
    spy = _settled(out)["SPY"]
    assert spy["outcome"] == "not_held"
    assert spy["why"] == "not held; the account holds SPY 261218P00600000 (-5)"
    [result] = json.loads(report.read_text())["results"]
    assert result["outcome"] == "not_held"
    assert result["error"] == spy["why"]
    assert result["orders"] == []
    assert json.loads(report.read_text())["summary"]["not_held"] == 1
    # FAIL_ON_NOT_HELD: the same target fails the run.
    env = _env(sim, tmp_path, LIQUIDATOR_FAIL_ON_NOT_HELD="true")
    code, out = await run_cli(*args, env=env)
    assert code == 1, out
    assert _settled(out)["SPY"]["outcome"] == "not_held"
    assert sim.stats.by_route["close"] == sim.stats.by_route["submit"] == 0
    assert sim.position_quantity(19818, PUT) == -5


async def test_the_plan_and_summary_at_a_terminal_say_not_held_and_what_is_held(
    sim: Simulator, tmp_path: Path
) -> None:
    _spy_option_account(sim)
    env = _env(sim, tmp_path, LIQUIDATOR_LOG_FORMAT="console", COLUMNS="80")
    args = ("--base-url", sim.base_url, "--position", "19818:SPY", "--position", "19818:NVDA")
    code, out = await run_cli("check", *args, env=env)
    assert code == 0, out
    assert "Not held, nothing to close: 1" in out
    assert "19818:SPY: not held; the account holds SPY 261218P00600000 (-5)" in out
    assert "not_held" in out  # the summary's outcome row


async def test_a_rerun_finds_what_an_earlier_run_closed_already_flat_not_not_held(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.config.fill_delay_s = 0.05
    sim.add_position(19819, "SPY", "30")
    sim.add_position(19820, "NVDA", "5")
    env = _env(sim, tmp_path, LIQUIDATOR_FAIL_ON_NOT_HELD="true")
    args = ("run", "--yes", "--base-url", sim.base_url, "--position", "19819:SPY")
    code, out = await run_cli(*args, env=env)
    assert code == 0, out
    assert sim.position_quantity(19819, "SPY") == 0
    # The same job again: SPY is no longer listed, and the journal says this job closed it.
    code, out = await run_cli(*args, env=env)
    assert code == 0, out
    spy = _settled(out)["SPY"]
    assert spy["outcome"] == "already_flat"
    assert "earlier run" in spy["why"]
    assert len(sim.closing_orders(19819, "SPY")) == 1
    # `check` and a dry run read the same journal, read only: the same answer, nothing written.
    state = tmp_path / "state"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in state.iterdir()}
    for command in (("check",), ("run", "--dry-run", "--yes")):
        code, out = await run_cli(*command, *args[2:], env=env)
        assert code == 0, out
        assert _settled(out)["SPY"]["outcome"] == "already_flat", command
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in state.iterdir()}
    assert after == before
    # Another account that never held SPY: not held, and FAIL_ON_NOT_HELD fails the check.
    code, out = await run_cli("check", *args[2:4], "--position", "19820:SPY", env=env)
    assert code == 1, out
    assert _settled(out)["SPY"]["outcome"] == "not_held"
