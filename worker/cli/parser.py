"""The command line's parser: every subcommand's flags and their help, a public contract
(`tests/cli/test_flags.py` holds them). It parses; what a command does is its handler's.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from worker import __version__
from worker.cli.books_flags import add_book_flags


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


SETTING_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
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
    for flag, kind, text in SETTING_FLAGS:
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
    for flag, kind, text in SETTING_FLAGS:
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
