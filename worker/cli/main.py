"""The `liquidator` command: `run`, `check`, `status`, `cancel`, `journal` and `simulator`. Flags
and exit codes are a contract.

Everything that can be checked without the network is checked before the first request: a bad
targets file, bad settings or a missing confirmation exit 2 with nothing sent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO, cast

from worker.cli.books_flags import simulated_books
from worker.cli.checks import refuse_unsafe, settings_of
from worker.cli.journal_command import journal
from worker.cli.lifetime import maybe_simulated, stop_on_signals
from worker.cli.parser import build_parser
from worker.errors import InputError
from worker.inputs.secrets import ScrubbedText, Scrubber, secret_forms
from worker.inputs.settings import Settings
from worker.inputs.targets import TargetSpec, read_targets
from worker.journal.keys import journal_url_secrets
from worker.money import multiplier_text
from worker.observe import events, writer
from worker.output.exit_codes import ExitCode
from worker.output.stdio import guarded_stdio
from worker.run.runner import RunRequest, Watcher, run
from worker.run.schedule import parse_duration

if TYPE_CHECKING:
    from worker.cli.terminal import Terminal
    from worker.run.plan import Plan


def main(argv: Sequence[str] | None = None) -> int:
    # The fan-out makes short-lived cycles (retry state, futures, tracebacks) by the thousand.
    # Freeze what start-up built, so collections stop rescanning it, and collect less often.
    # (`python -m worker` and the `liquidator` script import with collection off.)
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    gc.enable()
    # A closed stdout or stderr (`… | head`, a terminal that hung up) is not a crash: the run
    # goes on, its report and journal written, its exit code its own.
    with guarded_stdio():
        return _command(argv)


def _command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "simulator":
        from worker.cli.simulator import serve_forever

        return serve_forever(args)
    if args.command == "journal":
        return journal(args)
    try:
        specs = read_targets(args.targets, args.account, args.position)
        before_close = (
            parse_duration(args.before_close) if getattr(args, "before_close", None) else None
        )
        settings = settings_of(args)
        refuse_unsafe(args, settings, specs)
        args.market = simulated_books(args, settings.close_style)
    except InputError as err:
        print(f"liquidator: {err}", file=sys.stderr)
        return int(ExitCode.INVALID)
    secrets = list(secret_forms(settings.api_key.get_secret_value())) if settings.api_key else []
    if settings.journal_url is not None:
        secrets += journal_url_secrets(settings.journal_url.get_secret_value())
    # Tables and a progress bar for people: on a terminal, when the console format is asked
    # for, and for `check`, whose whole point is to show what a run would target.
    for_people = settings.log_format == "console" or (
        settings.log_format != "json" and (sys.stdout.isatty() or args.command == "check")
    )
    terminal = _terminal(secrets) if for_people else None
    writer.configure(
        level=settings.log_level,
        fmt=settings.log_format,
        secrets=secrets,
        logger_factory=terminal.logger_factory if terminal is not None else None,
    )
    try:
        if args.command in ("status", "cancel"):
            return asyncio.run(_server_view(args, settings, specs, terminal))
        return asyncio.run(_main(args, settings, specs, terminal, before_close))
    except InputError as err:
        print(f"liquidator: {err}", file=sys.stderr)
        return int(ExitCode.INVALID)


def _terminal(secrets: Sequence[str]) -> Terminal:
    # Imported here: rich costs start-up time that unattended runs should not pay.
    from rich.console import Console

    from worker.cli.terminal import Terminal

    # The terminal is an exit: its tables show what the API sent (ids, symbols), as received.
    scrub = Scrubber(secrets).text
    stdout = cast(TextIO, ScrubbedText(sys.stdout, scrub))  # a stream in all but its type
    return Terminal(Console(file=stdout), scrub=scrub)


async def _main(
    args: argparse.Namespace,
    settings: Settings,
    specs: list[TargetSpec],
    terminal: Terminal | None,
    before_close: timedelta | None,
) -> int:
    stop = asyncio.Event()
    async with stop_on_signals(stop), maybe_simulated(args, settings, specs) as settings:
        dry_run = args.command == "check" or args.dry_run
        request = RunRequest(
            specs=specs,
            dry_run=dry_run,
            report_path=getattr(args, "report", None),
            confirm=terminal is not None and not dry_run and not args.yes,
            max_positions_override=getattr(args, "force", False),
            watcher=_watcher(terminal, dry_run),
            before_close=before_close,
            probe_journal=args.command == "check",
        )
        result = await run(settings, request, stop)
        if terminal is not None:
            terminal.show_summary(
                result.results,
                int(result.exit_code),
                seconds=(result.finished_at - result.started_at).total_seconds(),
                aborted=result.aborted,
                report_path=request.report_path,
                dry_run=dry_run,
            )
        for line in [*result.write_failures, *result.notices]:
            print(f"liquidator: {line}", file=sys.stderr)
        return int(result.exit_code)


async def _server_view(
    args: argparse.Namespace, settings: Settings, specs: list[TargetSpec], terminal: Terminal | None
) -> int:
    """`status` and `cancel`: what is open at the server for the targets."""
    stop = asyncio.Event()
    async with stop_on_signals(stop), maybe_simulated(args, settings, specs) as settings:
        if args.command == "status":
            from worker.cli.status import status

            return await status(settings, specs, stop, terminal)
        from worker.cli.cancel import CancelFlags, cancel

        flags = CancelFlags(yes=args.yes, dry_run=args.dry_run, force=args.force)
        return await cancel(settings, specs, stop, terminal, flags)


def _watcher(terminal: Terminal | None, dry_run: bool) -> Watcher:
    """A table for people; for a dry run read by a program, one event per position."""
    if terminal is not None:
        return terminal
    return PlanEvents() if dry_run else Watcher()


class PlanEvents(Watcher):
    """A dry run read by a program: one `plan_position` event per position it would close."""

    def show_plan(self, plan: Plan) -> None:
        for t in plan.targets:
            events.plan_position(
                account_id=t.account_id,
                instrument=t.instrument,
                instrument_id=t.instrument_id,
                symbol=t.symbol,
                instrument_type=t.instrument_type,
                side=t.closing_side,
                quantity=str(abs(t.quantity)),
                market_value=str(t.market_value),
                multiplier=multiplier_text(t.multiplier),
            )
