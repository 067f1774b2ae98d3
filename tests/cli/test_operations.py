"""Operations, as a whole process: credentials, check, guards, market timing, the terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support import clean_env, event_lines, read_screen, run_cli, seed_accounts
from worker.simulator import Simulator

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def test_key_only_in_credentials_directory_flattens(sim: Simulator, tmp_path: Path) -> None:
    positions = seed_accounts(sim, 1, 5)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "clearstreet-api-key").write_text(sim.config.api_key + "\n")
    env = clean_env(CREDENTIALS_DIRECTORY=str(creds), STATE_DIRECTORY=str(tmp_path / "state"))
    code, out = await run_cli(
        "run", "--yes", "--base-url", sim.base_url, "--account", "20001", env=env
    )
    assert code == 0, out
    assert all(len(sim.closing_orders(a, i)) == 1 for a, i in positions)
    assert sim.config.api_key not in out
    assert (tmp_path / "state" / "journal.sqlite3").exists()


async def test_check_validates_and_shows_the_plan_without_closing(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 5)
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key)
    code, out = await run_cli("check", "--base-url", sim.base_url, "--account", "20001", env=env)
    assert code == 0, out
    assert "Plan: 5 positions to close" in out
    assert "A0P4" in out  # each position is listed
    assert sim.stats.by_route["close"] == 0


async def test_allow_list_refuses_other_accounts_before_any_request(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 2, 2)
    settings = tmp_path / "s.toml"
    settings.write_text("allowed_accounts = [20001]\n")
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key)
    code, out = await run_cli(
        "run", "--yes", "--config", str(settings), "--base-url", sim.base_url,
        "--account", "20001", "--account", "20002", env=env,
    )  # fmt: skip
    assert code == 2
    assert "20002" in out
    assert "allowed_accounts" in out
    assert sim.stats.requests == 0


async def test_max_positions_refuses_unless_forced(sim: Simulator, tmp_path: Path) -> None:
    seed_accounts(sim, 1, 6)
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        LIQUIDATOR_MAX_POSITIONS="5",
        STATE_DIRECTORY=str(tmp_path),
    )
    args = ("run", "--yes", "--base-url", sim.base_url, "--account", "20001")
    code, out = await run_cli(*args, env=env)
    assert code == 2
    assert "--force" in out
    assert sim.stats.by_route["close"] == 0
    code, out = await run_cli(*args, "--force", env=env)
    assert code == 0, out
    assert sim.stats.by_route["close"] == 6


async def test_holiday_sends_nothing_and_exits_0(sim: Simulator, tmp_path: Path) -> None:
    seed_accounts(sim, 1, 3)
    sim.config.market_day = "HOLIDAY"
    report = tmp_path / "r.json"
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, LIQUIDATOR_LOG_FORMAT="json")
    code, out = await run_cli(
        "run", "--yes", "--base-url", sim.base_url, "--account", "20001",
        "--before-close", "15m", "--report", str(report), env=env,
    )  # fmt: skip
    assert code == 0, out
    assert '"market_closed"' in out
    assert sim.stats.by_route["close"] == 0
    assert sim.stats.by_route["positions"] == 0
    assert '"market_closed": 1' in report.read_text()


async def test_a_dry_run_before_the_close_prints_the_plan_and_the_start_and_exits(
    sim: Simulator, tmp_path: Path
) -> None:
    # The simulator's close 2 h 59 m away: the real run would wait 2 h 44 m; a dry run does not.
    seed_accounts(sim, 1, 3)
    close = datetime.now(UTC) + timedelta(hours=2, minutes=59, seconds=30)
    sim.config.regular_close_at = close
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, LIQUIDATOR_LOG_FORMAT="json")
    started = time.monotonic()
    code, out = await run_cli(
        "run", "--dry-run", "--base-url", sim.base_url, "--account", "20001",
        "--before-close", "15m", "--state-dir", str(tmp_path), env=env,
    )  # fmt: skip
    assert code == 0, out
    assert time.monotonic() - started < 30  # (the wait would be hours)
    [would] = event_lines(out, "run_would_start")
    start = datetime.fromisoformat(str(would["start_at"]))
    assert abs((start - (close - timedelta(minutes=15))).total_seconds()) < 1
    assert would["starts_in"] == "2 h 44 m"
    assert not event_lines(out, "waiting_for_close")
    assert len(event_lines(out, "plan_position")) == 3
    assert sim.stats.by_route["close"] == sim.stats.by_route["submit"] == 0


async def test_before_close_on_an_early_close_day_starts_at_close_minus_duration(
    sim: Simulator, tmp_path: Path
) -> None:
    # The done-when case: close 25 s away, --before-close 20s: the first close ~5 s after start.
    seed_accounts(sim, 1, 3)
    sim.config.market_day = "EARLY_CLOSE"
    sim.config.regular_close_at = datetime.now(UTC) + timedelta(seconds=25)
    started = time.monotonic()
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(tmp_path))
    args = ("run", "--yes", "--base-url", sim.base_url, "--account", "20001")
    run = asyncio.create_task(run_cli(*args, "--before-close", "20s", env=env))
    while sim.stats.by_route["close"] == 0:
        assert not run.done(), (await run)[1]
        await asyncio.sleep(0.02)
    first_close_after = time.monotonic() - started
    code, out = await run
    assert code == 0, out
    assert 4.0 <= first_close_after <= 6.5


async def test_terminal_shows_plan_prompt_progress_and_summary(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 2, 4)
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        STATE_DIRECTORY=str(tmp_path),
        COLUMNS="120",
        LINES="40",
        TERM="xterm-256color",
    )
    main, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "run", "--base-url", sim.base_url,
        "--account", "20001", "--account", "20002",
        stdin=child, stdout=child, stderr=child, env=env,
    )  # fmt: skip
    os.close(child)
    screen: list[str] = []
    text = await read_screen(main, screen, "Type 'yes' to proceed")
    assert sim.stats.by_route["close"] == 0  # nothing sent before the operator answers
    assert "Plan: 8 positions to close" in text
    for column in ("account", "symbol", "type", "side sent", "quantity", "market value"):
        assert column in text
    os.write(main, b"yes\n")
    text = await read_screen(main, screen, "exit code 0")
    await asyncio.wait_for(proc.wait(), 30)
    os.close(main)
    assert proc.returncode == 0
    assert "8/8" in text  # the progress bar finished
    assert "Summary" in text
    assert re.search(r"closed\s*│\s*8", text)
    assert sim.stats.by_route["close"] == 8


async def test_ctrl_c_at_the_prompt_ends_the_run_at_once_with_nothing_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(tmp_path))
    main, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "run", "--base-url", sim.base_url, "--account", "20001",
        stdin=child, stdout=child, stderr=child, env=env,
    )  # fmt: skip
    os.close(child)
    await read_screen(main, [], "Type 'yes' to proceed")
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 10)  # does not wait for Enter
    os.close(main)
    assert proc.returncode == 3
    assert sim.stats.by_route["close"] == 0


async def test_unwritable_report_location_refuses_before_any_request(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 1)
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key)
    missing = tmp_path / "no-such-dir" / "r.json"
    code, out = await run_cli(
        "run", "--yes", "--base-url", sim.base_url, "--account", "20001",
        "--report", str(missing), env=env,
    )  # fmt: skip
    assert code == 2
    assert "--report" in out
    assert sim.stats.requests == 0


async def test_unusable_state_dir_refuses_with_exit_2_before_any_close(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, LIQUIDATOR_STATE_DIR=str(blocker))
    code, out = await run_cli(
        "run", "--yes", "--base-url", sim.base_url, "--account", "20001", env=env
    )
    assert code == 2, out
    assert "journal" in out
    assert sim.stats.by_route["close"] == 0
