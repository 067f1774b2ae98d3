"""Tables for 80 columns: status, plan and summary.

Order ids shortened the way git shortens hashes (the full id in `--json`), option symbols never
cut (two strikes must not look alike), the limit price shown; no line wider than 80.
"""

from __future__ import annotations

import asyncio
import os
import pty
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from tests.support import clean_env, event_lines, read_screen, run_cli
from worker.api.models import Order
from worker.cli.tables import short_ids, show_status
from worker.cli.terminal import Terminal
from worker.closing import target as life
from worker.closing.target import Target
from worker.results import TargetResult
from worker.run.plan import Plan
from worker.run.server_view import AccountView
from worker.simulator import Simulator

WIDTH = 80
PUTS = ["SPY   261218P00600000", "SPY   261218P00605000"]  # one strike apart
CALL = "SPXW  261218C06125000"
ACCOUNT = 73201


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def assert_fits(text: str, *, tables_only: bool = False) -> None:
    """No line wider than 80; `tables_only`: no table's line (a sentence printed after a
    table is left for the terminal to wrap, so a path in it stays whole)."""
    lines = lines_of(text)
    if tables_only:
        lines = [ln for ln in lines if ln[:1] in "┏┃┡│├└"]
        assert lines
    too_wide = [line for line in lines if len(line) > WIDTH]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in text, text  # nothing cut


def has_whole(text: str, symbol: str) -> bool:
    return any(symbol in line for line in lines_of(text))


def test_short_ids_are_the_shortest_unique_prefix_and_never_under_eight() -> None:
    ids = [
        "0b8e1f3a-1111-4c4c-9d9d-123456789abc",
        "0b8e1f3a-1112-4c4c-9d9d-123456789abc",
        "ffff5555-1111-4c4c-9d9d-123456789abc",
        "7",
    ]
    shown = short_ids(ids)
    assert shown[ids[0]] == "0b8e1f3a-1111"
    assert shown[ids[1]] == "0b8e1f3a-1112"
    assert shown[ids[2]] == "ffff5555"
    assert shown["7"] == "7"
    assert len(set(shown.values())) == len(ids)
    assert short_ids(["abcdefgh", "abcdefghij"]) == {
        "abcdefgh": "abcdefgh",
        "abcdefghij": "abcdefghi",
    }


def _order(order_id: str, symbol: str, **fields: object) -> Order:
    values: dict[str, object] = {
        "id": order_id,
        "client_order_id": "",
        "account_id": ACCOUNT,
        "side": "BUY",
        "quantity": Decimal(5),
        "order_type": "LIMIT",
        "status": "PENDING_NEW",
        "filled_quantity": Decimal(0),
        "created_at": datetime.now(UTC),
        "symbol": symbol,
        "instrument_id": symbol,
        "time_in_force": "DAY",
        "limit_price": Decimal("12.35"),
    }
    return Order.model_validate(values | fields)


def _target(symbol: str, quantity: str, value: str) -> Target:
    return Target(
        account_id=ACCOUNT,
        instrument=symbol,
        instrument_id=f"id-{symbol}",
        symbol=symbol,
        instrument_type="OPTION",
        quantity=Decimal(quantity),
        market_value=Decimal(value),
        cancel_orders=True,
    )


