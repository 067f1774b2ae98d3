"""The metrics the worker writes pass `promtool check metrics`; deploy/'s alert rules pass
`promtool check rules` and their unit tests (`promtool test rules`); the rules and the Grafana
dashboard read only metrics the worker writes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from worker.inputs.targets import TargetSpec
from worker.output.metrics import RunFigures, write_metrics
from worker.results import Outcome, TargetResult
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Simulator

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b(liquidator_[a-z_]+)\b")


@pytest.fixture
async def written(sim: Simulator, settings_for: Any, tmp_path: Path) -> Path:
    """The metrics file of a simulator run that closed two positions on two accounts."""
    for account, symbol in ((19816, "AAPL"), (19817, "TSLA")):
        sim.add_account(account)
        sim.add_position(account, symbol, "10")
    metrics = tmp_path / "liquidator.prom"
    result = await run(
        settings_for(sim, metrics_file=metrics, follow_pause=0.02),
        RunRequest(specs=[TargetSpec(19816, "AAPL"), TargetSpec(19817, "TSLA")]),
        asyncio.Event(),
    )
    assert result.exit_code == ExitCode.OK
    assert sim.stats.by_route["close"] == 2
    return metrics


def written_names(path: Path) -> set[str]:
    return {line.split()[2] for line in path.read_text().splitlines() if line.startswith("# TYPE")}


def promtool_run(promtool: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=DEPLOY
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_metrics_of_a_run_pass_promtool_check_metrics(promtool: str, written: Path) -> None:
    text = written.read_text()
    assert 'liquidator_cost{account="all"}' in text  # the priced gauges are there with values
    assert promtool_run(promtool, "check", "metrics", stdin=text).strip() == ""


def test_promtool_check_metrics_refuses_a_gauge_named_total(promtool: str) -> None:
    """The control: the check above can fail, and fails on what the names were."""
    old = "# HELP liquidator_retries_total x\n# TYPE liquidator_retries_total gauge\n"
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=old + "liquidator_retries_total 0\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert 'non-counter metrics should not have "_total" suffix' in done.stdout + done.stderr


def test_the_exit_code_help_names_every_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    write_metrics(
        path,
        RunFigures(
            results=[TargetResult(1, "A", outcome=Outcome.CLOSED)],
            retries=0,
            reconciliations=0,
            duration_s=1.0,
            exit_code=0,
            finished_at=1000.0,
        ),
    )
    [help_line] = [
        line
        for line in path.read_text().splitlines()
        if line.startswith("# HELP liquidator_last_exit")
    ]
    assert all(
        f"{code} {word}" in help_line
        for code, word in [(0, "ok"), (1, "failed"), (2, "refused"), (3, "aborted")]
    )


def test_the_alert_rules_check_and_pass_their_unit_tests(promtool: str) -> None:
    checked = promtool_run(promtool, "check", "rules", "liquidator.rules.yml")
    assert "SUCCESS: 5 rules found" in checked
    tested = promtool_run(promtool, "test", "rules", "liquidator.rules.test.yml")
    assert "SUCCESS" in tested
    # Every alert is exercised firing by the unit tests.
    rules = (DEPLOY / "liquidator.rules.yml").read_text()
    alerts = set(re.findall(r"- alert: (\w+)", rules))
    assert alerts == {
        "LiquidatorNoSuccessToday",
        "LiquidatorRunFailed",
        "LiquidatorTargetNotFlat",
        "LiquidatorExtraOrders",
        "LiquidatorMetricsStale",
    }
    tests = (DEPLOY / "liquidator.rules.test.yml").read_text()
    firing = re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests)
    assert set(firing) == alerts


def test_the_rules_and_the_dashboard_read_only_metrics_the_worker_writes(written: Path) -> None:
    names = written_names(written)
    rules = (DEPLOY / "liquidator.rules.yml").read_text()
    rule_exprs = " ".join(re.findall(r"expr: (.*?)\n\s+(?:for|labels):", rules, flags=re.S))
    assert "liquidator_last_exit_code" in rule_exprs
    assert set(METRIC.findall(rule_exprs)) <= names
    dashboard = json.loads((DEPLOY / "grafana-liquidator.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used <= names, used - names
    # What the desk looks at: the last run, outcomes, cost, time to flat.
    assert {
        "liquidator_last_run_timestamp_seconds",
        "liquidator_last_success_timestamp_seconds",
        "liquidator_last_exit_code",
        "liquidator_positions",
        "liquidator_cost",
        "liquidator_cost_bps",
        "liquidator_time_to_flat_seconds",
    } <= used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"


def samples_of(path: Path) -> dict[str, float]:
    return {
        line.split()[0]: float(line.split()[1])
        for line in path.read_text().splitlines()
        if not line.startswith("#")
    }


def test_time_to_flat_is_from_the_start_of_closing_to_the_end(written: Path) -> None:
    samples = samples_of(written)
    time_to_flat = samples["liquidator_time_to_flat_seconds"]
    assert 0 < time_to_flat <= samples["liquidator_run_duration_seconds"]


async def test_time_to_flat_is_absent_for_a_run_that_ended_before_closing(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    from datetime import timedelta

    sim.add_account(19816)
    sim.add_position(19816, "AAPL", "10")
    sim.config.market_day = "HOLIDAY"
    metrics = tmp_path / "liquidator.prom"
    result = await run(
        settings_for(sim, metrics_file=metrics),
        RunRequest(specs=[TargetSpec(19816, None)], before_close=timedelta(minutes=15)),
        asyncio.Event(),
    )
    assert {r.outcome for r in result.results} == {Outcome.MARKET_CLOSED}
    assert sim.stats.by_route["close"] == 0
    samples = samples_of(metrics)
    assert "liquidator_run_duration_seconds" in samples
    assert "liquidator_time_to_flat_seconds" not in samples


def test_time_to_flat_is_written_as_given(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    write_metrics(
        path,
        RunFigures(
            results=[TargetResult(1, "A", outcome=Outcome.CLOSED)],
            retries=0,
            reconciliations=0,
            duration_s=11720.0,  # started by the timer at 12:30, waited for 15:45
            exit_code=0,
            finished_at=1000.0,
            time_to_flat_s=20.25,
        ),
    )
    assert samples_of(path)["liquidator_time_to_flat_seconds"] == 20.25
