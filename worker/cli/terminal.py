"""What an operator at a terminal sees: the plan, a confirmation prompt, progress, a summary.

Events are printed through the same rich console as the progress bar, so the two never tear each
other apart. It renders only: it never decides what a run does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from worker.cli.plan_view import PLAN_ROWS_SHOWN, print_not_held, print_plan
from worker.cli.tables import whole_column
from worker.observe.events import new_york_time, resting_text
from worker.output.totals import cost_summary, summarize
from worker.results import Outcome, TargetResult
from worker.run.plan import Plan
from worker.run.request import Watcher

_OUTCOME_STYLE = {
    Outcome.CLOSED: "green",
    Outcome.ALREADY_FLAT: "cyan",
    Outcome.FAILED: "bold red",
    Outcome.SKIPPED: "yellow",
    Outcome.NOT_FLAT: "bold red",
    Outcome.MARKET_CLOSED: "yellow",
    Outcome.GUARDED: "bold magenta",
    Outcome.NOT_HELD: "bold yellow",
}


class ConsoleLogger:
    """A structlog logger that prints rendered events through the rich console."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def msg(self, message: str) -> None:
        self._console.print(Text.from_ansi(message), soft_wrap=True)

    log = debug = info = warning = error = critical = exception = fatal = msg


class _EtaOrClose(ProgressColumn):
    """The ETA; while market-on-close orders rest, the close they fill at ("ETA 16:00 ET"):
    before it no fill comes, so an ETA from the pace of fills has nothing to go on."""

    def __init__(self, close: Callable[[], str | None]) -> None:
        super().__init__()
        self._close = close
        self._eta = TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        close = self._close()
        return Text.assemble("ETA ", close if close is not None else self._eta.render(task))


class _Bar(Progress):
    """The progress bar, and under it, while there is one, a line saying what the run waits
    for (its own line: it is longer than a narrow terminal leaves beside the bar)."""

    def __init__(
        self, *columns: str | ProgressColumn, waiting: Callable[[], str | None], console: Console
    ) -> None:
        self._waiting = waiting  # first: the parent's constructor may render already
        super().__init__(*columns, console=console)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        text = self._waiting()
        if text is not None:
            yield Text(text)


