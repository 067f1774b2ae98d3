"""The `liquidator` command: `run`, `check`, `status`, `cancel`, `journal` and `simulator`. Flags
and exit codes are a contract.

Everything that can be checked without the network is checked before the first request: a bad
targets file, bad settings or a missing confirmation exit 2 with nothing sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from pydantic import SecretStr

from worker import __version__
from worker.cli.books_flags import add_book_flags, simulated_books
from worker.errors import InputError
from worker.inputs.secrets import ScrubbedText, Scrubber, check_key, secret_forms
from worker.inputs.settings import Settings, api_key_origin, load_settings
from worker.inputs.targets import TargetSpec, accounts_of, read_targets
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


def _path(text: str) -> Path:
    """A path flag: an empty one would silently mean the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a path")
    return Path(text)


def _day(text: str) -> str:
    """--day: a date as YYYY-MM-DD ('yesterday' would silently match no runs)."""
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text) is None:
            raise ValueError
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _keep_days(text: str) -> int:
    """--keep-days: a whole number of days, at least 1 (today's job is always kept)."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of days, at least 1, got {text!r}")
    return int(text)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_SETTING_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
    ("--base-url", str, "API base URL (https://, or http:// on loopback)"),
    ("--concurrency", int, "requests in flight, at most"),
    ("--rate-limit", float, "requests per second, at most (0 = unlimited)"),
    ("--request-timeout", float, "seconds to wait for one reply"),
    ("--max-attempts", int, "tries per close and per read"),
    ("--state-dir", _path, "where the run journal lives"),
    ("--log-level", str, "debug, info, warning or error"),
    ("--log-format", str, "auto, json or console"),
    ("--metrics-file", _path, "write Prometheus text metrics here at the end"),
    ("--close-via", str, "close_position (default) or submit_orders (client ids: exactly once)"),
    ("--batch-size", int, "submit_orders: closing orders per POST, at most (default 100)"),
    ("--at-close", bool, "market-on-close orders (AT_THE_CLOSE; implies submit_orders)"),
    ("--close-style", str, "market (default) or protected (a collared LIMIT, then market)"),
    ("--moc-cutoff", str, "the last moment for --at-close, before the close (default 10m)"),
    ("--lock-wait", float, "seconds to wait for another run holding the journal (default 0)"),
    ("--journal-url", str, "postgresql://... : the journal in PostgreSQL, for several hosts"),
    ("--flat-timeout", float, "seconds to follow each close until its position reads flat"),
]

_VIEW_FLAGS = (
    "--base-url", "--concurrency", "--rate-limit", "--request-timeout", "--max-attempts",
    "--log-level", "--log-format",
)  # fmt: skip


# `check` sends nothing, follows nothing, takes no lock and writes no metrics: these would do
# nothing there. (Set in the settings file or the environment they are still validated.)
_NOT_FOR_CHECK = frozenset({"--metrics-file", "--lock-wait", "--flat-timeout"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liquidator", description="Flatten Clear Street positions, each closed exactly once."
    )
    parser.add_argument("--version", action="version", version=f"liquidator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub.add_parser("run", help="close the targeted positions"))
    _check_parser(sub.add_parser("check", help="validate settings and targets, check the key"))
    _status_parser(
        sub.add_parser(
            "status", help="show the targets' open positions and working orders; sends nothing"
        )
    )
    _cancel_parser(
        sub.add_parser(
            "cancel", help="cancel the working orders on the targets' instruments, after a yes"
        )
    )
    _journal_parser(
        sub.add_parser(
            "journal",
            help="show today's jobs, intents and outcomes; `journal verify` checks it;"
            " `journal last` prints the last run's report; `journal prune` deletes old jobs",
        )
    )
    _simulator_parser(
        sub.add_parser("simulator", help="serve the built-in API simulator for rehearsals")
    )
    return parser


def _add_setting_flags(p: argparse.ArgumentParser, *, skip: frozenset[str] = frozenset()) -> None:
    """run and check: every setting a flag overrides."""
    for flag, kind, text in _SETTING_FLAGS:
        if flag in skip:
            continue
        if kind is bool:  # absent stays None, so the environment and file still apply
            p.add_argument(flag, action="store_true", default=None, help=text)
        else:
            p.add_argument(flag, type=kind, help=text)


def _run_parser(p: argparse.ArgumentParser) -> None:
    _add_target_flags(p)
    _add_setting_flags(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan, send no close")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--report", type=Path, metavar="FILE", help="write the JSON report here")
    p.add_argument(
        "--force",
        action="store_true",
        help="close even above the max_positions ceiling and past the price guards (this run)",
    )
    p.add_argument(
        "--before-close",
        type=str,
        metavar="DURATION",
        help="wait until today's regular close minus DURATION (90s, 15m, 1h); skip if closed",
    )


def _check_parser(p: argparse.ArgumentParser) -> None:
    _add_target_flags(p)
    _add_setting_flags(p, skip=_NOT_FOR_CHECK)
    p.add_argument("--report", type=Path, metavar="FILE", help="write the JSON report here")


# status and cancel read the server (cancel also cancels): the settings that shape requests.
# Both read today's job's ids from the journal, and cancel refuses while a run holds it: the
# journal is found where `run` would keep it, with the same flags and settings.
_VIEWING = (*_VIEW_FLAGS, "--state-dir", "--journal-url")


def _add_viewing_flags(p: argparse.ArgumentParser, flags: tuple[str, ...]) -> None:
    _add_target_flags(p)
    for flag, kind, text in _SETTING_FLAGS:
        if flag in flags:
            p.add_argument(flag, type=kind, help=text)
    # as `journal --json`; the full ids are in the events
    p.add_argument("--json", action="store_true", help="JSON events, as --log-format json")


def _status_parser(p: argparse.ArgumentParser) -> None:
    _add_viewing_flags(p, _VIEWING)


def _cancel_parser(p: argparse.ArgumentParser) -> None:
    _add_viewing_flags(p, (*_VIEWING, "--flat-timeout"))
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be cancelled, cancel nothing"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="cancel even while a run holds the journal's lock (its own orders included)",
    )


def _journal_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["show", "verify", "last", "prune"], default="show")
    p.add_argument("--state-dir", type=_path, help="where the SQLite journal lives")
    p.add_argument("--journal-url", type=str, help="postgresql://... journal")
    p.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML)")
    p.add_argument("--day", type=_day, help="trading day YYYY-MM-DD (default: today, New York)")
    p.add_argument("--json", action="store_true", help="JSON even on a terminal")
    p.add_argument(
        "--keep-days",
        type=_keep_days,
        metavar="N",
        help="prune: keep the jobs of the last N days (default: journal_keep_days, 90)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="prune: say what would go, delete nothing"
    )


def _simulator_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--accounts", type=int, default=5, help="accounts to seed")
    p.add_argument("--positions", type=int, default=20, help="positions per account")
    p.add_argument(
        "--first-account",
        type=int,
        default=19816,  # config/targets.example.toml's first account
        help="first seeded account; the default ones hold what config/targets.example.toml names",
    )
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    p.add_argument("--fill-delay", type=float, default=0.5, help="seconds until orders fill")
    p.add_argument(
        "--api-key", default="sim-key.sim-secret-for-rehearsals", help="key the simulator wants"
    )
    add_book_flags(p)


def _add_target_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--targets",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="targets file, TOML or CSV (repeatable)",
    )
    p.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ID",
        help="every open position of this account (repeatable)",
    )
    p.add_argument(
        "--position",
        action="append",
        default=[],
        metavar="ACCOUNT:INSTRUMENT",
        help="one position, the instrument by symbol or UUID (repeatable)",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML)")
    p.add_argument("--simulate", action="store_true", help="run against the built-in simulator")
    add_book_flags(p, "--simulate: ")


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
        return _journal(args)
    try:
        specs = read_targets(args.targets, args.account, args.position)
        before_close = (
            parse_duration(args.before_close) if getattr(args, "before_close", None) else None
        )
        settings = _settings(args)
        _refuse_unsafe(args, settings, specs)
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


def _journal(args: argparse.Namespace) -> int:
    from worker.journal import view as journal_view

    try:
        cli = {"state_dir": args.state_dir, "journal_url": args.journal_url}
        settings = load_settings(cli, args.config)
        as_json = args.json or not sys.stdout.isatty()
        if args.action == "last":
            return _last_report(settings, as_json)
        if args.action == "verify":
            return journal_view.verify(settings, as_json)
        if args.action == "prune":
            from worker.journal.prune_command import prune

            # Events (the journal opened) go to stderr, only warnings: stdout is the result.
            url = settings.journal_url.get_secret_value() if settings.journal_url else ""
            secrets = journal_url_secrets(url)
            writer.configure(level="warning", fmt="json", stream=sys.stderr, secrets=secrets)
            return prune(settings, args.keep_days, dry_run=args.dry_run, as_json=as_json)
        if args.keep_days is not None or args.dry_run:
            raise InputError("--keep-days and --dry-run are for `journal prune`")
        return journal_view.show(settings, args.day, as_json)
    except Exception as exc:  # the journal cannot be reached or read: say so, exit 2
        message = f"{type(exc).__name__}: {exc}"
        for secret in journal_url_secrets(args.journal_url or ""):
            message = message.replace(secret, "***")
        print(f"liquidator journal: {message}", file=sys.stderr)
        return int(ExitCode.INVALID)


def _last_report(settings: Settings, as_json: bool) -> int:
    """The report the last run (not a dry run) left in STATE_DIR: whole as JSON, or its head."""
    import json

    from worker.run.finish import last_report_path

    path = last_report_path(settings)
    if not path.is_file():
        print(f"liquidator journal last: no run has left a report in {path}", file=sys.stderr)
        return int(ExitCode.FAILED)
    text = path.read_text(encoding="utf-8")
    if as_json:
        sys.stdout.write(text)
        return int(ExitCode.OK)
    doc = json.loads(text)
    summary = ", ".join(f"{k} {v}" for k, v in doc["summary"].items() if v)
    print(f"last run {doc['run_id']}: {doc['started_at']} .. {doc['finished_at']}")
    print(f"exit code {doc['exit_code']}; {summary or 'no targets'}")
    if doc["aborted"]:
        print(f"aborted: {doc['aborted']}")
    for r in doc["results"]:
        if r["outcome"] not in ("closed", "already_flat"):
            print(f"  {r['account_id']} {r['instrument']}: {r['outcome']} {r['error'] or ''}")
    print(f"report: {path}")
    return int(ExitCode.OK)


def _terminal(secrets: Sequence[str]) -> Terminal:
    # Imported here: rich costs start-up time that unattended runs should not pay.
    from rich.console import Console

    from worker.cli.terminal import Terminal

    # The terminal is an exit: its tables show what the API sent (ids, symbols), as received.
    scrub = Scrubber(secrets).text
    stdout = cast(TextIO, ScrubbedText(sys.stdout, scrub))  # a stream in all but its type
    return Terminal(Console(file=stdout), scrub=scrub)


def _settings(args: argparse.Namespace) -> Settings:
    cli: dict[str, Any] = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"), None)
        for flag, _, _ in _SETTING_FLAGS
    }
    if getattr(args, "json", False):
        cli["log_format"] = "json"
    return load_settings(cli, args.config)


def _writable_parent(path: Path, what: str) -> None:
    """Found out now, not after the closes were sent."""
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory; name a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"{what} {path}: the directory {parent} does not exist or is not writable")


def _refuse_unsafe(args: argparse.Namespace, settings: Settings, specs: list[TargetSpec]) -> None:
    if getattr(args, "report", None) is not None:
        _writable_parent(args.report, "--report")
    # metrics_file is not checked here: metrics never stop a flatten (`worker.output.metrics`).
    if settings.allowed_accounts is not None:
        outside = [a for a in accounts_of(specs) if a not in settings.allowed_accounts]
        if outside:
            raise InputError(
                f"account(s) {', '.join(map(str, outside))} are not in allowed_accounts"
            )
    if args.simulate:
        return
    if settings.api_key is None:
        raise InputError(
            "no API key: set LIQUIDATOR_API_KEY, api_key in the settings file, or a systemd"
            " credential named clearstreet-api-key"
        )
    check_key(settings.api_key.get_secret_value(), api_key_origin(args.config))
    if (
        args.command in ("run", "cancel")
        and not args.dry_run
        and not args.yes
        and not (sys.stdin.isatty() and sys.stdout.isatty())
    ):
        raise InputError("no terminal to confirm the plan on: pass --yes to run unattended")


async def _main(
    args: argparse.Namespace,
    settings: Settings,
    specs: list[TargetSpec],
    terminal: Terminal | None,
    before_close: timedelta | None,
) -> int:
    stop = asyncio.Event()
    async with _stop_on_signals(stop), _maybe_simulated(args, settings, specs) as settings:
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
    async with _stop_on_signals(stop), _maybe_simulated(args, settings, specs) as settings:
        if args.command == "status":
            from worker.cli.status import status

            return await status(settings, specs, stop, terminal)
        from worker.cli.cancel import cancel

        return await cancel(
            settings, specs, stop, terminal, yes=args.yes, dry_run=args.dry_run, force=args.force
        )


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


@contextlib.asynccontextmanager
async def _stop_on_signals(stop: asyncio.Event) -> AsyncIterator[None]:
    """SIGTERM, SIGINT and SIGHUP each ask for a stop: no new close, the report written, exit 3.
    SIGHUP too: a closed terminal or ssh session must not kill a run between its closes."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _maybe_simulated(
    args: argparse.Namespace, settings: Settings, specs: list[TargetSpec]
) -> AsyncIterator[Settings]:
    if not args.simulate:
        yield settings
        return
    from worker.cli.simulator import simulator_for  # the simulator only loads for rehearsals

    async with simulator_for(specs, args.market) as (base_url, api_key):
        yield settings.model_copy(update={"base_url": base_url, "api_key": SecretStr(api_key)})
