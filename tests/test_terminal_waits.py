"""What a terminal shows while a run waits: when it starts, in words, not seconds."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.support import clean_env, read_screen, seed_accounts
from worker.events import duration_text
from worker.simulator import Simulator


def test_durations_read_as_a_person_says_them() -> None:
    assert duration_text(19816.25) == "5 h 30 m"
    assert duration_text(900) == "15 m"
    assert duration_text(125) == "2 m 5 s"
    assert duration_text(40.4) == "40 s"


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
