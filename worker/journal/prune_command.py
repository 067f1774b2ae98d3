"""`liquidator journal prune`: retention by hand (`worker.journal.prune` says what goes).

It opens the journal as a run does, lock and all (a run holding it refuses the prune, exit 2),
so a prune never writes beside a run. `--dry-run` counts what would go and deletes nothing.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import orjson

from worker.inputs.settings import Settings
from worker.journal.keys import trading_day
from worker.journal.open import SQLITE_FILE, open_journal
from worker.journal.prune import Pruned, cutoff


def prune(settings: Settings, keep_days: int | None, *, dry_run: bool, as_json: bool) -> int:
    days = keep_days if keep_days is not None else settings.journal_keep_days
    if days is None:
        print(
            "liquidator journal prune: retention is off (journal_keep_days = off):"
            " give --keep-days N",
            file=sys.stderr,
        )
        return 2
    if settings.journal_url is None and not (settings.journal_dir / SQLITE_FILE).is_file():
        path = settings.journal_dir / SQLITE_FILE
        print(
            f"liquidator journal prune: no journal at {path} (check --state-dir or STATE_DIR)",
            file=sys.stderr,
        )
        return 2
    before = cutoff(trading_day(datetime.now(UTC)), days)
    journal = asyncio.run(open_journal(settings))
    try:
        pruned = journal.prune(before, dry_run=dry_run)
    finally:
        journal.close()
    _show(journal.name, pruned, as_json)
    return 0


def _show(name: str, pruned: Pruned, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps({"journal": name, **pruned.as_json()}) + b"\n")
        return
    verb = "would prune" if pruned.dry_run else "pruned"
    rows = sum(pruned.rows.values())
    print(
        f"{name}: {verb} {len(pruned.jobs)} job(s) of trading days before {pruned.before}"
        f" ({rows} rows)"
    )
    for job in pruned.jobs:
        print(f"  - {job}")
    for job, why in pruned.kept.items():
        print(f"  kept {job}: {why}")