def test_status_at_80_columns_shows_short_ids_whole_symbols_and_limit_prices() -> None:
    view = AccountView(ACCOUNT)
    view.positions = [_target(PUTS[0], "-1000000", "-123456789012.34"), _target(PUTS[1], "40", "1")]
    ids = ["0b8e1f3a-1111-4c4c-9d9d-123456789abc", "0b8e1f3a-1112-4c4c-9d9d-123456789abc"]
    ids.append("c0ffee00-aaaa-4c4c-9d9d-123456789abc")
    view.orders = [
        _order(ids[0], PUTS[0], limit_price=Decimal("601.2525"), status="PENDING_CANCEL"),
        _order(
            ids[1], PUTS[1], order_type="MARKET", limit_price=None, time_in_force="AT_THE_CLOSE"
        ),
        _order(ids[2], CALL, side="SELL", quantity=Decimal(1200), filled_quantity=Decimal(100)),
    ]
    view.own = {ids[2]}
    console = Console(width=WIDTH, record=True)
    show_status(console, [view])
    text = console.export_text()
    assert_fits(text)
    for symbol in (*PUTS, CALL):
        assert has_whole(text, symbol), text
    shown = {ids[0]: "0b8e1f3a-1111 ", ids[1]: "0b8e1f3a-1112 ", ids[2]: "c0ffee00 job "}
    rows = {i: next(ln for ln in lines_of(text) if ln.startswith(p)) for i, p in shown.items()}
    # As long as needed to tell them apart, and no longer; the job's own marked.
    assert not any(order_id in text for order_id in ids)  # never the full id
    assert "601.2525" in rows[ids[0]]
    assert "12.35" in rows[ids[2]]
    assert "100/1,200" in rows[ids[2]]
    assert " CLS " in rows[ids[1]]


def test_plan_and_summary_at_80_columns_keep_option_symbols_whole() -> None:
    console = Console(width=WIDTH, record=True)
    terminal = Terminal(console)
    targets = [_target(s, "-3", "-2704.00") for s in PUTS]
    targets.append(_target(CALL, "1250000", "98765432101.25"))
    guarded = TargetResult(ACCOUNT, "SPY   261218P00610000", "id-g")
    life.guarded(guarded, "no quote: a blind market order is not sent for an option")
    terminal.show_plan(Plan(targets=targets, guarded=[guarded], settled=[guarded]))
    failed = [TargetResult(ACCOUNT, s, f"id-{s}", s) for s in PUTS]
    for result in failed:
        life.failed(result, "the close was refused: 3 of 3 contracts remain open, see events")
    terminal.show_summary([*failed, guarded], 1, seconds=1.0)
    text = console.export_text()
    assert_fits(text, tables_only=True)
    for symbol in (*PUTS, CALL, "SPY   261218P00610000"):
        assert has_whole(text, symbol), text


async def test_status_on_an_80_column_terminal_against_the_simulator_and_full_ids_in_json(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_account(ACCOUNT)
    for n, symbol in enumerate(PUTS):
        sim.add_position(ACCOUNT, symbol, str(-3 - n), instrument_type="OPTION", price="27.04")
    ids = [sim.add_resting_order(ACCOUNT, s, "BUY", "3", "27.15") for s in PUTS]
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        STATE_DIRECTORY=str(tmp_path),
        COLUMNS=str(WIDTH),
        LINES="50",
        TERM="xterm-256color",
    )
    main, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "status", "--base-url", sim.base_url,
        "--account", str(ACCOUNT), stdin=child, stdout=child, stderr=child, env=env,
    )  # fmt: skip
    os.close(child)
    screen: list[str] = []
    try:
        await asyncio.wait_for(proc.wait(), 30)
        text = await read_screen(main, screen, "working order(s)")
    finally:
        os.close(main)
    assert proc.returncode == 0, text
    assert_fits(text)
    for order_id, symbol in zip(ids, PUTS, strict=True):
        [row] = [ln for ln in lines_of(text) if ln.startswith(order_id[:8])]
        assert symbol in row, row
        assert "27.15" in row, row
        assert order_id not in text
    code, out = await run_cli(
        "status", "--json", "--base-url", sim.base_url, "--account", str(ACCOUNT), env=env
    )
    assert code == 0, out
    orders = {o["order_id"]: o for o in event_lines(out, "status_order")}
    assert set(orders) == set(ids)  # whole
    assert {o["symbol"] for o in orders.values()} == set(PUTS)
    assert {o["limit_price"] for o in orders.values()} == {"27.15"}
    assert sim.stats.by_route["cancel"] == 0
