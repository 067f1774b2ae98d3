"""`liquidator status` and `cancel` at a terminal: positions and working orders, one table each,
readable at 80 columns.

Order ids are shortened the way `git` shortens hashes (the shortest prefix no other id shown
shares, never under `SHORT_ID` characters): the full id is in the JSON events (`--json`).
Symbols are never cut: an option's OSI symbol (`SPY   261218P00600000`) is whole or two strikes
would look alike. Client ids are in the JSON only; `job` beside an id marks the job's own order.
Times in force are abbreviated as FIX writes them (GTC, IOC, CLS for AT_THE_CLOSE, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from worker.run.server_view import AccountView

SHORT_ID = 8  # as the terminal's close_order lines show an order id
# Times in force as a desk writes them (FIX's names); the JSON events carry the API's words.
_TIF = {
    "GOOD_TILL_CANCEL": "GTC",
    "IMMEDIATE_OR_CANCEL": "IOC",
    "FILL_OR_KILL": "FOK",
    "GOOD_TILL_DATE": "GTD",
    "AT_THE_OPENING": "OPG",
    "AT_THE_CLOSE": "CLS",
}


def short_ids(ids: Iterable[str], minimum: int = SHORT_ID) -> dict[str, str]:
    """Each id's shortest prefix of at least `minimum` characters that no other id starts with
    (an id that is a prefix of another is kept whole)."""
    unique = sorted(set(ids))
    shown: dict[str, str] = {}
    for n, full in enumerate(unique):
        length = minimum
        for neighbour in unique[max(0, n - 1) : n] + unique[n + 1 : n + 2]:
            common = 0
            for a, b in zip(full, neighbour, strict=False):
                if a != b:
                    break
                common += 1
            length = max(length, common + 1)
        shown[full] = full[:length]
    return shown


def _table(title: str) -> Table:
    """Compact: no edges or vertical rules, one space between columns, so more fits in 80."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
        pad_edge=False,
    )


def whole_column(table: Table, header: str, values: list[str]) -> None:
    """A column never cut nor wrapped, as wide as its widest value: when the table is too wide
    for the terminal, the others wrap first."""
    table.add_column(header, no_wrap=True, min_width=max([len(header), *map(len, values)]))


def _price(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,}"


def orders_table(title: str, view: AccountView) -> Table:
    """Working orders: short id (`job`: the job's own), symbol, side, filled of quantity, type,
    limit price, time in force, status. Only the last three may wrap."""
    table = _table(title)
    table.add_column("order", no_wrap=True)
    symbols = [o.symbol or o.instrument_id or "" for o in view.orders]
    whole_column(table, "symbol", symbols)
    table.add_column("side", overflow="fold")
    table.add_column("fill/qty", justify="right", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("limit", justify="right", overflow="fold")
    for column in ("tif", "status"):
        table.add_column(column, overflow="fold")
    shown = short_ids(o.id for o in view.orders)
    for n, o in enumerate(view.orders):
        table.add_row(
            shown[o.id] + (" job" if o.id in view.own else ""),
            symbols[n],
            Text(o.side, style="red" if o.side.startswith("SELL") else "green"),
            f"{o.filled_quantity:,}/{o.quantity:,}",
            o.order_type,
            _price(o.limit_price),
            _TIF.get(o.time_in_force or "", o.time_in_force or ""),
            o.status,
        )
    return table


def show_status(console: Console, views: list[AccountView]) -> None:
    """`liquidator status`: per account, its open positions, then its working orders."""
    for view in views:
        if view.error is not None:
            console.print(f"[bold red]Account {view.account_id}: {view.error}[/]", soft_wrap=True)
            continue
        positions = _table(f"Account {view.account_id}: {len(view.positions)} open position(s)")
        whole_column(positions, "symbol", [t.symbol for t in view.positions])
        positions.add_column("type", overflow="fold")
        positions.add_column("side", overflow="fold")
        positions.add_column("quantity", justify="right", overflow="fold")
        values = [f"{t.market_value:,.2f}" for t in view.positions]
        whole_column(positions, "market value", values)
        positions.columns[-1].justify = "right"
        for n, t in enumerate(view.positions):
            positions.add_row(
                t.symbol,
                t.instrument_type,
                "LONG" if t.quantity > 0 else "SHORT",
                f"{t.quantity:,}",
                values[n],
            )
        console.print(positions)
        title = f"Account {view.account_id}: {len(view.orders)} working order(s)"
        if view.own:
            title += f", {len(view.own)} the job's own"
        if view.orders:
            console.print(orders_table(title, view))
        else:
            console.print(title)
