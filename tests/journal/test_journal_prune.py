"""Journal retention: `Journal.prune`, `liquidator journal prune` and the prune at the end of a
run, on SQLite and on PostgreSQL. What a rerun and an audit need stays; `verify` stays sound."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support import clean_env, event_lines, run_cli
from worker.api.models import Order
from worker.inputs.settings import Settings
from worker.journal import view
from worker.journal.keys import job_key
from worker.journal.postgres import PgJournal
from worker.journal.prune import CHILD_TABLES, cutoff
from worker.journal.sqlite import SqliteStore
from worker.journal.store import Intent, Journal
from worker.results import Outcome, TargetResult
from worker.simulator import Simulator

T0 = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
API = "http://localhost:8765"
TABLES = (*CHILD_TABLES, "runs")


def job(day: str) -> str:
    return job_key(day)


def order(order_id: str) -> Order:
    return Order.model_validate(
        {
            "id": order_id,
            "client_order_id": f"lq-{order_id}",
            "account_id": 7,
            "side": "SELL",
            "quantity": Decimal(10),
            "order_type": "MARKET",
            "status": "FILLED",
            "filled_quantity": Decimal(10),
            "created_at": T0,
        }
    )


async def a_run(
    journal: Journal,
    run_id: str,
    day: str,
    *,
    finished: bool = True,
    replied: bool = True,
    later_s: int = 0,
) -> None:
    """One run of `day`'s job: an intent with its client id, its reply (unless not
    `replied`), an order and an outcome; finished unless not `finished`."""
    journal.start_run(
        run_id=run_id,
        job=job(day),
        base_url=API,
        trading_day=day,
        started_at=T0 + timedelta(seconds=later_s),
        dry_run=False,
    )
    await journal.record_intent(
        run_id, Intent(7, "i1", 1, T0, client_id=f"c-{run_id}", generation=0)
    )
    if replied:
        journal.attempt_result(run_id, 7, "i1", 1, "req", "accepted")
    journal.orders(run_id, 7, "i1", [order(f"o-{run_id}")], "req", reconciled=False)
    journal.outcome(run_id, TargetResult(7, "AAA", "i1", "AAA", Outcome.CLOSED), "10")
    if finished:
        journal.finish_run(run_id, T0, 0)
    journal.flush()


async def seeded(journal: Journal) -> None:
    await a_run(journal, "a1", "2026-01-05")  # old, finished, replied: pruned
    await a_run(journal, "b1", "2026-01-06", finished=False)  # last run killed: kept
    await a_run(journal, "c1", "2026-01-07", replied=False, finished=False)  # killed, then
    await a_run(journal, "c2", "2026-01-07", later_s=60)  # a rerun that finished the job: pruned
    await a_run(journal, "d1", "2026-01-08", replied=False)  # no reply, nothing after: kept
    await a_run(journal, "e1", "2026-03-01")  # the first day kept


def run_ids(journal: Journal) -> dict[str, set[str]]:
    store = journal._store
    return {t: {r[0] for r in store.read(f"SELECT run_id FROM {t}", ())} for t in TABLES}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if request.param == "sqlite":
        return "sqlite", None
    return "postgres", str(request.getfixturevalue("pg_url"))


async def open_backend(backend: tuple[str, str | None], tmp_path: Path) -> Journal:
    kind, url = backend
    if kind == "sqlite":
        return Journal(SqliteStore(tmp_path / "state" / "journal.sqlite3"))
    assert url is not None
    return await PgJournal.open(url, scope=API, lock_wait=0)


def settings_of(
    backend: tuple[str, str | None], tmp_path: Path, settings_for: Callable[..., Settings]
) -> Settings:
    _, url = backend
    return settings_for(base_url=API, api_key="k.s", journal_url=url)


def verify_ok(settings: Settings, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    code = view.verify(settings, as_json=True)
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["ok"] is True
    return doc


def test_cutoff_always_keeps_today() -> None:
    assert cutoff(date(2026, 3, 31), 30) == "2026-03-01"
    assert cutoff(date(2026, 3, 31), 0) == "2026-03-31"  # jobs before today: never today's


async def test_prune_deletes_old_finished_jobs_whole_and_keeps_what_a_rerun_or_audit_needs(
    backend: tuple[str, str | None],
    tmp_path: Path,
    settings_for: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    journal = await open_backend(backend, tmp_path)
    await seeded(journal)
    before = run_ids(journal)
    dry = journal.prune("2026-03-01", dry_run=True)
    assert run_ids(journal) == before  # a dry run deletes nothing
    assert dry.jobs == [job("2026-01-05"), job("2026-01-07")]
    assert dry.rows["runs"] == 3
    assert dry.rows["attempts"] == 3
    assert dry.rows["orders"] == 3
    assert dry.rows["targets"] == 3
    pruned = journal.prune("2026-03-01")
    assert pruned.jobs == dry.jobs
    assert pruned.rows == dry.rows
    assert set(pruned.kept) == {job("2026-01-06"), job("2026-01-08")}
    assert "never finished" in pruned.kept[job("2026-01-06")]
    assert "no reply" in pruned.kept[job("2026-01-08")]
    after = run_ids(journal)
    for table in ("runs", "attempts", "client_ids", "orders", "targets", "run_clock"):
        assert after[table] == {"b1", "d1", "e1"}, table
    assert after["attempt_results"] == {"b1", "e1"}  # d1's intent never had one
    # What a rerun of the kept jobs reads is whole: its earlier runs' intents and client ids.
    assert set(journal.priors(job("2026-03-01"), "rerun")) == {(7, "i1")}
    assert journal.priors(job("2026-03-01"), "rerun")[(7, "i1")].generation == 0
    assert set(journal.priors(job("2026-01-08"), "rerun")) == {(7, "i1")}
    again = journal.prune("2026-03-01")
    assert again.jobs == []
    assert sum(again.rows.values()) == 0
    journal.close()
    doc = verify_ok(settings_of(backend, tmp_path, settings_for), capsys)
    assert (doc["runs"], doc["intents"]) == (3, 3)


async def test_journal_prune_command_dry_run_then_prune_then_verify(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = Journal(SqliteStore(tmp_path / "journal.sqlite3"))
    today = datetime.now(UTC).date().isoformat()
    await a_run(journal, "old", "2020-01-02")
    await a_run(journal, "now", today)
    journal.close()
    env = clean_env(STATE_DIRECTORY=str(tmp_path))
    code, out = await run_cli("journal", "prune", "--keep-days", "30", "--dry-run", "--json",
                              env=env)  # fmt: skip
    assert code == 0, out
    doc = json.loads(out)
    assert (doc["dry_run"], doc["jobs_pruned"]) == (True, [job("2020-01-02")])
    code, out = await run_cli("journal", "prune", "--keep-days", "30", env=env)
    assert code == 0, out
    doc = json.loads(out)
    assert (doc["dry_run"], doc["jobs_pruned"], doc["rows"]["runs"]) == (
        False,
        [job("2020-01-02")],
        1,
    )
    assert doc["rows"]["targets"] == 1
    code, out = await run_cli("journal", "verify", "--json", env=env)
    assert code == 0, out
    assert json.loads(out)["runs"] == 1
    code, out = await run_cli("journal", "prune", "--keep-days", "0", env=env)
    assert code == 2, out
    assert "at least 1" in out
    code, out = await run_cli("journal", "--dry-run", env=env)
    assert code == 2, out


async def test_a_run_that_ends_0_prunes_old_jobs_and_retention_off_keeps_them(
    sim: Simulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    journal = Journal(SqliteStore(state / "journal.sqlite3"))
    await a_run(journal, "old", "2020-01-02")
    journal.close()
    sim.add_account(20001)
    sim.add_position(20001, "AAA", "10")
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(state))
    base = ("run", "--yes", "--base-url", sim.base_url, "--log-format", "json")
    code, out = await run_cli(*base, "--account", "20001",
                              env={**env, "LIQUIDATOR_JOURNAL_KEEP_DAYS": "off"})  # fmt: skip
    assert code == 0, out
    assert not event_lines(out, "journal_pruned")
    sim.add_position(20001, "BBB", "10")
    code, out = await run_cli(*base, "--position", "20001:BBB", env=env)  # the default: 90
    assert code == 0, out
    [pruned] = event_lines(out, "journal_pruned")
    assert (pruned["jobs_pruned"], pruned["jobs_kept"]) == (1, 0)
    code, out = await run_cli("journal", "verify", "--json", env=env)
    assert code == 0, out
    assert json.loads(out)["runs"] == 2  # today's two runs
    assert sim.stats.by_route["close"] == 2
