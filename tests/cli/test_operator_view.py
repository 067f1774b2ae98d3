"""What an operator sees, as a whole process: help, settings, the simulator and the example."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support import clean_env, read_screen, run_cli, seed_accounts
from worker.inputs.targets import read_targets
from worker.simulator import Simulator

ROOT = Path(__file__).resolve().parents[2]
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
    from worker.cli.simulator import EXAMPLE_HOLDINGS

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
            env=clean_env(
                LIQUIDATOR_API_KEY="sim-key.sim-secret-for-rehearsals",
                STATE_DIRECTORY=str(tmp_path),
            ),
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


def _big_book(sim: Simulator) -> Decimal:
    """Accounts 20001-20002, one position worth billions; their gross market value."""
    seed_accounts(sim, 2, 3)
    sim.add_position(20001, "HUGE", "-1000000", price="98765.43")
    listed = [p.to_api() for a in (20001, 20002) for p in sim.book.accounts[a].positions.values()]
    return sum((abs(Decimal(p["market_value"])) for p in listed), Decimal(0))


async def _at_terminal(
    sim: Simulator, tmp_path: Path, *args: str, answer: bytes | None = b"yes\n"
) -> tuple[int, str]:
    """Run the CLI on an 80-column pseudo-terminal; answer the prompt; the screen, uncoloured."""
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        STATE_DIRECTORY=str(tmp_path / "state"),
        COLUMNS="80",
        LINES="50",
        TERM="xterm-256color",
    )
    main, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "run", "--base-url", sim.base_url, *args,
        stdin=child, stdout=child, stderr=child, env=env,
    )  # fmt: skip
    os.close(child)
    screen: list[str] = []
    try:
        if answer is not None:
            await read_screen(main, screen, "Type 'yes' to proceed")
            os.write(main, answer)
        text = await read_screen(main, screen, "exit code ")
        await asyncio.wait_for(proc.wait(), 30)
        text = await read_screen(main, screen, "exit code ")
    finally:
        os.close(main)
    assert proc.returncode is not None
    return proc.returncode, text


async def test_terminal_plan_total_is_gross_and_whole_at_80_columns_and_summary_tells_all(
    sim: Simulator, tmp_path: Path
) -> None:
    gross = f"{_big_book(sim):,.2f}"
    assert len(gross) >= 17  # wider than a squeezed column would keep
    report = tmp_path / "report.json"
    code, screen = await _at_terminal(sim, tmp_path, "--account", "20001", "--account", "20002",
                                      "--report", str(report))  # fmt: skip
    assert code == 0, screen
    assert re.search(rf"│\s*gross\s*│.*{re.escape(gross)} │", screen), screen
    assert f"Gross market value (absolute values summed): {gross}" in screen
    assert "ETA" in screen  # the progress bar's time remaining
    assert re.search(r"took \d+\.\d s", screen)
    assert f"value closed {gross} gross (7 position(s))" in screen
    assert f"report {report}" in screen
    assert "aborted:" not in screen
    assert sim.stats.by_route["close"] == 7


async def test_terminal_close_order_is_one_compact_line(sim: Simulator, tmp_path: Path) -> None:
    seed_accounts(sim, 1, 3)
    code, screen = await _at_terminal(sim, tmp_path, "--account", "20001")
    assert code == 0, screen
    for n, quantity, side in [(0, "10", "BUY"), (1, "20", "SELL"), (2, "30", "SELL")]:
        line = re.search(
            rf"\d\d:\d\d:\d\d close_order 20001 A0P{n} {side} {quantity} PENDING_NEW [0-9a-f]{{8}}",
            screen,
        )
        assert line is not None, screen
        assert len(line.group(0)) < 80
    assert "client_order_id" not in screen  # the full form stays with --log-format json
    assert sim.stats.by_route["close"] == 3


async def test_terminal_declined_prompt_says_calmly_that_nothing_was_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 2)
    report = tmp_path / "report.json"
    code, screen = await _at_terminal(
        sim, tmp_path, "--account", "20001", "--report", str(report), answer=b"no\n"
    )
    assert code == 3
    assert "not confirmed: nothing was sent" in screen
    assert "error" not in screen.lower()
    assert "aborted:" not in screen
    assert "run_aborted" in screen  # the event is kept, at info level
    assert json.loads(report.read_text())["aborted"] == "the operator declined"
    assert sim.stats.by_route["close"] == 0


async def test_terminal_dry_run_says_nothing_was_sent(sim: Simulator, tmp_path: Path) -> None:
    seed_accounts(sim, 1, 2)
    code, screen = await _at_terminal(sim, tmp_path, "--account", "20001", "--dry-run", answer=None)
    assert code == 0, screen
    assert "dry run: nothing was sent" in screen
    assert sim.stats.by_route["close"] == 0


async def test_json_dry_run_emits_one_plan_position_per_position(sim: Simulator) -> None:
    seed_accounts(sim, 2, 3)
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key)
    code, out = await run_cli(
        "run", "--dry-run", "--log-format", "json", "--base-url", sim.base_url,
        "--account", "20001", "--account", "20002", env=env,
    )  # fmt: skip
    assert code == 0, out
    planned = [e for e in map(json.loads, out.splitlines()) if e["event"] == "plan_position"]
    listed = [p.to_api() for a in (20001, 20002) for p in sim.book.accounts[a].positions.values()]
    fields = ("account_id", "symbol", "instrument_id", "quantity", "market_value")
    expected = {
        (*(str(p[f]).lstrip("-") if f == "quantity" else p[f] for f in fields),
         "SELL" if p["position_type"] == "LONG" else "BUY")
        for p in listed
    }  # fmt: skip
    assert len(planned) == 6
    assert {(*(e[f] for f in fields), e["side"]) for e in planned} == expected
    assert sim.stats.by_route["close"] == 0


async def test_a_rerun_on_a_flat_account_reports_it_flat_not_skipped(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(tmp_path))
    report = tmp_path / "report.json"
    args = ("run", "--yes", "--log-format", "json", "--base-url", sim.base_url)
    code, out = await run_cli(*args, "--account", "20001", env=env)
    assert code == 0, out
    sim.config.fill_delay_s = 0
    await asyncio.sleep(0.1)  # the first run's orders fill (fill delay 0.05 s)
    code, out = await run_cli(*args, "--account", "20001", "--report", str(report), env=env)
    assert code == 0, out
    results = json.loads(report.read_text())["results"]
    assert [(r["account_id"], r["instrument"], r["outcome"]) for r in results] == [
        (20001, "*", "already_flat")
    ]
    assert "nothing was planned" not in report.read_text()
    assert sim.stats.by_route["close"] == 3  # the rerun sent nothing


async def test_a_whole_account_with_every_position_excluded_is_in_the_results_beside_others(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_account(20001)
    sim.add_position(20001, "SPY", "100")
    sim.add_account(20002)
    sim.add_position(20002, "AAPL", "10")
    targets = tmp_path / "t.toml"
    targets.write_text('[[accounts]]\nid = 20001\nexclude = ["SPY"]\n\n[[accounts]]\nid = 20002\n')
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(tmp_path))
    report = tmp_path / "report.json"
    code, out = await run_cli(
        "run", "--yes", "--log-format", "json", "--base-url", sim.base_url,
        "--targets", str(targets), "--report", str(report), env=env,
    )  # fmt: skip
    assert code == 0, out
    doc = json.loads(report.read_text())
    by_target = {(r["account_id"], r["instrument"]): r["outcome"] for r in doc["results"]}
    assert by_target == {(20001, "*"): "already_flat", (20002, "AAPL"): "closed"}
    assert doc["summary"]["targets"] == 2
    settled = [json.loads(line) for line in out.splitlines() if '"target_settled"' in line]
    assert [(e["account_id"], e["instrument"]) for e in settled] == [(20001, "*")]
    assert "excluded" in settled[0]["why"]
    assert sim.position_quantity(20001, "SPY") == 100
    assert sim.stats.by_route["close"] == 1
