"""Replies are data as received; the key's secret is scrubbed only where text leaves the process.

A short secret (`key`, which the command line refuses, but a run started in-process does not ask
for the command line's checks) that occurs inside every server order id must not change what
the worker acts on. A server that echoes a real key back, in its replies and its errors, leaves
it in no event, report, journal row or exception, and the orders intact. Counted at the server.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support import (
    Key,
    api_for,
    clean_env,
    liquidate,
    run_cli,
    seed_accounts,
    sim_behind,
    start_liquidator,
    the_truth,
)
from worker.closing.client_ids import client_order_id
from worker.errors import ApiError
from worker.inputs.secrets import REDACTED
from worker.inputs.targets import TargetSpec
from worker.journal.keys import MARKET_TZ, job_key
from worker.simulator import SimConfig, Simulator, serve

BOTH = [TargetSpec(20001, None), TargetSpec(20002, None)]


@pytest.mark.parametrize("close_via", ["close_position", "submit_orders"])
async def test_a_short_secret_inside_every_server_id_changes_nothing_the_worker_acts_on(
    close_via: str, settings_for: Any, tmp_path: Path
) -> None:
    sim = Simulator(SimConfig(fill_delay_s=0.05, api_key="ak-1.key", order_ids_ending="key"))
    positions = seed_accounts(sim, 2, 10)
    doc = await _liquidate(sim, positions, settings_for, tmp_path, close_via)
    for account, iid in positions:
        assert sim.closing_orders(account, iid)[0]["id"].endswith("key")
    # The report is an exit: each of those orders is there, the secret in its id redacted.
    shown = {o["id"] for r in doc["results"] for o in r["orders"]}
    assert len(shown) == len(positions)
    assert all(i.endswith(REDACTED) for i in shown)


async def test_a_short_secret_inside_a_client_id_changes_nothing_the_worker_acts_on(
    settings_for: Any, tmp_path: Path
) -> None:
    """The row as it was seen: a secret that happens to occur inside the client id the worker
    derives for one position (submit_orders), echoed back in the order the reply lists."""
    sim = Simulator(SimConfig(fill_delay_s=0.05))
    positions = seed_accounts(sim, 2, 10)
    day = datetime.fromtimestamp(sim.config.clock(), UTC).astimezone(MARKET_TZ).date()
    account, iid = positions[3]
    secret = client_order_id(job_key(day.isoformat()), account, iid, 0)[5:9]
    sim.config.api_key = f"ak-1.{secret}"
    await _liquidate(sim, positions, settings_for, tmp_path, "submit_orders")
    [server] = sim.closing_orders(account, iid)
    assert secret in server["client_order_id"]


async def _liquidate(
    sim: Simulator, positions: list[Key], settings_for: Any, tmp_path: Path, close_via: str
) -> dict[str, Any]:
    """Flatten accounts 20001 and 20002 in this process (no command line to refuse the key):
    one closing order per position, none re-sent, each in the run's results as the server has
    it, with its fills."""
    runner, _ = await serve(sim, "127.0.0.1", 0)
    try:
        result, doc = await liquidate(sim, settings_for, tmp_path, BOTH, close_via=close_via)
    finally:
        await runner.cleanup()
    assert result.exit_code == 0, result
    assert len(result.results) == len(positions)
    the_truth(sim, None, positions, one_order=True, flat=True)
    assert sim.stats.status_counts[409] == 0  # no client id sent twice
    for target in result.results:
        [server] = sim.closing_orders(target.account_id, target.instrument_id or "")
        assert str(target.outcome) == "closed", target
        assert [o.id for o in target.orders] == [server["id"]]
        assert Decimal(target.filled_quantity or 0) == Decimal(server["filled_quantity"]) > 0
    return doc


KEY_ID, SECRET = "ak-7Qm2", "sk-Zq9vR2xWp7LtY4Xc"
KEY = f"{KEY_ID}.{SECRET}"
BEARER = f"Bearer {KEY}"


def _leaks(data: bytes) -> list[str]:
    return [p for p in (KEY, SECRET, SECRET[:8], SECRET[-8:]) if p.encode() in data]


def echoing(*, in_client_ids: bool = False) -> Any:
    """A gateway that echoes the key (for `sim_behind`): the first close of each position is
    refused unapplied (503) with the key in its message and request id; every other JSON reply
    carries it in its request id and beside each order it lists (a field the spec lacks), and
    with `in_client_ids` in each order's client id and symbol (the status table shows the
    symbol whole)."""
    refused: set[str] = set()

    @web.middleware
    async def echo(request: web.Request, handler: Any) -> web.StreamResponse:
        sent = request.headers.get("Authorization", "")
        closing = request.method == "DELETE" and "/positions/" in request.path
        if closing and request.path not in refused:
            refused.add(request.path)
            body = {
                "data": None,
                "error": {"code": 503, "message": f"upstream refused {sent} ({SECRET})"},
                "metadata": {"request_id": f"rid-{SECRET}"},
            }
            return web.json_response(body, status=503)
        response: web.StreamResponse = await handler(request)
        if not isinstance(response, web.Response) or response.content_type != "application/json":
            return response
        doc = json.loads(response.body)  # type: ignore[arg-type]
        doc["metadata"]["request_id"] = f"rid-{sent}"
        rows = doc.get("data")
        for row in rows if isinstance(rows, list) else [rows]:
            if isinstance(row, dict) and "side" in row:
                row["note"] = f"entered by {sent}"
                if in_client_ids:
                    row["client_order_id"] = f"desk {sent}"
                    row["symbol"] = f"{row.get('symbol')} {sent}"
        return web.json_response(doc, status=response.status, headers={"x-request-id": sent})

    return echo


async def test_a_key_echoed_in_replies_and_errors_reaches_no_output_and_no_exception(
    tmp_path: Path,
) -> None:
    sim = Simulator(SimConfig(fill_delay_s=0.05, api_key=KEY))
    positions = seed_accounts(sim, 2, 6)
    spare = (20003, sim.add_position(20003, "SPARE", "10"))
    state, report = tmp_path / "state", tmp_path / "report.json"
    async with sim_behind(sim, echoing()) as base_url:
        # An exception is an exit: what the API client raises holds no form of the key.
        async with api_for(base_url, api_key=KEY) as api:
            with pytest.raises(ApiError) as raised:
                await api.close_position(spare[0], spare[1], cancel_orders=False)
        err = raised.value
        texts = [str(err), repr(err), err.message, err.excerpt or "", err.request_id or ""]
        assert _leaks("\n".join(texts).encode()) == [], texts
        assert REDACTED in str(err)
        # A run from the command line: events, the report and the journal are its exits.
        process = await start_liquidator(
            sim, state, report, base_url=base_url, LIQUIDATOR_FOLLOW_PAUSE="0.02"
        )
        out, errors = await process.communicate()
    assert process.returncode == 0, errors.decode()[-2000:]
    doc = json.loads(report.read_text())
    # The orders are intact: each position closed once, its order in the report as the server
    # has it (the worker followed the ids it was sent, not a scrubbed copy).
    the_truth(sim, doc, positions, one_order=True, flat=True)
    journal = state / "journal.sqlite3"
    rows = sqlite3.connect(journal).execute("SELECT order_id, request_id FROM orders").fetchall()
    assert {i for i, _ in rows} == {o["id"] for a, i in positions for o in sim.closing_orders(a, i)}
    outputs = {"events": out, "stderr": errors, "report": report.read_bytes()}
    outputs |= {f"journal {p.name}": p.read_bytes() for p in state.rglob("*") if p.is_file()}
    for name, data in outputs.items():
        assert _leaks(data) == [], f"{name} holds the key"
    # The echoes did reach those exits, scrubbed there: this test can fail.
    assert out.count(REDACTED.encode()) >= len(positions)
    assert all(REDACTED in request_id for _, request_id in rows)
    retried = [r for r in doc["results"] if r["attempts"] > 1]
    assert len(retried) == len(positions)  # each first close was refused, with the echo


async def test_the_terminal_shows_what_the_api_echoed_scrubbed() -> None:
    sim = Simulator(SimConfig(api_key=KEY))
    sim.add_account(20001)
    sim.add_position(20001, "ECHO", "10")
    sim.book.add_resting_order(20001, "ECHO", "SELL", "5", "999")
    async with sim_behind(sim, echoing(in_client_ids=True)) as base_url:
        code, out = await run_cli(
            "status", "--account", "20001", "--base-url", base_url, "--log-format", "console",
            env=clean_env(LIQUIDATOR_API_KEY=KEY, COLUMNS="300"),
        )  # fmt: skip
    assert code == 0, out
    assert _leaks(out.encode()) == [], out
    assert f"ECHO {REDACTED}" in out  # the order's symbol, as the table shows it
