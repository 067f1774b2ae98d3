"""The journal's tables, one text for SQLite and PostgreSQL, and what each write fills in."""

from __future__ import annotations

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
"""

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
    "targets": (
        ("run_id", "account_id", "instrument"),
        ("instrument_id", "symbol", "quantity", "outcome", "error", "attempts"),
    ),
}


def schema_probes() -> list[str]:
    """One query per table that fails unless it has every column the journal writes."""
    probes = []
    for table, (keys, others) in TABLES.items():
        extra = ("finished_at", "exit_code") if table == "runs" else ()
        probes.append(f"SELECT {', '.join(keys + others + extra)} FROM {table} WHERE 1 = 0")
    return probes
