"""The books flags (`--books`, `--thin`, `--books-file`) of `liquidator simulator` and of every
command's `--simulate`: defined here, resolved into the simulator's market before anything
starts (`worker.simulator.books`, loaded only for a rehearsal)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import InputError

if TYPE_CHECKING:
    from worker.simulator.market import MarketConfig


def add_book_flags(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The simulator's books (worker.simulator.books, docs/simulator.md)."""
    p.add_argument(
        "--books",
        choices=("none", "realistic", "thin"),
        help=f"{prefix}the books LIMIT and market orders fill against (default none)",
    )
    p.add_argument(
        "--thin",
        action="append",
        default=[],
        metavar="SYMBOL",
        help=f"{prefix}give this name a thin book (repeatable, or comma-separated)",
    )
    p.add_argument("--books-file", type=Path, metavar="FILE", help=f"{prefix}tune the books (TOML)")


def simulated_books(args: argparse.Namespace, close_style: str) -> MarketConfig | None:
    """--simulate's books (a `MarketConfig`), checked before anything starts; None without it.
    A protected rehearsal without a book would only show limits that never fill: said."""
    if not args.simulate:
        if args.books or args.thin or args.books_file:
            raise InputError("--books, --thin and --books-file shape --simulate's simulator")
        return None
    from worker.simulator.books import books

    market = books(args.books, thin_names(args), args.books_file)
    if close_style == "protected" and not market.depth and not market.instruments:
        print(
            "liquidator: --simulate without --books: LIMIT orders rest and never fill;"
            " rehearse the protected style with --books realistic",
            file=sys.stderr,
        )
    return market


def thin_names(args: argparse.Namespace) -> list[str]:
    """`--thin NVDA --thin TSLA,AMD`: the names, in order."""
    return [name.strip() for text in args.thin for name in text.split(",") if name.strip()]
