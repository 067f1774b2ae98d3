"""`liquidator journal` and `liquidator journal verify`, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import FAST_FOLLOW, seed_accounts
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, Simulator


async def liquidator(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQUIDATOR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def flatten(sim: Simulator, settings: Any) -> None:
    result = await run(settings, RunRequest(specs=[TargetSpec(20001, None)]), asyncio.Event())
    assert result.exit_code == ExitCode.OK


async def test_journal_shows_todays_job_intents_and_outcomes_as_json(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 1, 5)
    await flatten(sim, settings_for(sim))
    code, out, err = await liquidator("journal", "--state-dir", str(tmp_path / "state"))
    assert code == 0, err
    doc = json.loads(out)
    [job] = doc["jobs"]
    assert job["job"].startswith("accounts|")  # the trading day's job, no URL in it
    assert len(job["runs"]) == 1
    assert job["runs"][0]["exit_code"] == 0
    intents = {(i["account_id"], i["instrument_id"]): i for i in job["intents"]}
    assert set(intents) == set(positions)
    assert {i["result"] for i in intents.values()} == {"ok"}
    assert {o["outcome"] for o in job["outcomes"]} == {"closed"}
    assert {i["client_id"] for i in intents.values()} == {None}  # close_position sends none
    code, out, _ = await liquidator(
        "journal", "--state-dir", str(tmp_path / "state"), "--day", "2001-01-01"
    )
    assert json.loads(out)["jobs"] == []


async def test_journal_shows_the_client_id_each_submission_went_under(
    sim: Simulator, settings_for: Any, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    positions = seed_accounts(sim, 1, 8)
    # Applied, then a 500: sent again under the same id (409, found), a second intent each.
    sim.config.faults = {"submit": Faults(p_500_after=0.5)}
    settings = settings_for(sim, close_via="submit_orders", retry_backoff=0.01, **FAST_FOLLOW)
    result = await run(settings, RunRequest(specs=[TargetSpec(20001, None)]), asyncio.Event())
    assert result.exit_code == ExitCode.OK
    code, out, err = await liquidator("journal", "--state-dir", str(tmp_path / "state"))
    assert code == 0, err
    [job] = json.loads(out)["jobs"]
    # One row per order sent, each sent once: counted at the server, which reads every order of
    # a batch (a request carries several).
    assert len(job["intents"]) == sum(sim.stats.submit_batch_sizes)
    assert sim.stats.by_route["submit"] < len(job["intents"]), "the orders went out in batches"
    attempts = {(i["account_id"], i["instrument_id"], i["attempt"]) for i in job["intents"]}
    assert len(attempts) == len(job["intents"])
    assert any(i["attempt"] > 1 for i in job["intents"]), "no close was sent twice"
    assert {i["generation"] for i in job["intents"]} == {0}
    intents = {(i["account_id"], i["instrument_id"]): i for i in job["intents"]}
    assert set(intents) == set(positions)
    # Each position's one order carries the id every one of its intents recorded.
    for account_id, instrument_id in positions:
        [order] = [o for o in sim.orders_of(account_id) if o["instrument_id"] == instrument_id]
        sent_under = {
            i["client_id"]
            for i in job["intents"]
            if (i["account_id"], i["instrument_id"]) == (account_id, instrument_id)
        }
        assert sent_under == {order["client_order_id"]}
    # The table (on a terminal) gets a column for them, whole; close_position's has none.
    from worker.journal.view import _print

    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "240")
    _print(False, {"journal": "j", "trading_day": "d", "jobs": [job]})
    table = capsys.readouterr().out
    assert "client id" in table
    assert all(i["client_id"] in table for i in intents.values())
    for i in job["intents"]:
        i["client_id"] = None
    _print(False, {"journal": "j", "trading_day": "d", "jobs": [job]})
    assert "client id" not in capsys.readouterr().out
    # A client id without its intent, or whose run is gone, is a sign that something was lost.
    state = str(tmp_path / "state")
    journal = tmp_path / "state" / "journal.sqlite3"
    with sqlite3.connect(journal) as db:
        db.execute("DELETE FROM attempts WHERE attempt = 1")
    code, out, _ = await liquidator("journal", "verify", "--state-dir", state)
    assert code == 2
    problems = json.loads(out)["problems"]
    assert any("8 client ids have no intent beside them" in p for p in problems), problems
    with sqlite3.connect(journal) as db:
        db.execute("DELETE FROM runs")
    code, out, _ = await liquidator("journal", "verify", "--state-dir", state)
    problems = json.loads(out)["problems"]
    assert any(f"{len(attempts)} client ids name a run it" in p for p in problems), problems


async def test_a_journal_written_before_client_ids_existed_shows_and_verifies(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    positions = seed_accounts(sim, 1, 2)
    await flatten(sim, settings_for(sim))
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite3") as db:
        db.execute("DROP TABLE client_ids")
    code, out, err = await liquidator("journal", "--state-dir", str(tmp_path / "state"))
    assert code == 0, err
    [job] = json.loads(out)["jobs"]
    assert len(job["intents"]) == len(positions)
    assert {i["client_id"] for i in job["intents"]} == {None}
    # Sound, not damaged: the next run that opens it adds the table.
    code, out, _ = await liquidator("journal", "verify", "--state-dir", str(tmp_path / "state"))
    assert code == 0, out
    assert json.loads(out)["ok"] is True


async def test_journal_verify_passes_a_sound_journal_and_names_a_damaged_log(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    await flatten(sim, settings_for(sim))
    state = str(tmp_path / "state")
    code, out, _ = await liquidator("journal", "verify", "--state-dir", state)
    assert code == 0
    assert json.loads(out) | {"runs": 1, "intents": 3} == json.loads(out)
    assert json.loads(out)["ok"] is True
    (tmp_path / "state" / "journal.sqlite3-wal").write_bytes(os.urandom(200))
    code, out, _ = await liquidator("journal", "verify", "--state-dir", state)
    assert code == 2
    doc = json.loads(out)
    assert doc["ok"] is False
    assert "journal.sqlite3-wal" in doc["problems"][0]
    code, _, err = await liquidator("journal", "--state-dir", state)
    assert code == 2
    assert "journal.sqlite3-wal" in err


async def test_journal_verify_finds_intents_of_a_run_it_has_no_record_of(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 2)
    await flatten(sim, settings_for(sim))
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite3") as db:
        db.execute("DELETE FROM runs")
    code, out, _ = await liquidator("journal", "verify", "--state-dir", str(tmp_path / "state"))
    assert code == 2
    assert "2 intents name a run it has no record of" in json.loads(out)["problems"][0]


async def test_journal_verify_on_postgresql(
    sim: Simulator, settings_for: Any, tmp_path: Path, pg_url: str
) -> None:
    seed_accounts(sim, 1, 2)
    await flatten(sim, settings_for(sim, journal_url=pg_url))
    assert not (tmp_path / "state" / "journal.sqlite3").exists()  # nothing written locally
    code, out, err = await liquidator("journal", "verify", "--journal-url", pg_url)
    assert code == 0, err
    assert json.loads(out)["intents"] == 2
    code, out, err = await liquidator("journal", "--journal-url", pg_url)
    assert code == 0, err
    assert len(json.loads(out)["jobs"][0]["intents"]) == 2


async def test_a_postgresql_journal_without_its_driver_refuses_before_any_request(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 2)
    without_psycopg = (
        "import sys; sys.modules['psycopg'] = None; from worker.cli.main import main;"
        " sys.exit(main(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQUIDATOR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", without_psycopg, "run", "--yes",
        "--base-url", sim.base_url, "--account", "20001",
        "--journal-url", "postgresql://liq:hunter2@127.0.0.1:1/journal",
        "--report", str(tmp_path / "r.json"), "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**env, "LIQUIDATOR_API_KEY": sim.config.api_key},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, out
    # liquidator is not on a package index: the hint installs from the checkout.
    assert b".venv/bin/pip install -e '.[postgres]'" in out
    assert b"pip install 'liquidator[postgres]'" not in out
    assert b"hunter2" not in out
    assert sim.stats.requests == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", without_psycopg, "journal",
        "--journal-url", "postgresql://liq:hunter2@127.0.0.1:1/journal",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, out
    assert b".venv/bin/pip install -e '.[postgres]'" in out
    assert b"hunter2" not in out


async def test_journal_verify_where_there_is_no_journal_is_not_ok(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    code, out, err = await liquidator("journal", "verify", "--state-dir", str(typo))
    assert code == 2, (out, err)
    doc = json.loads(out)
    assert (doc["ok"], doc["missing"]) == (False, True)
    assert f"the directory {typo} does not exist" in doc["problems"][0]
    assert not typo.exists()  # looking created nothing
    typo.mkdir()
    code, out, _ = await liquidator("journal", "verify", "--state-dir", str(typo))
    assert code == 2
    assert "no run has written one" in json.loads(out)["problems"][0]
    code, out, err = await liquidator("journal", "--state-dir", str(tmp_path / "gone"))
    assert code == 2
    assert "no journal at" in err
    assert "does not exist" in err


async def test_journal_day_must_be_a_date(tmp_path: Path) -> None:
    for day in ("yesterday", "2025-13-01", "20251003", "2025-1-3"):
        code, out, err = await liquidator("journal", "--state-dir", str(tmp_path), "--day", day)
        assert code == 2, (day, out)
        assert "argument --day: expected a date as YYYY-MM-DD" in err


def test_journal_table_names_the_search_start_for_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.journal import view as journal_view

    monkeypatch.setenv("COLUMNS", "200")
    journal_view._print(
        False,
        {
            "journal": "j",
            "trading_day": "2025-10-03",
            "jobs": [
                {
                    "job": "x",
                    "runs": [],
                    "outcomes": [],
                    "intents": [
                        {"account_id": 1, "instrument_id": "i", "attempt": 1,
                         "since": "2025-10-03T14:00:00+00:00", "result": "ok", "client_id": None}
                    ],
                }
            ],
        },
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "orders searched from" in out
    assert "│ since" not in out
