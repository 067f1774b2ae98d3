"""What a terminal shows while a run waits: when it starts, in words, not seconds."""

from __future__ import annotations

import asyncio
import heapq
import os
import pty
import re
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.support import (
    clean_env,
    event_lines,
    finish,
    read_screen,
    seed_accounts,
    start_liquidator,
    the_truth,
)
from worker.observe.events import duration_text, resting_text
from worker.simulator import Simulator


def test_durations_read_as_a_person_says_them() -> None:
    assert duration_text(19816.25) == "5 h 30 m"
    assert duration_text(900) == "15 m"
    assert duration_text(125) == "2 m 5 s"
    assert duration_text(40.4) == "40 s"


def test_resting_orders_read_as_a_sentence_until_the_close_is_due() -> None:
    assert resting_text(3, "16:00 ET", 7830) == (
        "3 market-on-close orders resting; they fill at today's close, 16:00 ET (in 2 h 10 m)"
    )
    assert resting_text(1, "13:00 ET", -2) == (
        "1 market-on-close order resting; it fills at today's close, 13:00 ET (due now)"
    )


async def test_before_close_says_when_the_run_starts_in_new_york_time_and_how_soon(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    close = datetime.now(UTC) + timedelta(hours=5, minutes=45, seconds=30)
    sim.config.regular_close_at = close
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        STATE_DIRECTORY=str(tmp_path),
        COLUMNS="160",
        LINES="40",
        TERM="xterm-256color",
    )
    main, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "run", "--yes", "--base-url", sim.base_url,
        "--account", "20001", "--before-close", "15m",
        stdin=child, stdout=child, stderr=child, env=env,
    )  # fmt: skip
    os.close(child)
    screen: list[str] = []
    text = await read_screen(main, screen, "waiting_for_close")
    text = await read_screen(main, screen, ")")
    starts = close - timedelta(minutes=15)
    et = ZoneInfo("America/New_York")
    line = next(x for x in text.splitlines() if "waiting_for_close" in x)
    assert f"starts {starts.astimezone(et):%H:%M} ET, in 5 h 30 m" in line, line
    assert f"today's close {close.astimezone(et):%H:%M} ET" in line
    assert not re.search(r"wait_s=\d", line)  # no seconds for people to convert
    proc.send_signal(signal.SIGTERM)  # a stop ends the wait at once
    await asyncio.wait_for(proc.wait(), 15)
    os.close(main)
    assert proc.returncode == 3
    assert sim.stats.by_route["close"] == 0


def fill_one_now(sim: Simulator, account: int) -> None:
    """One of the account's resting market-on-close orders fills now; the others wait on."""
    book = sim.book.accounts[account]
    first, *rest = sorted(book.due_fills)
    book.due_fills = [(0.0, first[1], first[2]), *rest]
    heapq.heapify(book.due_fills)


async def test_at_close_says_what_it_waits_for_and_until_when_not_a_stuck_eta(
    sim: Simulator, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 1, 3)
    close = datetime.now(UTC) + timedelta(hours=2, minutes=10, seconds=40)
    sim.config.regular_close_at = close
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        STATE_DIRECTORY=str(tmp_path),
        LIQUIDATOR_FOLLOW_PAUSE_MAX="0.1",
        COLUMNS="160",
        LINES="40",
        TERM="xterm-256color",
    )
    main, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "run", "--yes", "--base-url", sim.base_url,
        "--account", "20001", "--at-close",
        stdin=child, stdout=child, stderr=child, env=env,
    )  # fmt: skip
    os.close(child)
    screen: list[str] = []
    try:
        text = await read_screen(main, screen, "resting; they fill at")
        text = await read_screen(main, screen, " m)")
        at = f"{close.astimezone(ZoneInfo('America/New_York')):%H:%M} ET"
        assert (
            f"3 market-on-close orders resting; they fill at today's close, {at} (in 2 h 10 m)"
        ) in text, text[-2000:]
        fill_one_now(sim, 20001)  # the fills are counted as they come
        text = await read_screen(main, screen, "2 market-on-close orders resting")
        assert "1/3 closed=1" in text
        assert f"ETA {at}" in text  # the bar's estimate is the close itself
        sim.fill_due_in(0)  # the close
        text = await read_screen(main, screen, "exit code")
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:  # it would follow until the close
            proc.kill()
            await proc.wait()
        os.close(main)
    assert proc.returncode == 0, text[-3000:]
    assert "-:--:--" not in text  # no bar stuck without an estimate
    the_truth(sim, None, positions, fill_first=True, one_order=True)
    assert {o["time_in_force"] for a, i in positions for o in sim.closing_orders(a, i)} == {
        "AT_THE_CLOSE"
    }


async def test_at_close_json_says_once_what_rests_until_the_close(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 2, 2)
    close = datetime.now(UTC) + timedelta(minutes=45, seconds=30)
    sim.config.regular_close_at = close
    proc = await start_liquidator(
        sim, tmp_path, tmp_path / "report.json", "--at-close", LIQUIDATOR_FOLLOW_PAUSE_MAX="0.1"
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not any('"waiting_for_fills"' in line for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "".join(lines)
            lines.append(line.decode())
        sim.fill_due_in(0)  # the close
        code, rest = await finish(proc)
    finally:
        if proc.returncode is None:  # it would follow until the close
            proc.kill()
            await proc.wait()
    output = "".join(lines) + rest
    assert code == 0, output
    (waiting,) = event_lines(output, "waiting_for_fills")
    assert waiting["orders"] == 4
    assert datetime.fromisoformat(str(waiting["until"])) == close
    at = f"{close.astimezone(ZoneInfo('America/New_York')):%H:%M} ET"
    assert waiting["until_local"] == at
    assert waiting["until_in"] == "45 m"
    assert len(event_lines(output, "close_order")) == 4  # after every order was sent
