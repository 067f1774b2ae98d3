"""The journal group-commits intents before sends; metrics parse as Prometheus text."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import events_emitted
from worker.errors import JournalError
from worker.inputs.targets import TargetSpec
from worker.journal.schema import SCHEMA as _SCHEMA
from worker.journal.store import RECORD_BATCH, Intent, Journal
from worker.output.metrics import RunFigures, write_metrics
from worker.results import Outcome, TargetResult
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, Simulator

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def committed_attempts(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])


def run_r1(tmp_path: Path) -> tuple[Journal, list[str]]:
    """A journal in `tmp_path` with run r1 started, and every statement it executes from here."""
    journal = Journal.in_dir(tmp_path)
    journal.start_run(
        run_id="r1", job="j", base_url="u", trading_day="d", started_at=T0, dry_run=False
    )
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    return journal, statements


async def test_intents_are_committed_before_intent_returns_and_batched(tmp_path: Path) -> None:
    journal, statements = run_r1(tmp_path)
    seen_by_other_connection: list[int] = []

    async def close(n: int) -> None:
        await journal.record_intent("r1", Intent(1, f"i{n}", 1, T0))
        # Another connection (a later process) must already see this intent.
        seen_by_other_connection.append(committed_attempts(journal.path))

    await asyncio.gather(*(close(n) for n in range(50)))
    assert min(seen_by_other_connection) == 50
    assert statements.count("COMMIT") == 1  # fifty closes within the window share one commit
    journal.close()


def test_records_go_a_few_hundred_rows_a_statement_and_the_run_end_in_their_commit(
    tmp_path: Path,
) -> None:
    """One INSERT per ROWS_PER_STATEMENT rows (not a step per row), every row kept."""
    journal, statements = run_r1(tmp_path)
    for n in range(450):
        journal.attempt_result("r1", 1, f"i{n}", 1, f"req{n}", "ok")
    journal.finish_run("r1", T0, 0)
    inserts = [s for s in statements if s.startswith("INSERT OR REPLACE INTO attempt_results")]
    assert len(inserts) == 3  # 200, 200 and 50 rows
    assert statements.count("COMMIT") == 1  # the run's end rides with its last records
    with sqlite3.connect(journal.path) as db:
        rows = db.execute("SELECT instrument_id, request_id FROM attempt_results").fetchall()
        ended = db.execute("SELECT exit_code FROM runs WHERE run_id = 'r1'").fetchone()
    assert sorted(rows) == sorted((f"i{n}", f"req{n}") for n in range(450))
    assert ended == (0,)
    journal.close()


def test_fewer_rows_a_statement_under_a_lower_sqlite_limit_and_a_short_row_is_refused(
    tmp_path: Path,
) -> None:
    journal, statements = run_r1(tmp_path)
    journal._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # SQLite before 3.32
    for n in range(450):
        journal.attempt_result("r1", 1, f"i{n}", 1, f"req{n}", "ok")
    journal.flush()
    inserts = [s for s in statements if s.startswith("INSERT OR REPLACE INTO attempt_results")]
    assert len(inserts) == 3  # 166 rows of 6 values, twice, then 118
    # Flattened into one statement, a short row would shift its neighbours' values: refused.
    journal._queue("attempt_results", ("r1", 1, "i0", 2, "req"))
    journal._queue("attempt_results", ("ok", "r1", 1, "i1", 2, "req", "ok"))
    with pytest.raises(JournalError, match="does not have 6 values"):
        journal.flush()
    with sqlite3.connect(journal.path) as db:
        assert db.execute("SELECT count(*) FROM attempt_results").fetchone() == (450,)
    with pytest.raises(JournalError):
        journal.close()


async def test_intents_recorded_ahead_are_one_commit_claimed_without_another_and_withdrawn(
    tmp_path: Path,
) -> None:
    journal, statements = run_r1(tmp_path)
    ahead = [Intent(1, f"i{n}", 1, T0, client_id=f"c{n}") for n in range(6)]
    await journal.intents_ahead("r1", ahead)
    assert statements.count("COMMIT") == 1
    assert committed_attempts(journal.path) == 6
    # The same close, claimed: on disk already, so no commit. A different client id is not it.
    await journal.record_intent("r1", Intent(1, "i0", 1, T0.replace(hour=21), client_id="c0"))
    await journal.record_intent("r1", Intent(1, "i1", 1, T0, client_id="other", generation=1))
    await journal.record_intent("r1", Intent(1, "i2", 2, T0))  # a re-send: its own intent
    assert statements.count("COMMIT") == 3
    journal.finish_run("r1", T0, 0)  # i3..i5 were never sent: withdrawn
    with sqlite3.connect(journal.path) as db:
        rows = sorted(db.execute("SELECT instrument_id, attempt FROM attempts"))
        client_ids = sorted(db.execute("SELECT instrument_id, client_id FROM client_ids"))
    assert rows == [("i0", 1), ("i1", 1), ("i2", 2)]
    assert client_ids == [("i0", "c0"), ("i1", "other")]
    journal.close()


async def test_intents_whose_commit_is_queued_at_the_end_are_still_withdrawn(
    tmp_path: Path,
) -> None:
    """The run ends while a block's commit waits for the journal's thread: the withdrawal is
    written after that block, never before it (a stop mid-block left four intents on disk)."""
    journal, _ = run_r1(tmp_path)
    release = threading.Event()
    busy = journal._thread.submit(release.wait)  # the thread is busy with an earlier commit
    block = asyncio.ensure_future(
        journal.intents_ahead("r1", [Intent(1, f"i{n}", 1, T0) for n in range(4)])
    )
    await asyncio.sleep(0)  # its commit is queued behind the busy thread
    ending = asyncio.ensure_future(asyncio.to_thread(journal.finish_run, "r1", T0, 3))
    await asyncio.wait({ending}, timeout=0.1)  # (done at once if it did not wait its turn)
    release.set()
    await ending
    await block
    busy.result()
    assert committed_attempts(journal.path) == 0
    journal.close()


async def test_an_intent_recorded_ahead_is_used_only_fresh_and_only_while_the_journal_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, statements = run_r1(tmp_path)
    await journal.intents_ahead("r1", [Intent(1, f"i{n}", 1, T0) for n in range(3)])
    assert statements.count("COMMIT") == 1
    monkeypatch.setattr(
        "worker.journal.intents.AHEAD_FRESH_S", 0.0
    )  # every ahead intent is stale now
    await journal.record_intent("r1", Intent(1, "i0", 1, T0))
    assert statements.count("COMMIT") == 2  # committed again, not taken from ahead
    monkeypatch.setattr("worker.journal.intents.AHEAD_FRESH_S", 60.0)
    # The store refuses every commit from here (a full disk, a lost database session).
    with sqlite3.connect(journal.path) as other:
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON attempts BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
    with pytest.raises(JournalError):
        await journal.record_intent("r1", Intent(1, "other", 1, T0))
    # Recorded ahead and fresh, but the journal has failed: this close must not be sent either.
    with pytest.raises(JournalError):
        await journal.record_intent("r1", Intent(1, "i1", 1, T0))
    with pytest.raises(JournalError):
        journal.close()


def test_outcomes_are_committed_in_batches_not_held_until_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.journal.store.OUTCOME_BATCH", 3)
    journal, _ = run_r1(tmp_path)

    def committed_outcomes() -> int:
        with sqlite3.connect(journal.path) as db:
            return int(db.execute("SELECT COUNT(*) FROM targets").fetchone()[0])

    seen = []
    for n in range(7):
        result = TargetResult(1, f"i{n}", f"i{n}", f"S{n}", outcome=Outcome.CLOSED)
        journal.outcome("r1", result, "10")
        seen.append(committed_outcomes())
    assert seen == [0, 0, 3, 3, 3, 6, 6]
    journal.finish_run("r1", T0, 0)
    assert committed_outcomes() == 7
    journal.close()


async def test_priors_are_earlier_runs_of_the_same_job_only(tmp_path: Path) -> None:
    journal = Journal.in_dir(tmp_path)
    for run_id, job in (("old", "api|2026-11-25"), ("other-day", "api|2026-11-24")):
        journal.start_run(
            run_id=run_id, job=job, base_url="api", trading_day="x", started_at=T0, dry_run=False
        )
        await journal.record_intent(run_id, Intent(7, "inst", 1, T0))
    journal.close()
    journal = Journal.in_dir(tmp_path)
    priors = journal.priors("api|2026-11-25", current_run="new")
    assert list(priors) == [(7, "inst")]
    assert priors[(7, "inst")].since == T0
    assert journal.priors("api|2026-11-25", current_run="old") == {}
    journal.close()


async def test_records_ride_along_in_batches_and_all_are_committed_at_close(
    tmp_path: Path,
) -> None:
    journal = Journal.in_dir(tmp_path)

    def committed_results() -> int:
        with sqlite3.connect(journal.path) as db:
            return int(db.execute("SELECT COUNT(*) FROM attempt_results").fetchone()[0])

    def record(n: int) -> None:
        journal.attempt_result("r1", 1, f"i{n}", 1, f"req-{n}", "ok")

    for n in range(RECORD_BATCH - 1):
        record(n)
    await journal.record_intent("r1", Intent(1, "a", 1, T0))
    assert committed_results() == 0  # an intent commit touches one table while records wait
    record(RECORD_BATCH - 1)
    await journal.record_intent("r1", Intent(1, "b", 1, T0))
    assert committed_results() == RECORD_BATCH  # a full batch rides along
    record(RECORD_BATCH)
    journal.close()
    assert committed_results() == RECORD_BATCH + 1
    assert committed_attempts(journal.path) == 2


async def test_a_failed_intent_commit_stops_every_close_of_that_turn_and_after(
    tmp_path: Path,
) -> None:
    journal = Journal.in_dir(tmp_path)
    with sqlite3.connect(journal.path) as other:
        other.execute("DROP TABLE attempts")  # the commit of the next intents fails
    outcomes = await asyncio.gather(
        *(journal.record_intent("r1", Intent(1, f"i{n}", 1, T0)) for n in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(o, JournalError) for o in outcomes)
    with sqlite3.connect(journal.path) as other:
        other.executescript(_SCHEMA)  # the disk is fine again; the lost intents are not back
    with pytest.raises(JournalError):
        await journal.record_intent("r1", Intent(1, "later", 1, T0))


async def test_a_flush_that_fails_fails_the_closes_waiting_for_their_commit(
    tmp_path: Path,
) -> None:
    journal = Journal.in_dir(tmp_path)
    waiting = asyncio.create_task(journal.record_intent("r1", Intent(1, "i1", 1, T0)))
    await asyncio.sleep(0)  # queued; its group commit is due in COMMIT_WINDOW_S
    with sqlite3.connect(journal.path) as other:
        other.execute("DROP TABLE attempts")
    with pytest.raises(JournalError):
        journal.flush()  # took the waiting intent with it
    with sqlite3.connect(journal.path) as other:
        other.executescript(_SCHEMA)
    with pytest.raises(JournalError):
        await waiting


def test_metrics_parse_as_prometheus_text_and_keep_the_last_success(tmp_path: Path) -> None:
    path = tmp_path / "liquidator.prom"
    results = [
        TargetResult(1, "A", outcome=Outcome.CLOSED),
        TargetResult(1, "B", outcome=Outcome.FAILED, error="x"),
    ]
    for outcomes, exit_code, finished_at in ((results[:1], 0, 1000.0), (results, 1, 2000.0)):
        write_metrics(
            path,
            RunFigures(
                results=outcomes,
                retries=3,
                reconciliations=2,
                duration_s=1.5,
                exit_code=exit_code,
                finished_at=finished_at,
            ),
        )
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("liquidator_positions", (("outcome", "failed"),))] == 1
    assert samples[("liquidator_positions", (("outcome", "closed"),))] == 1
    assert samples[("liquidator_positions", (("outcome", "skipped"),))] == 0
    assert samples[("liquidator_last_exit_code", ())] == 1
    assert samples[("liquidator_last_run_timestamp_seconds", ())] == 2000.0
    assert samples[("liquidator_last_success_timestamp_seconds", ())] == 1000.0
    assert samples[("liquidator_retries", ())] == 3
    assert samples[("liquidator_reconciliations", ())] == 2
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def write_failed_run(path: Path) -> None:
    write_metrics(
        path,
        RunFigures(
            results=[TargetResult(1, "A", outcome=Outcome.FAILED, error="x")],
            retries=0,
            reconciliations=0,
            duration_s=0.25,
            exit_code=1,
            finished_at=3000.0,
        ),
    )


def test_metric_names_and_types_are_the_documented_ones_all_per_run_gauges(
    tmp_path: Path,
) -> None:
    path = tmp_path / "liquidator.prom"
    path.write_text("garbage that is not Prometheus text\n")
    write_failed_run(path)  # an unparsable previous file carries nothing over
    text = path.read_text()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert types == {
        "liquidator_positions": "gauge",
        "liquidator_extra_orders": "gauge",
        "liquidator_retries": "gauge",
        "liquidator_reconciliations": "gauge",
        "liquidator_run_duration_seconds": "gauge",
        "liquidator_last_exit_code": "gauge",
        "liquidator_last_run_timestamp_seconds": "gauge",
        # Prices (docs/prices.md), by account: none set in a run that filled nothing.
        "liquidator_gross_value_closed": "gauge",
        "liquidator_cost": "gauge",
        "liquidator_cost_bps": "gauge",
        "liquidator_worst_cost": "gauge",
    }
    samples = [line.split()[0] for line in text.splitlines() if not line.startswith("#")]
    priced = [s for s in samples if "cost" in s or "gross_value" in s]
    assert priced == ['liquidator_gross_value_closed{account="all"}']  # 0.00: nothing filled
    assert [s for s in samples if s not in priced] == [
        *(f'liquidator_positions{{outcome="{o}"}}' for o in Outcome),
        *[n for n in list(types)[1:] if "cost" not in n and "gross_value" not in n],
    ]


def test_a_failed_run_carries_over_the_success_from_the_previous_version_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "liquidator.prom"
    # As the hand-written writer before prometheus_client left it.
    path.write_text(
        "# HELP liquidator_last_exit_code x\n# TYPE liquidator_last_exit_code gauge\n"
        "liquidator_last_exit_code 0\n"
        "# HELP liquidator_last_success_timestamp_seconds x\n"
        "# TYPE liquidator_last_success_timestamp_seconds gauge\n"
        "liquidator_last_success_timestamp_seconds 1764100000.125\n"
    )
    write_failed_run(path)
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert families["liquidator_last_success_timestamp_seconds"].samples[0].value == (
        1764100000.125
    )
    assert families["liquidator_last_exit_code"].samples[0].value == 1


def test_metrics_file_is_0644_even_under_the_units_umask(tmp_path: Path) -> None:
    """node_exporter reads it as another user; deploy/liquidator.service sets UMask=0077."""
    path = tmp_path / "liquidator.prom"
    previous = os.umask(0o077)
    try:
        write_failed_run(path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["liquidator.prom"]  # no temp file left


async def test_a_run_counts_its_close_retries_and_looks_in_its_metrics(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    # Every close is applied and its reply dropped: one retry wait and one look per target.
    sim.add_account(19816)
    for symbol in ("GOOG", "MSFT"):
        sim.add_position(19816, symbol, "25")
    sim.config.faults = {"close": Faults(p_drop_after=1.0)}
    metrics = tmp_path / "liquidator.prom"
    with events_emitted() as emitted:
        result = await run(
            settings_for(sim, metrics_file=metrics),
            RunRequest(specs=[TargetSpec(19816, "GOOG"), TargetSpec(19816, "MSFT")]),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.OK
    assert sim.stats.by_route["close"] == 2  # each sent once, found by the look
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(metrics.read_text())
        for s in f.samples
    }
    retry_events = [e for e in emitted if e["event"] in ("close_retry", "read_retry")]
    assert samples["liquidator_retries"] == len(retry_events) == 2
    assert samples["liquidator_reconciliations"] == 2
    assert (result.retries, result.reconciliations) == (2, 2)


async def test_outcomes_are_recorded_as_targets_settle_and_each_target_once(
    sim: Simulator, settings_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target that reads flat early is on disk before the run's end, riding along with the
    commits of later closes' intents; the journal ends with each target's outcome as reported."""
    from tests.support import liquidate, seed

    monkeypatch.setattr("worker.journal.store.RECORD_BATCH", 1)  # each commit takes what is queued
    sim.config.fill_delay_s = 0
    sim.config.faults = {"close": Faults(latency_s=0.01)}  # the second account takes a while
    early = seed(sim, 71001, [10])
    # Enough closes that the early target settles while they still go out: with closes queued
    # at one in flight a read gets one turn in READ_SHARE, and it takes four reads (working
    # orders, its order by id, the position, the ledger beside it): about 40 closes.
    seed(sim, 71002, [5] * 100)
    path = tmp_path / "state" / "journal.sqlite3"

    def outcomes() -> list[tuple[int, str, str]]:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT account_id, instrument_id, outcome FROM targets").fetchall()

    at_the_end: list[list[tuple[int, str, str]]] = []
    finish_run = Journal.finish_run

    def finishing(journal: Journal, *args: Any) -> None:
        at_the_end.append(outcomes())
        finish_run(journal, *args)

    monkeypatch.setattr(Journal, "finish_run", finishing)
    specs = [TargetSpec(71001, None), TargetSpec(71002, None)]
    result, doc = await liquidate(sim, settings_for, tmp_path, specs, concurrency=1)
    assert result.exit_code == ExitCode.OK
    assert (*early[0], "closed") in at_the_end[0]
    reported = [(r["account_id"], r["instrument_id"], r["outcome"]) for r in doc["results"]]
    assert len(reported) == 101
    assert sorted(outcomes()) == sorted(reported)


async def test_outcomes_riding_along_with_intents_never_force_a_commit_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During the fan-out the intent commits take the outcomes queued: none waits for a batch
    of outcomes to be committed on the event loop. After a close, the journal refuses."""
    monkeypatch.setattr("worker.journal.store.OUTCOME_BATCH", 3)
    monkeypatch.setattr("worker.journal.store.RECORD_BATCH", 2)
    journal, statements = run_r1(tmp_path)
    for n in range(6):
        result = TargetResult(1, f"i{n}", f"i{n}", f"S{n}", outcome=Outcome.CLOSED)
        journal.outcome("r1", result, "10")
        if n % 2:
            await journal.record_intent(
                "r1", Intent(1, f"i{n}", 1, T0)
            )  # takes the two queued along
    assert statements.count("COMMIT") == 3  # the intents' commits, none of the outcomes' own
    journal.finish_run("r1", T0, 0)
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.flush()
    journal.close()  # a second close does nothing
