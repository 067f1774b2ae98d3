"""`liquidator journal` (today's jobs, intents and outcomes) and `liquidator journal verify`.

Read-only and lock-free, so both work while a run is going on; `verify` exits 0 when the journal
is sound and 2 when it is damaged or missing, naming the file and what is wrong.
"""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from worker.inputs.settings import Settings
from worker.journal.files import wal_problem
from worker.journal.keys import trading_day
from worker.journal.readonly import ReadOnlyJournal as _Reader
from worker.journal.schema import schema_probes

SQLITE_HEADER = b"SQLite format 3\x00"

_RUNS = (
    "SELECT job, run_id, started_at, finished_at, exit_code FROM runs"
    " WHERE trading_day = ? AND dry_run = 0 ORDER BY job, started_at"
)
# submit_orders: each intent's client id, to look the order up at the API by it. A journal
# written before client ids existed has no such table (nothing since opened it to add one).
_CLIENT_IDS = (
    " LEFT JOIN client_ids c ON c.run_id = a.run_id AND c.account_id = a.account_id"
    " AND c.instrument_id = a.instrument_id AND c.attempt = a.attempt"
)
_INTENTS = (
    "SELECT r.job, a.run_id, a.account_id, a.instrument_id, a.attempt, a.since, x.result,"
    " x.request_id, {client_id} FROM attempts a JOIN runs r ON r.run_id = a.run_id"
    " LEFT JOIN attempt_results x ON x.run_id = a.run_id AND x.account_id = a.account_id"
    " AND x.instrument_id = a.instrument_id AND x.attempt = a.attempt{client_ids}"
    " WHERE r.trading_day = ? ORDER BY r.job, a.since, a.account_id, a.instrument_id, a.attempt"
)
_OUTCOMES = (
    "SELECT r.job, t.run_id, t.account_id, t.instrument, t.instrument_id, t.symbol, t.outcome,"
    " t.error, t.attempts FROM targets t JOIN runs r ON r.run_id = t.run_id"
    " WHERE r.trading_day = ? ORDER BY r.job, r.started_at, t.account_id, t.instrument"
)


def _without_run(table: str, what: str) -> tuple[str, str]:
    """Rows that name a run the journal has no record of: a sign that something was lost."""
    sql = f"SELECT COUNT(*) FROM {table} WHERE run_id NOT IN (SELECT run_id FROM runs)"
    return sql, f"{what} name a run it has no record of"


# What verify counts, and what each count says: records that show something was lost.
_ORPHANS = [
    _without_run("attempts", "intents"),
    _without_run("orders", "orders"),
    _without_run("targets", "outcomes"),
]
# Only where the table exists (a journal written before client ids has none). A client id is
# committed with its intent, in one transaction: one without the other was cut.
_CLIENT_ID_ORPHANS = [
    _without_run("client_ids", "client ids"),
    (
        "SELECT COUNT(*) FROM client_ids c WHERE NOT EXISTS (SELECT 1 FROM attempts a"
        " WHERE a.run_id = c.run_id AND a.account_id = c.account_id"
        " AND a.instrument_id = c.instrument_id AND a.attempt = c.attempt)",
        "client ids have no intent beside them",
    ),
]


def show(settings: Settings, day: str | None, as_json: bool) -> int:
    """Today's (or `day`'s) jobs: their runs, intents and outcomes."""
    reader = _Reader(settings)
    try:
        if reader._pg is None:
            if not reader.path.parent.is_dir():
                print(
                    f"liquidator: no journal at {reader.path}: {_missing(reader.path)}",
                    file=sys.stderr,
                )
                return 2
            if not reader.path.exists():
                return _print(as_json, {"journal": reader.name, "trading_day": day, "jobs": []})
            problem = wal_problem(reader.path)
            if problem is not None:
                print(f"liquidator: the journal is damaged: {problem}", file=sys.stderr)
                return 2
            reader.open_sqlite()
        day = day or trading_day(datetime.now(UTC)).isoformat()
        jobs: dict[str, dict[str, list[dict[str, Any]]]] = {}

        def job(name: str) -> dict[str, list[dict[str, Any]]]:
            return jobs.setdefault(name, {"runs": [], "intents": [], "outcomes": []})

        for name, *run in reader.rows(_RUNS, (day,)):
            job(name)["runs"].append(
                dict(zip(("run_id", "started_at", "finished_at", "exit_code"), run, strict=True))
            )
        for name, *intent in reader.rows(_intents_query(reader), (day,)):
            keys = ("run_id", "account_id", "instrument_id", "attempt", "since", "result")
            more = ("request_id", "client_id", "generation")
            job(name)["intents"].append(dict(zip((*keys, *more), intent, strict=True)))
        for name, *outcome in reader.rows(_OUTCOMES, (day,)):
            keys = ("run_id", "account_id", "instrument", "instrument_id", "symbol", "outcome")
            job(name)["outcomes"].append(
                dict(zip((*keys, "error", "attempts"), outcome, strict=True))
            )
    finally:
        reader.close()
    doc = {
        "journal": reader.name,
        "trading_day": day,
        "jobs": [{"job": name, **parts} for name, parts in jobs.items()],
    }
    return _print(as_json, doc)


def _intents_query(reader: _Reader) -> str:
    if not reader.has_client_ids():
        return _INTENTS.format(client_id="NULL, NULL", client_ids="")
    return _INTENTS.format(client_id="c.client_id, c.generation", client_ids=_CLIENT_IDS)


