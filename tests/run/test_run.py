"""A whole run against the simulator: one close per position, every order logged, the report."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support import API_KEY, envelope, events_emitted, serving, sim_behind, stopped_cleanly
from worker.inputs.targets import TargetSpec, read_targets
from worker.observe import events
from worker.output.report import ReportHead, TargetResult, write_report
from worker.results import Outcome
from worker.run.runner import ExitCode, RunRequest, Watcher, run
from worker.simulator import Faults, SimConfig, Simulator


def closing_orders_by_position(sim: Simulator, keys: list[tuple[int, str]]) -> Counter[int]:
    """How many positions got 0, 1, 2... closing orders, counted at the server."""
    return Counter(len(sim.closing_orders(a, i)) for a, i in keys)


async def test_530_positions_over_20_accounts_closed_exactly_once_each(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys: list[tuple[int, str]] = []
    lines = ["account_id,instrument"]
    for n in range(10):  # 10 whole accounts of 50 positions
        account = 30001 + n
        sim.add_account(account)
        for k in range(50):
            keys.append((account, sim.add_position(account, f"W{n}S{k}", str(10 + k))))
        lines.append(f"{account},*")
    for n in range(10):  # 10 accounts with three named instruments (and others left alone)
        account = 40001 + n
        sim.add_account(account)
        for k in range(5):
            iid = sim.add_position(account, f"N{n}S{k}", str(-(5 + k)))
            if k < 3:
                keys.append((account, iid))
                # Name by symbol and by UUID, alternately.
                lines.append(f"{account},{iid if k == 1 else f'N{n}S{k}'}")
    targets = tmp_path / "targets.csv"
    targets.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.json"

    with events_emitted() as emitted:
        result = await run(
            settings_for(sim, concurrency=16),
            RunRequest(specs=read_targets([targets]), report_path=report),
            asyncio.Event(),
        )

    assert result.exit_code == ExitCode.OK
    assert len(keys) == 530
    assert closing_orders_by_position(sim, keys) == Counter({1: 530})
    order_events = [e for e in emitted if e["event"] == events.CLOSE_ORDER]
    assert len(order_events) == 530
    assert all(e["request_id"] and e["order_id"] and e["run_id"] for e in order_events)
    doc = json.loads(report.read_text())
    counts = {
        "targets": 530,
        "closed": 530,
        "already_flat": 0,
        "failed": 0,
        "skipped": 0,
        "not_flat": 0,
        "market_closed": 0,
        "guarded": 0,
        "extra_orders": 0,
    }
    assert {k: doc["summary"][k] for k in counts} == counts
    # Without depth the simulator fills at the seeded price, the quoted midpoint: no cost.
    assert doc["summary"]["cost"] == "0.00"
    assert all(sim.position_quantity(a, i) == 0 for a, i in keys)  # closed means flat
    assert {r["outcome"] for r in doc["results"]} == {"closed"}
    # The named accounts' other two positions were left open.
    assert sim.position_quantity(40001, "N0S3") != 0


async def test_report_has_one_result_per_target_with_orders_and_request_ids(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_account(19816)
    goog = sim.add_position(19816, "GOOG", "25")
    sim.add_account(19817)
    sim.add_position(19817, "TSLA", "-50")
    report = tmp_path / "r.json"
    specs = [
        TargetSpec(19816, "GOOG"),
        TargetSpec(19816, goog),  # the same position by UUID: closed once
        TargetSpec(19816, None),  # and again as part of the whole account
        TargetSpec(19817, "TSLA"),
        TargetSpec(19817, "AAPL"),  # not held: said so, nothing sent
    ]
    result = await run(
        settings_for(sim), RunRequest(specs=specs, report_path=report), asyncio.Event()
    )
    assert result.exit_code == ExitCode.OK
    doc = json.loads(report.read_text())
    assert doc["summary"]["targets"] == 3
    by_symbol = {r["instrument"]: r for r in doc["results"]}
    assert by_symbol["AAPL"]["outcome"] == "not_held"
    assert by_symbol["AAPL"]["orders"] == []
    tsla = by_symbol["TSLA"]
    assert tsla["outcome"] == "closed"
    assert tsla["attempts"] == 1
    assert tsla["error"] is None
    assert [(o["side"], o["quantity"]) for o in tsla["orders"]] == [("BUY", "50")]
    assert len(tsla["request_ids"]) == 1
    assert len(sim.closing_orders(19816, "GOOG")) == 1
    assert {"run_id", "started_at", "finished_at", "dry_run"} <= set(doc)


async def test_concurrency_bound_is_observed_at_the_server(
    sim: Simulator, settings_for: Any
) -> None:
    sim.config.faults = {"close": Faults(latency_s=0.02)}
    sim.seed_book(4, 30)
    specs = [TargetSpec(10001 + n, None) for n in range(4)]
    result = await run(settings_for(sim, concurrency=5), RunRequest(specs=specs), asyncio.Event())
    assert result.exit_code == ExitCode.OK
    assert sim.stats.max_in_flight == 5  # the bound is reached, and never passed


async def test_rate_bound_is_observed_at_the_server(sim: Simulator, settings_for: Any) -> None:
    sim.seed_book(2, 40)
    specs = [TargetSpec(10001, None), TargetSpec(10002, None)]
    result = await run(
        settings_for(sim, concurrency=16, rate_limit=50), RunRequest(specs=specs), asyncio.Event()
    )
    assert result.exit_code == ExitCode.OK
    arrivals = sorted(sim.stats.arrivals)
    assert len(arrivals) >= 80
    most = max(sum(1 for t in arrivals if s <= t < s + 1.0) for s in arrivals)
    assert most <= 50


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(fill_delay_s=0.05, forbidden_accounts={666})


async def test_forbidden_account_fails_alone_with_exit_1(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_account(666)
    sim.add_position(666, "GOOG", "5")
    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "5")
    report = tmp_path / "r.json"
    specs = [TargetSpec(666, None), TargetSpec(666, "GOOG"), TargetSpec(19816, None)]
    result = await run(
        settings_for(sim), RunRequest(specs=specs, report_path=report), asyncio.Event()
    )
    assert result.exit_code == ExitCode.FAILED
    doc = json.loads(report.read_text())
    outcomes = {(r["account_id"], r["instrument"]): r["outcome"] for r in doc["results"]}
    assert outcomes == {(666, "*"): "failed", (666, "GOOG"): "failed", (19816, "AAPL"): "closed"}
    assert len(sim.closing_orders(19816, "AAPL")) == 1


async def test_rejected_key_aborts_with_exit_3_after_one_request(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "5")
    report = tmp_path / "r.json"
    result = await run(
        settings_for(sim, api_key="wrong.key"),
        RunRequest(specs=[TargetSpec(19816, None)], report_path=report),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.ABORTED
    assert sim.stats.requests == 1  # the key check, refused once: nothing more
    assert sim.closing_orders(19816, "AAPL") == []
    doc = json.loads(report.read_text())
    assert doc["summary"]["skipped"] == 1
    assert "wrong.key" not in report.read_text()


async def test_dry_run_sends_no_close(sim: Simulator, settings_for: Any) -> None:
    sim.seed_book(1, 10)
    result = await run(
        settings_for(sim),
        RunRequest(specs=[TargetSpec(10001, None)], dry_run=True),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.OK
    assert sim.stats.by_route["close"] == 0
    assert {str(r.outcome) for r in result.results} == {"skipped"}


async def test_unknown_account_fails_alone_as_one_star_result(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_position(19816, "AAPL", "5")
    report = tmp_path / "r.json"
    specs = [TargetSpec(424242, None), TargetSpec(19816, None)]
    result = await run(
        settings_for(sim), RunRequest(specs=specs, report_path=report), asyncio.Event()
    )
    assert result.exit_code == ExitCode.FAILED
    doc = json.loads(report.read_text())
    outcomes = {(r["account_id"], r["instrument"]): r["outcome"] for r in doc["results"]}
    assert outcomes == {(424242, "*"): "failed", (19816, "AAPL"): "closed"}
    [failed] = [r for r in doc["results"] if r["outcome"] == "failed"]
    assert "404" in failed["error"]
    assert failed["request_ids"]


async def test_a_refusal_the_spec_does_not_describe_fails_the_target_with_status_and_excerpt(
    settings_for: Any, tmp_path: Path
) -> None:
    position = {
        "account_id": 19816, "instrument_id": "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa",
        "symbol": "GOOG", "instrument_type": "COMMON_STOCK", "quantity": "25",
        "market_value": "100.00", "position_type": "LONG", "available_quantity": "25",
    }  # fmt: skip
    closes: list[str] = []

    async def clock(request: web.Request) -> web.Response:
        return envelope({"clock": "2025-03-01T03:35:00.000000000Z"})

    async def positions(request: web.Request) -> web.Response:
        return envelope([position], next_page_token=None)

    async def close(request: web.Request) -> web.Response:
        closes.append(request.path)
        return web.Response(
            status=422,
            text="<html>order rejected: instrument halted</html>",
            content_type="text/html",
            headers={"x-request-id": "rid-422"},
        )

    app = web.Application()
    app.router.add_get("/v1/clock", clock)
    app.router.add_get("/v1/accounts/19816/positions", positions)
    app.router.add_delete("/v1/accounts/19816/positions/{instrument}", close)
    async with serving(app) as base:
        result = await run(
            settings_for(base_url=base, api_key=API_KEY),
            RunRequest(specs=[TargetSpec(19816, "GOOG")]),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.FAILED
    assert closes == ["/v1/accounts/19816/positions/c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa"]
    [target] = result.results
    assert target.error is not None
    assert "status=422" in target.error
    assert "request_id=rid-422" in target.error
    assert "instrument halted" in target.error  # a short excerpt of what came back


async def test_a_journal_that_fails_mid_run_stops_every_later_close_and_the_report_is_written(
    settings_for: Any, tmp_path: Path
) -> None:
    sim = Simulator(SimConfig(fill_delay_s=3600))
    sim.add_account(50001)
    keys = [(50001, sim.add_position(50001, f"S{k}", "10")) for k in range(40)]
    journal = tmp_path / "state" / "journal.sqlite3"  # where settings_for puts it
    closes_seen = 0

    @web.middleware
    async def journal_disk_fails_after_four_closes(
        request: web.Request, handler: Any
    ) -> web.StreamResponse:
        nonlocal closes_seen
        if request.method == "DELETE":
            closes_seen += 1
            if closes_seen == 4:
                with sqlite3.connect(journal) as other:
                    other.execute("DROP TABLE attempts")  # every later intent commit fails
        response: web.StreamResponse = await handler(request)
        return response

    report = tmp_path / "r.json"
    async with sim_behind(sim, journal_disk_fails_after_four_closes) as base_url:
        settings = settings_for(base_url=base_url, api_key=sim.config.api_key, concurrency=2)
        result = await run(
            settings,
            RunRequest(specs=[TargetSpec(50001, None)], report_path=report),
            asyncio.Event(),
        )

    assert result.exit_code == ExitCode.ABORTED
    outcomes = stopped_cleanly(report, sim, keys, why="journal")
    # Sent (their orders never fill here): at least the four before the failure, and those whose
    # intents were committed ahead before it. How many is up to the race between the journal's
    # commit thread and the fan-out's sends (4 to 12 seen): a bound, not one number.
    assert 4 <= outcomes["not_flat"] < 40


async def test_a_journal_that_cannot_be_read_refuses_before_any_request_and_reports(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_account(50002)
    keys = [(50002, sim.add_position(50002, f"S{k}", "10")) for k in range(3)]
    (tmp_path / "state").mkdir()
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite3") as foreign:
        foreign.execute("CREATE TABLE attempts (something_else TEXT)")  # not our schema
    report = tmp_path / "r.json"
    result = await run(
        settings_for(sim),
        RunRequest(specs=[TargetSpec(50002, None), TargetSpec(50002, "S1")], report_path=report),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.INVALID  # checked at open, before the key check
    assert sim.stats.requests == 0
    assert sum(len(sim.closing_orders(a, i)) for a, i in keys) == 0
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 2
    assert doc["summary"]["targets"] == doc["summary"]["skipped"] == 2  # as named: not planned
    assert "journal.sqlite3 is damaged" in doc["aborted"]


async def test_a_report_that_cannot_be_written_leaves_a_last_report_with_exit_3(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "10")
    settings = settings_for(sim)
    report = tmp_path / "a-dir"
    report.mkdir()  # no report can be renamed over a directory
    result = await run(
        settings,
        RunRequest(specs=[TargetSpec(19816, None)], report_path=report),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.ABORTED
    doc = json.loads((settings.journal_dir / "last-report.json").read_text())
    assert doc["exit_code"] == 3
    assert doc["summary"]["closed"] == 1


def test_the_report_keeps_a_result_whose_error_has_a_lone_surrogate(tmp_path: Path) -> None:
    message = json.loads('"HTTP 422: rejected \\ud800"')  # a server's message, as decoded
    failed = TargetResult(19816, "GOOG", outcome=Outcome.FAILED, error=message)
    report = tmp_path / "r.json"
    at = datetime(2026, 11, 25, tzinfo=UTC)
    write_report(
        report, ReportHead("r", at, at, dry_run=False, exit_code=1, aborted=None), [failed]
    )
    assert json.loads(report.read_text())["results"][0]["error"] == message


async def test_a_fault_in_a_worker_stops_the_run_and_every_target_is_still_reported(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    sim.add_account(50003)
    keys = [(50003, sim.add_position(50003, f"S{k}", "10")) for k in range(100)]
    # Results are final once read flat: slow closes leave targets unstarted when it breaks.
    sim.config.faults = {"close": Faults(latency_s=0.05)}
    seen = 0

    class ProgressDisplayThatBreaks(Watcher):
        def advance(self, result: TargetResult) -> None:
            nonlocal seen
            seen += 1
            if seen == 3:
                raise RuntimeError("the progress display broke")

    report = tmp_path / "r.json"
    with events_emitted() as emitted:
        result = await run(
            settings_for(sim, concurrency=2),
            RunRequest(
                specs=[TargetSpec(50003, None)],
                report_path=report,
                watcher=ProgressDisplayThatBreaks(),
            ),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.ABORTED
    outcomes = stopped_cleanly(report, sim, keys, why="internal error: RuntimeError")
    assert outcomes["skipped"] > 0  # no new target started after the fault
    [fault] = [e for e in emitted if e["event"] == events.INTERNAL_ERROR]
    assert "the progress display broke" in fault["traceback"]
