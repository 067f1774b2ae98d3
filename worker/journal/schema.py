"""The journal's tables, one text for SQLite and PostgreSQL, and what each write fills in."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

# One text for both backends: SQLite reads BIGINT as INTEGER.
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, job TEXT NOT NULL, base_url TEXT NOT NULL,
    trading_day TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    exit_code INTEGER, dry_run INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job);
CREATE TABLE IF NOT EXISTS targets (
    run_id TEXT NOT NULL, account_id BIGINT NOT NULL, instrument TEXT NOT NULL,
    instrument_id TEXT, symbol TEXT, quantity TEXT, outcome TEXT, error TEXT, attempts INTEGER,
    PRIMARY KEY (run_id, account_id, instrument));
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, account_id BIGINT NOT NULL, instrument_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, since TEXT NOT NULL,
    PRIMARY KEY (run_id, account_id, instrument_id, attempt));
CREATE TABLE IF NOT EXISTS attempt_results (
    run_id TEXT NOT NULL, account_id BIGINT NOT NULL, instrument_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, request_id TEXT, result TEXT NOT NULL,
    PRIMARY KEY (run_id, account_id, instrument_id, attempt));
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT NOT NULL, run_id TEXT NOT NULL, account_id BIGINT NOT NULL,
    instrument_id TEXT NOT NULL, side TEXT, quantity TEXT, status TEXT, created_at TEXT,
    request_id TEXT, reconciled INTEGER NOT NULL,
    PRIMARY KEY (order_id, run_id));
CREATE INDEX IF NOT EXISTS orders_by_run ON orders (run_id);
CREATE TABLE IF NOT EXISTS client_ids (
    run_id TEXT NOT NULL, account_id BIGINT NOT NULL, instrument_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, client_id TEXT NOT NULL, generation INTEGER NOT NULL,
    PRIMARY KEY (run_id, account_id, instrument_id, attempt));
CREATE TABLE IF NOT EXISTS run_clock (
    run_id TEXT PRIMARY KEY, last_at TEXT NOT NULL);
"""
# `run_clock`: when each run last committed an intent, or its end, in the journal's time
# (PostgreSQL's clock; with SQLite, the API server's clock as the run measured it). A run that
# takes a job over waits out the requests that may still be in flight from then.

# Each table the journal writes: its key columns, then the others (the order of the values).
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "runs": (("run_id",), ("job", "base_url", "trading_day", "started_at", "dry_run")),
    "attempts": (("run_id", "account_id", "instrument_id", "attempt"), ("since",)),
    "attempt_results": (
        ("run_id", "account_id", "instrument_id", "attempt"),
        ("request_id", "result"),
    ),
    "orders": (
        ("order_id", "run_id"),
        (
            *("account_id", "instrument_id", "side", "quantity", "status", "created_at"),
            *("request_id", "reconciled"),
        ),
    ),
    # submit_orders: the client id each intent was about to send (committed with the intent).
    "client_ids": (
        ("run_id", "account_id", "instrument_id", "attempt"),
        ("client_id", "generation"),
    ),
    "targets": (
        ("run_id", "account_id", "instrument"),
        ("instrument_id", "symbol", "quantity", "outcome", "error", "attempts"),
    ),
}


def schema_probes(skip: Collection[str] = ()) -> list[str]:
    """One query per table (but those in `skip`) that fails unless it has every column the
    journal writes."""
    probes = []
    for table, (keys, others) in TABLES.items():
        if table in skip:
            continue
        extra = ("finished_at", "exit_code") if table == "runs" else ()
        probes.append(f"SELECT {', '.join(keys + others + extra)} FROM {table} WHERE 1 = 0")
    return probes


IntentRows = tuple[list[Sequence[Any]], list[Sequence[Any]]]


def split_intents(intents: Sequence[Sequence[Any]]) -> IntentRows:
    """An intent row's `attempts` part, and its `client_ids` row when it carries a client id.

    Intent rows are (run_id, account_id, instrument_id, attempt, since[, client_id, generation]).
    """
    attempts: list[Sequence[Any]] = [row[:5] for row in intents]
    client_ids: list[Sequence[Any]] = [(*row[:4], *row[5:7]) for row in intents if len(row) > 5]
    return attempts, client_ids
