"""The JSON report (`--report FILE`): renders the results of `worker.results`, decides nothing.

The report's fields are a public contract. Decimal quantities stay strings. The file is written
atomically (temporary file, then rename), so a reader never sees half a report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from worker import jsonbytes
from worker.output.totals import Totals, cost_summary, summarize
from worker.results import OrderSummary, TargetResult

__all__ = [
    "OrderSummary",
    "ReportHead",
    "TargetResult",
    "Totals",
    "copy_atomically",
    "summarize",
    "write_atomically",
    "write_report",
]

_CHUNK = 1000  # results rendered, scrubbed and written together


@dataclass(frozen=True, slots=True)
class ReportHead:
    """What the report says of the run as a whole, ahead of its results."""

    run_id: str
    started_at: datetime
    finished_at: datetime
    dry_run: bool
    exit_code: int
    aborted: str | None


def write_report(
    path: Path,
    run: ReportHead,
    results: Sequence[TargetResult],
    *,
    scrub: Callable[[str], str] | None = None,
    totals: Totals | None = None,
) -> None:
    """`scrub` takes secrets out of every piece written: the report is an exit, and what it
    holds from the API (ids, request ids) was parsed as received.
    `totals`: the results' summary, when the caller has counted it already."""
    if totals is None:
        totals = Totals(summarize(results), cost_summary(results))
    head = {
        "run_id": run.run_id,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "dry_run": run.dry_run,
        "exit_code": run.exit_code,
        "aborted": run.aborted,
        "summary": {**totals.summary, **totals.costs},
    }

    # One result per line, written a chunk at a time as it is rendered: a 100,000-target report
    # as one document in memory costs several hundred MB; a piece per result costs a scrub and
    # a write per result (a third of the report's time).
    def pieces() -> Iterator[str]:
        yield json.dumps(head, indent=1)[: -len("\n}")] + ',\n "results": ['
        for start in range(0, len(results), _CHUNK):
            chunk = results[start : start + _CHUNK]
            lines = ",\n  ".join(jsonbytes.dumps(r.as_json()).decode() for r in chunk)
            yield ("\n  " if start == 0 else ",\n  ") + lines
        yield "\n ]\n}\n"

    write_atomically(path, pieces() if scrub is None else map(scrub, pieces()))


def copy_atomically(source: Path, path: Path, mode: int = 0o600) -> None:
    """Copy `source` to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, text: str | Iterable[str], mode: int = 0o600) -> None:
    """Write a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines([text] if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