def verify(settings: Settings, as_json: bool) -> int:
    """Check the journal: its files, its structure, its tables, its records' runs."""
    reader = _Reader(settings)
    problems: list[str] = []
    counts: dict[str, int] = {}
    try:
        if reader._pg is None:
            if not reader.path.exists():
                return _report_missing(as_json, reader.path)
            problems += _sqlite_file_problems(reader.path)
            if problems:
                return _report(as_json, reader.name, problems, counts)
            reader.open_sqlite()
            found = [r[0] for r in reader.rows("PRAGMA integrity_check")]
            if found != ["ok"]:
                problems += [f"{reader.name}: {p}" for p in found[:10]]
        client_ids = reader.has_client_ids()
        for probe in schema_probes(skip=() if client_ids else ("client_ids",)):
            try:
                reader.rows(probe)
            except Exception as exc:
                problems.append(f"{reader.name}: {exc}".strip())
        if not problems:
            for sql, says in _ORPHANS + (_CLIENT_ID_ORPHANS if client_ids else []):
                orphans = int(reader.rows(sql)[0][0])
                if orphans:
                    problems.append(f"{reader.name}: {orphans} {says}")
            for table in ("runs", "attempts", "targets"):
                counts[table] = int(reader.rows(f"SELECT COUNT(*) FROM {table}")[0][0])
    except sqlite3.Error as exc:
        problems.append(f"{reader.name}: {exc}")
    finally:
        reader.close()
    return _report(as_json, reader.name, problems, counts)


def _missing(path: Path) -> str:
    """Why there is no journal file at `path`."""
    if not path.parent.exists():
        return f"the directory {path.parent} does not exist (check --state-dir or STATE_DIR)"
    if not path.parent.is_dir():
        return f"{path.parent} is not a directory (check --state-dir or STATE_DIR)"
    return "no run has written one in this directory (check --state-dir or STATE_DIR)"


def _report_missing(as_json: bool, path: Path) -> int:
    """No journal is not a sound journal: exit 2, said apart from a damaged one."""
    why = _missing(path)
    if as_json:
        doc = {"journal": str(path), "ok": False, "missing": True, "problems": [why]}
        doc |= {"runs": None, "intents": None, "outcomes": None}
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    else:
        print(f"{path}: NO JOURNAL: {why}")
    return 2


def _sqlite_file_problems(path: Path) -> list[str]:
    if not path.exists():
        return []
    problems = []
    with path.open("rb") as f:
        if f.read(16) not in (SQLITE_HEADER, b""):
            problems.append(f"{path}: not a SQLite database (its header is overwritten)")
    wal = wal_problem(path)
    if wal is not None:
        problems.append(wal)
    return problems


def _report(as_json: bool, name: str, problems: list[str], counts: dict[str, int]) -> int:
    doc = {
        "journal": name,
        "ok": not problems,
        "problems": problems,
        "runs": counts.get("runs"),
        "intents": counts.get("attempts"),
        "outcomes": counts.get("targets"),
    }
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    elif problems:
        print(f"{name}: DAMAGED")
        for p in problems:
            print(f"  - {p}")
        print(
            "Keep a copy of the journal's files, move them aside, and check today's closing"
            " orders at the API before the next run (it starts a new journal)."
        )
    else:
        print(
            f"{name}: ok ({doc['runs'] or 0} runs, {doc['intents'] or 0} intents,"
            f" {doc['outcomes'] or 0} outcomes)"
        )
    return 0 if not problems else 2


def _print(as_json: bool, doc: dict[str, Any]) -> int:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"journal {doc['journal']}, trading day {doc['trading_day']}")
    if not doc["jobs"]:
        console.print("no runs recorded for this day")
    for job in doc["jobs"]:
        runs = Table(title=f"job {job['job']}: runs")
        for column in ("run", "started", "finished", "exit"):
            runs.add_column(column)
        for r in job["runs"]:
            runs.add_row(
                r["run_id"], r["started_at"], r["finished_at"] or "(unfinished)", _s(r["exit_code"])
            )
        console.print(runs)
        outcomes = {(o["account_id"], o["instrument_id"]): o for o in job["outcomes"]}
        positions = Table(title="intents and outcomes")
        # `since` is where a look for the attempt's orders starts (RECONCILE_LOOKBACK or more
        # before it was sent), not when it was sent: named so.
        columns = ("account", "instrument", "symbol", "attempt", "orders searched from", "result")
        for column in columns:
            positions.add_column(column)
        # submit_orders: the id each order went (or was about to go) under.
        client_ids = any(i["client_id"] for i in job["intents"])
        if client_ids:  # folded, never cut: an operator looks the order up by it
            positions.add_column("client id", overflow="fold")
        positions.add_column("outcome")
        for i in job["intents"]:
            o = outcomes.get((i["account_id"], i["instrument_id"]), {})
            row = [
                _s(i["account_id"]),
                i["instrument_id"],
                _s(o.get("symbol")),
                _s(i["attempt"]),
                i["since"],
                _s(i["result"] or "(no reply recorded)"),
            ]
            if client_ids:
                row.append(_s(i["client_id"]))
            positions.add_row(*row, _s(o.get("outcome")))
        console.print(positions)
    return 0


def _s(value: object) -> str:
    return "" if value is None else str(value)
