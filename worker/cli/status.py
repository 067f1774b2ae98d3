"""`liquidator status`: per target account, its open positions and working orders. Sends nothing.

A table per account on a terminal, otherwise `status_position`, `status_order` and
`status_account` events; exit 0 when every account was read, 1 when one could not be, 2 when
`run` would refuse the targets (`worker.run.server_view`), 3 when the key was refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from worker.errors import Unauthorized
from worker.inputs.settings import Settings
from worker.inputs.targets import TargetSpec
from worker.observe import events
from worker.output.exit_codes import ExitCode
from worker.run.server_view import AccountView, connected, read_view

if TYPE_CHECKING:
    from worker.cli.terminal import Terminal


async def status(
    settings: Settings, specs: Sequence[TargetSpec], stop: asyncio.Event, terminal: Terminal | None
) -> int:
    async with connected(settings, stop) as (api, reader):
        try:
            views = await read_view(settings, api, reader, specs)
        except Unauthorized as err:
            events.run_aborted(f"credentials rejected: {err}")
            return int(ExitCode.ABORTED)
    if terminal is not None:
        from worker.cli.tables import show_status

        show_status(terminal.console, views)
    else:
        emit(views)
    return int(ExitCode.FAILED if any(v.error for v in views) else ExitCode.OK)


def emit(views: Sequence[AccountView]) -> None:
    for view in views:
        for t in view.positions:
            events.status_position(
                account_id=t.account_id,
                instrument=t.instrument,
                instrument_id=t.instrument_id,
                symbol=t.symbol,
                instrument_type=t.instrument_type,
                side="LONG" if t.quantity > 0 else "SHORT",
                quantity=str(t.quantity),
                market_value=str(t.market_value),
            )
        for o in view.orders:
            events.status_order(o, own=o.id in view.own)
        events.status_account(
            account_id=view.account_id,
            positions=len(view.positions),
            working_orders=len(view.orders),
            own_orders=len(view.own),
            error=view.error,
        )
