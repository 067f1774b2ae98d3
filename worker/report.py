"""One result per target, the run summary, and the JSON report (`--report FILE`).

The report's fields are a public contract. Decimal quantities stay strings. The file is written
atomically (temporary file, then rename), so a reader never sees half a report.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from worker import jsontext
from worker.models import Order, Outcome


@dataclass(frozen=True, slots=True)
class OrderSummary:
    """What the report keeps of an order: small, because a run may hold 100,000 of them."""

    id: str
    side: str
    quantity: str
    status: str

    @classmethod
    def of(cls, order: Order) -> OrderSummary:
        return cls(order.id, order.side, str(order.quantity), order.status)


@dataclass(slots=True)
class TargetResult:
    account_id: int
    instrument: str  # as named: a symbol, a UUID, or "*" for an account that could not be read
    instrument_id: str | None = None
    symbol: str | None = None
    outcome: Outcome | None = None
    orders: list[OrderSummary] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    error: str | None = None
    reconciled: bool = False

    def settle(self, outcome: Outcome, error: str | None = None) -> TargetResult:
        self.outcome = outcome
        self.error = error
        return self

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "instrument": self.instrument,
            "instrument_id": self.instrument_id,
            "symbol": self.symbol,
            "outcome": str(self.outcome) if self.outcome else None,
            "orders": [
                {"id": o.id, "side": o.side, "quantity": o.quantity, "status": o.status}
                for o in self.orders
            ],
            "request_ids": self.request_ids,
            "attempts": self.attempts,
            "error": self.error,
            "reconciled": self.reconciled,
        }


def summarize(results: Iterable[TargetResult]) -> dict[str, int]:
    counts = Counter(str(r.outcome) for r in results)
    summary = {"targets": sum(counts.values())}
    summary.update({str(o): counts.get(str(o), 0) for o in Outcome})
    return summary


def write_report(
    path: Path,
    *,
    run_id: str,
    started_at: datetime,
    finished_at: datetime,
    dry_run: bool,
    results: Sequence[TargetResult],
    exit_code: int,
    aborted: str | None,
    scrub: Callable[[str], str] | None = None,
) -> None:
    """`scrub` takes secrets out of every piece written: a second guard after the API's own."""
    head = {
        "run_id": run_id,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "dry_run": dry_run,
        "exit_code": exit_code,
        "aborted": aborted,
        "summary": summarize(results),
    }

    # One result per line, written as it is rendered: a 100,000-target report as one document
    # in memory costs several hundred MB.
    def pieces() -> Iterator[str]:
        yield json.dumps(head, indent=1)[: -len("\n}")] + ',\n "results": ['
        for n, result in enumerate(results):
            yield ("\n  " if n == 0 else ",\n  ") + jsontext.dumps(result.as_json()).decode()
        yield "\n ]\n}\n"

    write_atomically(path, pieces() if scrub is None else map(scrub, pieces()))


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
