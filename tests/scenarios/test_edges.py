"""Truthful edges: typos, a closed market, outputs that cannot be written, undecodable replies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.support import api_for, clean_env, events_emitted, run_cli, serving, sim_behind
from worker.api.client import MAX_REPLY_BYTES
from worker.errors import OutcomeUnknown
from worker.inputs.targets import TargetSpec
from worker.observe import events
from worker.results import Fate, Outcome
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Simulator

CLOSE_PATH = "/v1/accounts/19816/positions/GOOG"


async def test_a_typo_fails_as_unknown_instrument_and_a_known_one_not_held_is_not_held(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "10")
    with events_emitted() as emitted:
        result = await run(
            settings_for(sim, flat_timeout=2, follow_pause=0.02),
            RunRequest(specs=[TargetSpec(19816, "APPL"), TargetSpec(19816, "MSFT")]),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.FAILED
    by_name = {r.instrument: r for r in result.results}
    assert by_name["APPL"].outcome is Outcome.FAILED
    assert "unknown instrument" in (by_name["APPL"].error or "")
    assert by_name["MSFT"].outcome is Outcome.NOT_HELD
    assert by_name["MSFT"].error == "not held; account 19816 holds nothing in or on MSFT"
    settled = [e for e in emitted if e["event"] == events.TARGET_SETTLED]
    assert [e["instrument"] for e in settled] == ["MSFT"]
    assert sim.stats.by_route["close"] == 0
    assert sim.position_quantity(19816, "AAPL") == 10  # not named: left alone


async def test_a_market_closed_run_is_no_success_in_the_metrics(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    from datetime import timedelta

    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "10")
    sim.config.market_day = "HOLIDAY"
    metrics = tmp_path / "liquidator.prom"
    metrics.write_text("liquidator_last_success_timestamp_seconds 1000.000\n")
    result = await run(
        settings_for(sim, metrics_file=metrics),
        RunRequest(specs=[TargetSpec(19816, None)], before_close=timedelta(minutes=15)),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.OK
    assert {r.outcome for r in result.results} == {Outcome.MARKET_CLOSED}
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for f in text_string_to_metric_families(metrics.read_text())
        for s in f.samples
    }
    assert samples[("liquidator_positions", (("outcome", "market_closed"),))] == 1
    assert samples[("liquidator_last_success_timestamp_seconds", ())] == 1000.0
    assert sim.stats.by_route["close"] == 0


async def test_a_report_that_cannot_be_written_is_one_line_exit_3_and_the_metrics_still_written(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "10")
    report = tmp_path / "report.json"
    report.mkdir()  # became a directory after the start-up check
    metrics = tmp_path / "liquidator.prom"
    result = await run(
        settings_for(sim, metrics_file=metrics, follow_pause=0.02),
        RunRequest(specs=[TargetSpec(19816, None)], report_path=report),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.ABORTED
    [line] = result.write_failures
    assert str(report) in line
    assert "\n" not in line
    assert "liquidator_last_exit_code" in metrics.read_text()
    assert sim.position_quantity(19816, "AAPL") == 0


async def test_a_report_path_that_is_a_directory_refuses_before_any_request(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_account(20001)
    sim.add_position(20001, "AAPL", "10")
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key)
    code, out = await run_cli(
        "run", "--yes", "--base-url", sim.base_url, "--account", "20001",
        "--report", str(tmp_path), env=env,
    )  # fmt: skip
    assert code == 2, out
    assert "directory" in out
    assert sim.stats.requests == 0


@pytest.mark.parametrize("where", ["a-file/node-exporter/liquidator.prom", "."])
async def test_metrics_that_cannot_be_written_never_stop_the_flatten_nor_change_its_exit_code(
    sim: Simulator, tmp_path: Path, where: str
) -> None:
    """The shipped unit names node_exporter's textfile directory; a host without it must still
    flatten: a warning before the first close, an error event at the end, exit 0 (the book is
    flat), the report written."""
    sim.add_account(20001)
    sim.add_position(20001, "AAPL", "10")
    sim.add_position(20001, "TSLA", "-5")
    sim.config.fill_delay_s = 0.05
    (tmp_path / "a-file").write_text("")  # the directory cannot be made (as on a read-only /var)
    metrics = tmp_path / where
    report = tmp_path / "r.json"
    env = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        LIQUIDATOR_STATE_DIR=str(tmp_path / "state"),
        LIQUIDATOR_LOG_FORMAT="json",
        LIQUIDATOR_FOLLOW_PAUSE="0.02",
    )
    code, out = await run_cli(
        "run", "--yes", "--base-url", sim.base_url, "--account", "20001",
        "--report", str(report), "--metrics-file", str(metrics), env=env,
    )  # fmt: skip
    assert code == 0, out
    assert sim.position_quantity(20001, "AAPL") == 0
    assert sim.position_quantity(20001, "TSLA") == 0
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = [e["event"] for e in lines]
    assert names.index("metrics_unavailable") < names.index("close_order")
    [failed] = [e for e in lines if e["event"] == "write_failed"]
    assert failed["what"] == "metrics"
    assert f"could not write the metrics {metrics}" in out  # the one line on stderr
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 0
    assert doc["summary"]["closed"] == 2


async def test_the_dry_run_report_carries_each_positions_side_and_quantity(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "10")
    sim.add_position(19816, "TSLA", "-5")
    report = tmp_path / "r.json"
    await run(
        settings_for(sim),
        RunRequest(specs=[TargetSpec(19816, None)], dry_run=True, report_path=report),
        asyncio.Event(),
    )
    results = {r["symbol"]: r for r in json.loads(report.read_text())["results"]}
    assert (results["AAPL"]["side"], results["AAPL"]["quantity"]) == ("LONG", "10")
    assert (results["TSLA"]["side"], results["TSLA"]["quantity"]) == ("SHORT", "-5")
    assert {r["fate"] for r in results.values()} == {"not_sent"}


def deep_json() -> bytes:
    return b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


SENT = web.AppKey("sent", list[int])


async def endless(request: web.Request) -> web.StreamResponse:
    """A 300 MB reply, streamed without a length; counts what it managed to send."""
    response = web.StreamResponse()
    await response.prepare(request)
    chunk = b" " * (1024 * 1024)
    sent = request.app[SENT]
    try:
        for _ in range(300):
            await response.write(chunk)
            sent[0] += len(chunk)
    except (ConnectionError, RuntimeError):
        pass
    return response


async def nested(request: web.Request) -> web.Response:
    return web.Response(body=deep_json(), content_type="application/json")


async def invalid_utf8(request: web.Request) -> web.Response:
    body = b'{"data": [], "metadata": {"request_id": "\xff"}}'
    return web.Response(body=body, content_type="application/json")


async def not_the_envelope(request: web.Request) -> web.Response:
    return web.json_response([1, 2, 3])


async def declared_9_mb(request: web.Request) -> web.Response:
    return web.Response(body=b" " * (MAX_REPLY_BYTES + 1), content_type="application/json")


REPLIES: list[tuple[str, Any]] = [
    ("nested 100,000 deep", nested),
    ("invalid UTF-8", invalid_utf8),
    ("not the envelope", not_the_envelope),
    ("declared 9 MB", declared_9_mb),
    ("streamed 300 MB", endless),
]


@pytest.fixture
async def replying(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, list[int]]]:
    _, handler = request.param
    app = web.Application()
    app[SENT] = sent = [0]
    app.router.add_delete(CLOSE_PATH, handler)
    app.router.add_get("/v1/accounts/19816/positions", handler)
    async with serving(app) as base:
        yield base, sent


@pytest.mark.parametrize("replying", REPLIES, indirect=True, ids=[n for n, _ in REPLIES])
async def test_an_undecodable_reply_is_an_unknown_outcome_for_a_close_and_a_failed_read(
    replying: tuple[str, list[int]],
) -> None:
    base, sent = replying
    async with api_for(base, request_timeout=10) as api:
        with pytest.raises(OutcomeUnknown):
            await api.close_position(19816, "GOOG", cancel_orders=True)
        with pytest.raises(OutcomeUnknown):
            await api.get_positions(19816)
    assert sent[0] < 64 * 1024 * 1024  # refused long before the whole body


async def test_a_run_whose_close_reply_is_nested_too_deep_finds_its_order_and_ends_flat(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "25")

    @web.middleware
    async def deep_reply_to_closes(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)  # applied
        if request.method == "DELETE":
            return web.Response(body=deep_json(), content_type="application/json")
        return response

    async with sim_behind(sim, deep_reply_to_closes) as base_url:
        result = await run(
            settings_for(
                base_url=base_url, api_key=sim.config.api_key, follow_pause=0.02, flat_timeout=2
            ),
            RunRequest(specs=[TargetSpec(19816, "GOOG")]),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.OK
    [target] = result.results
    assert target.outcome is Outcome.CLOSED
    assert target.fate is Fate.APPLIED
    assert target.reconciled
    assert len(sim.closing_orders(19816, "GOOG")) == 1
    assert sim.position_quantity(19816, "GOOG") == 0


async def test_every_target_failed_at_planning_is_named_in_the_stream_and_counted_apart(
    sim: Simulator,
) -> None:
    sim.add_account(20001)
    sim.add_position(20001, "AAPL", "10")
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key)
    code, out = await run_cli(
        "run", "--dry-run", "--log-format", "json", "--base-url", sim.base_url,
        "--account", "20001", "--account", "99999", "--position", "99998:GOOG",
        "--position", "20001:APPL", "--position", "20001:MSFT", env=env,
    )  # fmt: skip
    assert code == 1, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    failed = {(e["account_id"], e["instrument"]): e for e in lines if e["event"] == "close_failed"}
    assert set(failed) == {(99999, "*"), (99998, "GOOG"), (20001, "APPL")}
    assert "could not list the account's positions" in failed[(99999, "*")]["error"]
    assert failed[(99999, "*")]["status"] == 404
    assert "unknown instrument 'APPL'" in failed[(20001, "APPL")]["error"]
    [ready] = [e for e in lines if e["event"] == "plan_ready"]
    assert (ready["positions"], ready["already_settled"], ready["failed"]) == (1, 1, 3)
    assert sim.stats.by_route["close"] == 0
