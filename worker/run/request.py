"""What a run is asked to do (`RunRequest`), and who watches it (`Watcher`): the plan shown, the
operator's yes asked for, each outcome and the wait for today's close told. The run calls the
watcher by name at those four points; it decides nothing with what the watcher shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from worker.inputs.targets import TargetSpec
from worker.results import TargetResult
from worker.run.plan import Plan


class Watcher:
    """Who watches a run: the terminal, or a program reading a dry run's plan as events. This
    one shows nothing and answers yes; a watcher overrides what it shows. A fault in `advance`
    or `waiting_for_fills` stops the run (an internal error), never following."""

    def show_plan(self, plan: Plan) -> None:
        """The plan, once it is made (a dry run's too), before any close is sent."""

    async def confirm(self, plan: Plan) -> bool:
        """Asked with the plan when the request says `confirm`; False: nothing is sent."""
        return True

    def advance(self, result: TargetResult) -> None:
        """One target settled: its result is final (and on its way to the journal)."""

    def waiting_for_fills(self, orders: int, close: datetime, wait_s: float) -> None:
        """--at-close, every close sent: `orders` rest until today's close, `wait_s` from now."""


@dataclass
class RunRequest:
    """What one run is asked to do: the targets, the CLI's switches, who watches it."""

    specs: list[TargetSpec]
    dry_run: bool = False
    report_path: Path | None = None
    # Ask the watcher with the plan before any close is sent; its no ends the run, nothing sent.
    confirm: bool = False
    max_positions_override: bool = False  # --force: also overrides the price guards
    watcher: Watcher = field(default_factory=Watcher)
    before_close: timedelta | None = None  # wait for today's close minus this, or skip
    # The local wall clock: what the journal and the report are stamped with, and nothing
    # else. Windows and evidence run on the server's time and the monotonic clock (a test
    # steps this one to prove it).
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # `check`: a dry run that also looks at the journal the run would open (read only, no lock)
    probe_journal: bool = False
