"""What an operator sees, as a whole process: help, settings, the simulator and the example."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.support import clean_env, run_cli, seed_accounts
from worker.simulator import Simulator
from worker.targets import read_targets

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "targets.example.toml"


@pytest.mark.parametrize("value", ["20001,20002", " 20001 , 20002 ", "[20001, 20002]"])
async def test_allowed_accounts_from_the_environment_as_a_comma_list(
    sim: Simulator, tmp_path: Path, value: str
) -> None:
    seed_accounts(sim, 3, 1)
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        LIQUIDATOR_ALLOWED_ACCOUNTS=value,
        STATE_DIRECTORY=str(tmp_path),
    )
    base = ("run", "--yes", "--log-format", "json", "--base-url", sim.base_url)
    code, out = await run_cli(*base, "--account", "20003", env=env)
    assert code == 2, out
    assert "20003 are not in allowed_accounts" in out
    assert sim.stats.requests == 0
    code, out = await run_cli(*base, "--account", "20001", "--account", "20002", env=env)
    assert code == 0, out
    assert sim.stats.by_route["close"] == 2


async def test_a_malformed_allow_list_names_the_variable(tmp_path: Path) -> None:
    env = clean_env(LIQUIDATOR_API_KEY="a.b", LIQUIDATOR_ALLOWED_ACCOUNTS="20001,,20002")
    code, out = await run_cli("run", "--yes", "--account", "20001", env=env)
    assert code == 2
    assert "environment LIQUIDATOR_ALLOWED_ACCOUNTS" in out
    assert "separated by commas" in out


async def test_target_flags_have_help_text() -> None:
    code, out = await run_cli("run", "--help", env=clean_env(COLUMNS="200"))
    assert code == 0
    for flag, text in [
        ("--targets FILE", "targets file, TOML or CSV"),
        ("--account ID", "every open position of this account"),
        ("--position ACCOUNT:INSTRUMENT", "one position, the instrument by symbol or UUID"),
    ]:
        lines = out.splitlines()
        at = next(n for n, ln in enumerate(lines) if ln.strip().startswith(flag))
        assert text in " ".join(lines[at : at + 2]), lines[at : at + 2]  # argparse may wrap


def test_the_simulators_example_holdings_are_what_the_example_targets_name() -> None:
    from worker.simulate import EXAMPLE_HOLDINGS

    named = {(s.account_id, s.instrument) for s in read_targets([EXAMPLE], [], []) if s.instrument}
    assert named == {(s.account_id, s.instrument) for s in EXAMPLE_HOLDINGS}


async def test_the_readme_example_runs_against_liquidator_simulator(tmp_path: Path) -> None:
    simulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "simulator", "--port", "0", "--fill-delay", "0.05",
        stdout=asyncio.subprocess.PIPE, env=clean_env(),
    )  # fmt: skip
    try:
        assert simulator.stdout is not None
        banner = (await asyncio.wait_for(simulator.stdout.readline(), 30)).decode()
        assert "(19816.." in banner, banner
        base_url = banner.split()[2]
        report = tmp_path / "report.json"
        code, out = await run_cli(
            "run", "--targets", str(EXAMPLE), "--yes", "--base-url", base_url,
            "--report", str(report), "--log-format", "json",
            env=clean_env(LIQUIDATOR_API_KEY="sim-key.sim-secret", STATE_DIRECTORY=str(tmp_path)),
        )  # fmt: skip
    finally:
        simulator.terminate()
        await simulator.wait()
    assert code == 0, out
    results = json.loads(report.read_text())["results"]
    by_name = {(r["account_id"], r["instrument"]): r["outcome"] for r in results}
    for spec in read_targets([EXAMPLE], [], []):
        if spec.instrument is not None:
            assert by_name[(spec.account_id, spec.instrument)] == "closed", by_name
    whole = [r for r in results if r["account_id"] == 19816]
    assert len(whole) >= 10
    assert all(r["outcome"] == "closed" for r in whole)
    assert all(r["symbol"] != "SPY" for r in whole)  # excluded in the example