class Terminal(Watcher):
    def __init__(self, console: Console, scrub: Callable[[str], str] = str) -> None:
        self.console = console
        self._scrub = scrub  # what it prints directly (not through events) holds no secret
        self._progress: Progress | None = None
        self._task: Any = None
        self._total = 0
        self._tally: dict[str, int] = defaultdict(int)
        # Each planned position's gross value (absolute market value), for "value closed".
        self._values: dict[tuple[int, str], Decimal] = {}
        self._protected = False  # CLOSE_STYLE=protected, as the plan said
        self._declined = False  # the operator answered no at the prompt
        # --at-close: orders resting until the close (less the results since), when it is
        # (as "16:00 ET") and when that is on the monotonic clock.
        self._resting = 0
        self._close_local = ""
        self._close_due = 0.0

    def logger_factory(self, *args: Any) -> ConsoleLogger:
        return ConsoleLogger(self.console)

    def show_plan(self, plan: Plan) -> None:
        self._total = len(plan.targets)
        self._values = {(t.account_id, t.instrument_id): abs(t.market_value) for t in plan.targets}
        self._protected = plan.close_style is not None
        print_plan(self.console, plan, self._scrub)

    async def confirm(self, plan: Plan) -> bool:
        if not plan.targets:
            return True
        question = f"Send {len(plan.targets)} closing market orders? Type 'yes' to proceed: "
        return await self.ask_yes(question)

    async def ask_yes(self, question: str) -> bool:
        """True when the operator answers y or yes."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def deliver(text: str) -> None:
            if not answer.done():
                answer.set_result(text)

        def ask() -> None:
            try:
                text = self.console.input(question)
            except (EOFError, KeyboardInterrupt, OSError):  # OSError: the terminal hung up
                text = ""
            with contextlib.suppress(RuntimeError):  # the run may be over (a stop) by now
                loop.call_soon_threadsafe(deliver, text)

        # A daemon thread, not the default executor: on Ctrl-C the run ends without waiting
        # for the operator to press Enter.
        threading.Thread(target=ask, name="confirm", daemon=True).start()
        confirmed = (await answer).strip().lower() in ("y", "yes")
        self._declined = not confirmed
        return confirmed

    def advance(self, result: TargetResult) -> None:
        """Count one finished target; the bar appears with the first one, after the prompt."""
        progress = self._bar()
        self._resting = max(0, self._resting - 1)  # a fill, while orders rest until the close
        self._tally[str(result.outcome)] += 1
        tally = " ".join(f"{k}={v}" for k, v in sorted(self._tally.items()))
        progress.update(self._task, advance=1, tally=tally)

    def waiting_for_fills(self, orders: int, close: datetime, wait_s: float) -> None:
        """--at-close, every close sent: the bar says what rests and until when, not an ETA."""
        self._resting = orders
        self._close_local = new_york_time(close)
        self._close_due = time.monotonic() + wait_s
        self._bar().refresh()

    def _waiting_text(self) -> str | None:
        if self._resting <= 0:
            return None
        return resting_text(self._resting, self._close_local, self._close_due - time.monotonic())

    def _close_time(self) -> str | None:
        return self._close_local if self._resting > 0 else None

    def _bar(self) -> Progress:
        if self._progress is None:
            self._progress = _Bar(
                TextColumn("closing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[tally]}"),
                TimeElapsedColumn(),
                _EtaOrClose(self._close_time),
                waiting=self._waiting_text,
                console=self.console,
            )
            self._task = self._progress.add_task("close", total=self._total, tally="")
            self._progress.start()
        return self._progress

    def show_summary(
        self,
        results: list[TargetResult],
        exit_code: int,
        *,
        seconds: float | None = None,
        aborted: str | None = None,
        report_path: Path | None = None,
        dry_run: bool = False,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.console.print(_outcome_table(summarize(results)))
        failed = [
            r for r in results if r.outcome in (Outcome.FAILED, Outcome.NOT_FLAT, Outcome.GUARDED)
        ]
        if failed:
            self.console.print(_failed_table(failed, self._scrub))
        print_not_held(self.console, results, self._scrub)
        closed = [r for r in results if r.outcome is Outcome.CLOSED]
        value = sum(
            (self._values.get((r.account_id, r.instrument_id or ""), Decimal(0)) for r in closed),
            Decimal(0),
        )
        facts = [f"value closed {value:,.2f} gross ({len(closed)} position(s))"]
        if self._protected:
            facts.append("close style protected (collared LIMIT orders, the rest at market)")
        if seconds is not None:
            facts.insert(0, f"took {seconds:.1f} s")
        facts.append(f"report {report_path}" if report_path is not None else "no report file")
        self.console.print("; ".join(facts), soft_wrap=True)
        self._show_costs(results)
        if self._declined:  # the operator's own choice: said plainly, not as an error
            self.console.print("not confirmed: nothing was sent")
        elif aborted is not None:
            self.console.print(
                Text(f"aborted: {self._scrub(aborted)}", style="bold red"), soft_wrap=True
            )
        if dry_run:
            self.console.print("dry run: nothing was sent")
        self.console.print(f"exit code {exit_code}")

    def _show_costs(self, results: list[TargetResult]) -> None:
        """What the fills cost against the arrival midpoints: in all, then per account, each
        with its worst target (docs/prices.md)."""
        costs = cost_summary(results)
        if not costs["cost_by_account"]:
            return
        lines = [_cost_line("all accounts", costs)]
        if len(costs["cost_by_account"]) > 1:
            lines += [
                _cost_line(f"account {a}", c)
                for a, c in list(costs["cost_by_account"].items())[:PLAN_ROWS_SHOWN]
            ]
        for line in lines:
            self.console.print(line, soft_wrap=True)


def _cost_line(who: str, costs: dict[str, Any]) -> str:
    """One line: gross value filled, cost vs arrival (and bps), the worst target."""
    cost = costs["cost"]
    text = f"Cost, {who}: filled {Decimal(costs['gross_value_closed']):,.2f} gross;"
    if cost is None:
        return text + " cost unknown (no arrival price)"
    text += f" cost {Decimal(cost):,.2f} vs arrival midpoint ({costs['cost_bps']} bps)"
    worst = costs["worst_cost"]
    if worst is not None:
        text += (
            f"; worst {worst['instrument']} (account {worst['account_id']})"
            f" {Decimal(worst['cost']):,.2f} ({worst['cost_bps']} bps)"
        )
    return text


def _outcome_table(counts: Mapping[str, int]) -> Table:
    """The targets by outcome, every outcome shown, and their total."""
    table = Table(title="Summary", title_justify="left")
    table.add_column("outcome")
    table.add_column("targets", justify="right")
    for outcome in Outcome:
        table.add_row(Text(str(outcome), style=_OUTCOME_STYLE[outcome]), str(counts[str(outcome)]))
    table.add_section()
    table.add_row("total", str(counts["targets"]))
    return table


def _failed_table(failed: Sequence[TargetResult], scrub: Callable[[str], str]) -> Table:
    """The failed, not flat or guarded targets (the first PLAN_ROWS_SHOWN), with their errors."""
    rows = Table(title="Failed, not flat or guarded targets", title_justify="left")
    rows.add_column("account", overflow="fold")
    whole_column(rows, "instrument", [r.instrument for r in failed[:PLAN_ROWS_SHOWN]])
    rows.add_column("attempts", overflow="fold")
    rows.add_column("error", overflow="fold")
    for r in failed[:PLAN_ROWS_SHOWN]:
        rows.add_row(str(r.account_id), r.instrument, str(r.attempts), scrub(r.error or ""))
    return rows
