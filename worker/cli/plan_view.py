"""The plan as the terminal shows it before anything is sent: the positions to close, the
style and requests, the totals, what is settled already, and what a guard holds back.

It only prints; `worker.cli.terminal` decides when.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from worker.cli.tables import whole_column
from worker.output.report import TargetResult
from worker.results import Outcome
from worker.run.plan import Plan, cost_line

PLAN_ROWS_SHOWN = 40


def print_plan(console: Console, plan: Plan, scrub: Callable[[str], str]) -> None:
    """The whole plan; a server's texts (why a target is held, not held) `scrub`bed."""
    sides: dict[str, Decimal] = defaultdict(Decimal)
    for t in plan.targets:
        sides[t.closing_side] += abs(t.market_value)
    gross = f"{sum(sides.values(), Decimal(0)):,.2f}"
    console.print(_plan_table(plan, gross))
    _print_plan_lines(console, plan, sides, gross)
    if plan.settled:
        flat = sum(1 for r in plan.settled if r.outcome is Outcome.ALREADY_FLAT)
        failed = sum(1 for r in plan.settled if r.outcome is Outcome.FAILED)
        console.print(
            f"Also: {flat} target(s) already flat, {failed} target(s) failed"
            " at planning (see events)."
        )
        print_not_held(console, plan.settled, scrub)
    if plan.guarded:
        console.print(_guarded_table(plan.guarded, scrub))


def print_not_held(
    console: Console, results: Sequence[TargetResult], scrub: Callable[[str], str]
) -> None:
    """Each named instrument its account does not hold, with what it holds on it: one line
    each, wrapped by the terminal, so an option symbol is never cut."""
    not_held = [r for r in results if r.outcome is Outcome.NOT_HELD]
    if not not_held:
        return
    console.print(
        Text(f"Not held, nothing to close: {len(not_held)}", style="bold yellow"),
        soft_wrap=True,
    )
    for r in not_held[:PLAN_ROWS_SHOWN]:
        line = f"  {r.account_id}:{r.instrument}: {scrub(r.error or 'not held')}"
        console.print(line, soft_wrap=True)
    if len(not_held) > PLAN_ROWS_SHOWN:
        console.print(f"  and {len(not_held) - PLAN_ROWS_SHOWN} more (see the report)")


def _print_plan_lines(
    console: Console, plan: Plan, sides: Mapping[str, Decimal], gross: str
) -> None:
    """The plan's style, its requests and its totals, each a line wrapped by the terminal
    rather than cut by the table."""
    if plan.moc_cutoff is not None:
        console.print(f"Market-on-close: {plan.moc_cutoff}", soft_wrap=True)
    if plan.close_style is not None:
        console.print(f"Close style: {plan.close_style}", soft_wrap=True)
    for cost in plan.costs:
        console.print(f"Requests, {cost_line(cost)}", soft_wrap=True)
    sells = sum(1 for t in plan.targets if t.closing_side == "SELL")
    console.print(
        f"Gross market value (absolute values summed): {gross}"
        f" — SELL {sides['SELL']:,.2f}, BUY {sides['BUY']:,.2f};"
        f" {sells} SELL / {len(plan.targets) - sells} BUY"
        f" over {len({t.account_id for t in plan.targets})} account(s)",
        soft_wrap=True,
    )


def _guarded_table(guarded: Sequence[TargetResult], scrub: Callable[[str], str]) -> Table:
    """The targets a guard holds back, with why (scrubbed: a server's text)."""
    held = Table(
        title=f"Held by a guard, NOT sent: {len(guarded)} (--force sends them)",
        title_justify="left",
    )
    held.add_column("account", overflow="fold")
    whole_column(held, "instrument", [r.instrument for r in guarded[:PLAN_ROWS_SHOWN]])
    held.add_column("why", overflow="fold")
    for r in guarded[:PLAN_ROWS_SHOWN]:
        held.add_row(str(r.account_id), r.instrument, scrub(r.error or ""))
    if len(guarded) > PLAN_ROWS_SHOWN:
        held.add_row("…", f"and {len(guarded) - PLAN_ROWS_SHOWN} more", "")
    return held


def _plan_table(plan: Plan, gross: str) -> Table:
    """The positions to close (the first PLAN_ROWS_SHOWN), and their gross value."""
    table = Table(title=f"Plan: {len(plan.targets)} positions to close", title_justify="left")
    shown = plan.targets[:PLAN_ROWS_SHOWN]
    # The symbol and the values whole (an OSI symbol cut makes two strikes look alike); on
    # a narrow terminal the other columns wrap.
    table.add_column("account", justify="right", overflow="fold")
    whole_column(table, "symbol", [t.symbol for t in shown])
    table.add_column("type", overflow="fold")
    table.add_column("side sent", overflow="fold")
    table.add_column("quantity", justify="right", overflow="fold")
    # Never cut: on a narrow terminal the other columns wrap, the values keep every digit.
    widest = max([len(gross), *(len(f"{t.market_value:,.2f}") for t in shown)])
    table.add_column("market value", justify="right", no_wrap=True, min_width=widest)
    for t in shown:
        table.add_row(
            str(t.account_id),
            t.symbol,
            t.instrument_type,
            Text(t.closing_side, style="red" if t.closing_side == "SELL" else "green"),
            f"{abs(t.quantity):,}",
            f"{t.market_value:,.2f}",
        )
    hidden = len(plan.targets) - PLAN_ROWS_SHOWN
    if hidden > 0:
        table.add_row("…", f"and {hidden} more", "", "", "", "")
    table.add_section()
    table.add_row("gross", "", "", "", "", gross)
    return table
