"""`liquidator status` and `liquidator cancel`, as whole processes against the simulator.

Counted at the server: status changes nothing; cancel cancels exactly the working orders on the
targets' instruments, each once, and nothing without a confirmation.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.support import api_for, clean_env, event_lines, read_screen, run_cli
from worker.api.client import NewOrder
from worker.closing.client_ids import client_order_id
from worker.journal.keys import job_key
from worker.simulator import Simulator

CHANGES = ("close", "submit", "cancel")  # the routes that change anything at the server
ACCOUNT = 73001


async def book(sim: Simulator) -> dict[str, str]:
    """Three positions; on S0 the job's own working order and another participant's; on S1 a
    participant's; S2 has none. Returns the order ids by name."""
    sim.add_account(ACCOUNT)
    iids = [sim.add_position(ACCOUNT, f"S{k}", q) for k, q in enumerate(["30", "-20", "10"])]
    sim.config.fill_delay_s = 600  # the job's market order keeps working
    day = datetime.now(UTC).astimezone(ZoneInfo("America/New_York")).date().isoformat()
    cid = client_order_id(job_key(day), ACCOUNT, iids[0], 0)
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        order = NewOrder(client_id=cid, instrument_id=iids[0], side="SELL", quantity=Decimal(30))
        reply = await api.submit_order(ACCOUNT, order)
    return {
        "own": reply.data.id,
        "other_s0": sim.add_resting_order(ACCOUNT, "S0", "BUY", "5", "1.00"),
        "other_s1": sim.add_resting_order(ACCOUNT, "S1", "SELL", "5", "99.00"),
    }


def env_for(sim: Simulator, tmp_path: Path) -> dict[str, str]:
    return clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        STATE_DIRECTORY=str(tmp_path / "state"),
        LIQUIDATOR_RATE_LIMIT="0",
    )


def changes(sim: Simulator) -> int:
    return sum(sim.stats.by_route[r] for r in CHANGES)


async def test_status_lists_positions_and_working_orders_as_json_and_sends_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    ids = await book(sim)
    before = changes(sim)
    code, out = await run_cli(
        "status", "--base-url", sim.base_url, "--account", str(ACCOUNT), "--log-format", "json",
        env=env_for(sim, tmp_path),
    )  # fmt: skip
    assert code == 0, out
    assert changes(sim) == before  # reads only
    positions = {p["symbol"]: p for p in event_lines(out, "status_position")}
    assert {s: p["quantity"] for s, p in positions.items()} == {"S0": "30", "S1": "-20", "S2": "10"}
    orders = {o["order_id"]: o for o in event_lines(out, "status_order")}
    assert set(orders) == set(ids.values())
    own = orders[ids["own"]]
    assert own["own"] is True
    assert str(own["client_order_id"]).startswith("lq-")
    assert (own["side"], own["quantity"], own["order_type"]) == ("SELL", "30", "MARKET")
    assert (own["time_in_force"], own["status"]) == ("DAY", "PENDING_NEW")
    assert orders[ids["other_s1"]]["own"] is False
    [account] = event_lines(out, "status_account")
    assert (account["positions"], account["working_orders"], account["own_orders"]) == (3, 3, 1)


async def test_cancel_without_yes_and_without_a_terminal_exits_2_and_sends_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_account(ACCOUNT)
    sim.add_position(ACCOUNT, "S0", "30")
    sim.add_resting_order(ACCOUNT, "S0", "BUY", "5", "1.00")
    code, out = await run_cli(
        "cancel", "--base-url", sim.base_url, "--account", str(ACCOUNT),
        env=env_for(sim, tmp_path),
    )  # fmt: skip
    assert code == 2, out
    assert "--yes" in out
    assert sim.stats.requests == 0


async def test_cancel_dry_run_lists_and_cancels_nothing(sim: Simulator, tmp_path: Path) -> None:
    ids = await book(sim)
    before = changes(sim)
    code, out = await run_cli(
        "cancel", "--dry-run", "--base-url", sim.base_url, "--account", str(ACCOUNT),
        "--log-format", "json", env=env_for(sim, tmp_path),
    )  # fmt: skip
    assert code == 0, out
    assert changes(sim) == before
    assert {o["order_id"] for o in event_lines(out, "status_order")} == set(ids.values())
    assert not event_lines(out, "order_canceled")


