"""`get_executions`: an account's fills, newest first, with the spec's filters and pagination.

Every fill the book makes is one execution at its price (one per book level taken). Read only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from worker.simulator.replies import error
from worker.simulator.state import Book, SimAccount, instrument_uuid

Page = Callable[[web.Request, list[dict[str, Any]]], web.Response]


class ExecutionDesk:
    def __init__(self, book: Book, page: Page) -> None:
        self.book = book
        self.page = page

    async def list_executions(
        self, request: web.Request, account: SimAccount | None
    ) -> web.Response:
        assert account is not None
        self.book.apply_fills(account)
        q = request.query
        try:
            start = _epoch(q["from"]) if q.get("from") else None
            end = _epoch(q["to"]) if q.get("to") else None
        except ValueError as exc:
            return error(400, f"invalid date-time: {exc}")
        executions = sorted(
            account.executions, key=lambda e: (e.transaction_time, e.seq), reverse=True
        )
        lag = self.book.config.executions_listing_lag_s
        if lag > 0:
            as_of = self.book.config.clock() - lag
            executions = [e for e in executions if e.transaction_time <= as_of]
        instruments = _csv(q.get("instrument_ids"))
        if instruments:  # UUIDs (any case) or symbols
            ids = {(account.resolve(i) or i).lower() for i in instruments}
            executions = [e for e in executions if e.instrument_id.lower() in ids]
        underlyings = _csv(q.get("underlying_instrument_ids"))
        if underlyings:
            ids = {_uuid_of(u).lower() for u in underlyings}
            executions = [e for e in executions if (e.underlying or "").lower() in ids]
        order_ids = _csv(q.get("order_ids"))
        if order_ids:
            executions = [e for e in executions if e.order_id in order_ids]
        # Compared as the reply shows them (microseconds), so a time read off a reply finds
        # its own execution at either end.
        if start is not None:
            executions = [e for e in executions if _shown(e.transaction_time) >= start]
        if end is not None:
            executions = [e for e in executions if _shown(e.transaction_time) <= end]
        return self.page(request, [e.to_api() for e in executions])


def _uuid_of(name: str) -> str:
    """An underlier named by UUID stays; by ticker, the simulator's UUID for that ticker."""
    return name if len(name) == 36 and name.count("-") == 4 else instrument_uuid(name)


def _csv(raw: str | None) -> set[str]:
    return {part.strip() for part in raw.split(",") if part.strip()} if raw else set()


def _epoch(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _shown(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