async def test_cancel_yes_cancels_the_orders_on_the_targets_instruments_only(
    sim: Simulator, tmp_path: Path
) -> None:
    ids = await book(sim)
    before = sim.stats.by_route["cancel"]
    code, out = await run_cli(
        "cancel", "--yes", "--base-url", sim.base_url, "--position", f"{ACCOUNT}:S0",
        "--log-format", "json", env=env_for(sim, tmp_path),
    )  # fmt: skip
    assert code == 0, out
    statuses = {o["id"]: o["status"] for o in sim.orders_of(ACCOUNT)}
    assert statuses[ids["own"]] == "CANCELED"
    assert statuses[ids["other_s0"]] == "CANCELED"
    assert statuses[ids["other_s1"]] == "NEW"  # S1 is not a target
    assert sim.stats.by_route["cancel"] - before == 2  # one request per order
    cancelled = {e["order_id"]: e for e in event_lines(out, "order_canceled")}
    assert set(cancelled) == {ids["own"], ids["other_s0"]}
    assert cancelled[ids["own"]]["own"] is True
    assert {e["status"] for e in cancelled.values()} == {"CANCELED"}
    assert len(event_lines(out, "order_cancel_requested")) == 2


async def at_terminal(
    sim: Simulator, tmp_path: Path, *args: str, answer: bytes | None, until: str
) -> tuple[int, str]:
    """The CLI on a 160-column pseudo-terminal; answer the prompt; the screen, uncoloured."""
    env = {**env_for(sim, tmp_path), "COLUMNS": "160", "LINES": "50", "TERM": "xterm-256color"}
    main, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", *args, "--base-url", sim.base_url,
        stdin=child, stdout=child, stderr=child, env=env,
    )  # fmt: skip
    os.close(child)
    screen: list[str] = []
    try:
        if answer is not None:
            await read_screen(main, screen, "Type 'yes' to proceed")
            os.write(main, answer)
        await asyncio.wait_for(proc.wait(), 30)
        text = await read_screen(main, screen, until)
    finally:
        os.close(main)
    assert proc.returncode is not None
    return proc.returncode, text


async def test_status_on_a_terminal_shows_tables_and_marks_the_jobs_order(
    sim: Simulator, tmp_path: Path
) -> None:
    ids = await book(sim)
    code, screen = await at_terminal(
        sim, tmp_path, "status", "--account", str(ACCOUNT), answer=None, until="working order"
    )
    assert code == 0, screen
    assert "Account 73001: 3 open position(s)" in screen
    assert "Account 73001: 3 working order(s), 1 the job's own" in screen
    own_row = next(line for line in screen.splitlines() if ids["own"][:8] in line)
    for shown in ("job", "PENDING_NEW", "DAY", "MARKET", "SELL"):
        assert shown in own_row, own_row


async def test_cancel_on_a_terminal_asks_first_and_a_no_cancels_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    ids = await book(sim)
    before = changes(sim)
    args = ("cancel", "--account", str(ACCOUNT))
    code, screen = await at_terminal(
        sim, tmp_path, *args, answer=b"no\n", until="operator declined"
    )
    assert code == 3, screen
    assert "Cancel 3 working order(s)?" in screen
    assert changes(sim) == before
    code, screen = await at_terminal(sim, tmp_path, *args, answer=b"yes\n", until="no longer work")
    assert code == 0, screen
    assert "3 of 3 working order(s) no longer work." in screen
    assert {o["status"] for o in sim.orders_of(ACCOUNT) if o["id"] in ids.values()} == {"CANCELED"}


async def test_the_last_runs_report_is_kept_without_report_and_journal_last_prints_it(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_account(ACCOUNT)
    sim.add_position(ACCOUNT, "S0", "30")
    env = env_for(sim, tmp_path)
    base = ("--base-url", sim.base_url, "--account", str(ACCOUNT), "--log-format", "json")
    code, out = await run_cli("run", "--yes", *base, env=env)
    assert code == 0, out
    [started] = event_lines(out, "run_started")
    code, out = await run_cli("run", "--dry-run", *base, env=env)  # does not replace it
    assert code == 0, out
    code, out = await run_cli("journal", "last", env=env)
    assert code == 0, out
    doc = json.loads(out)
    assert doc["run_id"] == started["run_id"]
    assert doc["summary"]["closed"] == 1
    assert (tmp_path / "state" / "last-report.json").is_file()


async def test_the_last_report_is_the_report_byte_for_byte_when_one_is_written(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_account(ACCOUNT)
    sim.add_position(ACCOUNT, "S0", "30")
    env = env_for(sim, tmp_path)
    base = ("--base-url", sim.base_url, "--account", str(ACCOUNT), "--log-format", "json")
    last = tmp_path / "state" / "last-report.json"
    report = tmp_path / "r.json"
    code, out = await run_cli("run", "--yes", *base, "--report", str(report), env=env)
    assert code == 0, out
    assert last.read_bytes() == report.read_bytes()
    assert json.loads(last.read_text())["exit_code"] == 0
    assert oct(last.stat().st_mode & 0o777) == oct(0o600)


async def test_journal_last_with_no_run_says_so(tmp_path: Path) -> None:
    code, out = await run_cli("journal", "last", env=clean_env(STATE_DIRECTORY=str(tmp_path)))
    assert code == 1
    assert "no run has left a report" in out
