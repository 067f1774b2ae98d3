"""Reads with retries: listing positions and orders page by page, the clock, market hours.

Reads are safe to repeat, so each page is retried on any transient error. Pagination stops, with a
warning, when the server repeats a token, sends a page with nothing new, or never stops.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

from tenacity import RetryCallState

from worker.api.client import Reply, TradingApi
from worker.api.models import (
    WORKING_STATUSES,
    Instrument,
    MarketDataSnapshot,
    MarketHours,
    OptionsContract,
    Order,
    Position,
)
from worker.api.policy import RetryPolicy
from worker.observe import events
from worker.observe.counters import RunCounters

T = TypeVar("T")
WORKING_ORDER_STATUSES = tuple(sorted(WORKING_STATUSES))
MAX_PAGES = 1000  # 1,000 pages of 1,000: far beyond any real account


class Reader:
    def __init__(
        self,
        api: TradingApi,
        policy: RetryPolicy,
        *,
        counters: RunCounters | None = None,
        max_pages: int = MAX_PAGES,
        page_size: int = 1000,
    ) -> None:
        self._api = api
        self._policy = policy
        self._counters = counters if counters is not None else RunCounters()  # its retries
        self._max_pages = max_pages
        self._page_size = page_size

    async def positions(
        self, account_id: int, instrument_ids: Sequence[str] = ()
    ) -> tuple[list[Position], list[str]]:
        """Every open position of the account (or of these instruments), and the request_ids."""
        return await self._all_pages(
            f"positions of account {account_id}",
            lambda token: self._api.get_positions(
                account_id,
                page_token=token,
                instrument_ids=instrument_ids,
                page_size=self._page_size,
            ),
            key=lambda p: p.instrument_id,
        )

    async def orders(
        self, account_id: int, instrument_ids: Sequence[str], since: datetime | None
    ) -> tuple[list[Order], list[str]]:
        """The account's orders (on these instruments), created from `since` (None: any time)."""
        return await self._all_pages(
            f"orders of account {account_id}",
            lambda token: self._api.get_orders(
                account_id,
                instrument_ids=instrument_ids,
                since=since,
                page_token=token,
                page_size=self._page_size,
            ),
            key=lambda o: o.id,
        )

    async def working_orders(
        self, account_id: int, instrument_ids: Sequence[str]
    ) -> tuple[list[Order], list[str]]:
        """Every order on these instruments (all, if none named) that can still fill, of any
        age: listed by status, never bounded by time."""
        return await self._all_pages(
            f"working orders of account {account_id}",
            lambda token: self._api.get_orders(
                account_id,
                instrument_ids=instrument_ids,
                statuses=WORKING_ORDER_STATUSES,
                page_token=token,
                page_size=self._page_size,
            ),
            key=lambda o: o.id,
        )

    async def orders_by_id(
        self, account_id: int, order_ids: Sequence[str]
    ) -> tuple[list[Order], list[str]]:
        """These orders (by their ids), whenever they were created."""
        return await self._all_pages(
            f"orders of account {account_id} by id",
            lambda token: self._api.get_orders(
                account_id, order_ids=order_ids, page_token=token, page_size=self._page_size
            ),
            key=lambda o: o.id,
        )

    async def instrument(self, name: str) -> Reply[Instrument]:
        """Raises `NotFound` when the API does not know the instrument."""
        return await self.retried(f"instrument {name}", lambda: self._api.get_instrument(name))

    async def snapshots(self, instrument_ids: Sequence[str]) -> Reply[list[MarketDataSnapshot]]:
        """The market data snapshots of these instruments (one request: the caller batches)."""
        return await self.retried(
            f"snapshots of {len(instrument_ids)} instrument(s)",
            lambda: self._api.get_snapshots(instrument_ids),
        )

    async def option_contracts(self, contract_ids: Sequence[str]) -> Reply[list[OptionsContract]]:
        """These option contracts (one request: the caller batches)."""
        return await self.retried(
            f"option contracts of {len(contract_ids)} instrument(s)",
            lambda: self._api.get_option_contracts(contract_ids),
        )

    async def clock(self) -> Reply[datetime]:
        return await self.retried("clock", self._api.get_clock)

    async def market_hours(self) -> Reply[MarketHours]:
        return await self.retried("market hours", self._api.get_market_hours)

    async def retried(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        def on_retry(state: RetryCallState, wait_s: float) -> None:
            err = state.outcome.exception() if state.outcome else None
            self._counters.retries += 1
            events.read_retry(
                what=what, attempt=state.attempt_number, reason=str(err), wait_s=wait_s
            )

        async for attempt in self._policy.for_reads(on_retry):
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _all_pages(
        self,
        what: str,
        fetch: Callable[[str | None], Awaitable[Reply[list[T]]]],
        key: Callable[[T], str],
    ) -> tuple[list[T], list[str]]:
        items: dict[str, T] = {}
        request_ids: list[str] = []
        seen_tokens: set[str] = set()
        token: str | None = None
        for page in range(1, self._max_pages + 1):
            reply = await self.retried(what, functools.partial(fetch, token))
            request_ids.append(reply.request_id)
            before = len(items)
            for item in reply.data:
                items.setdefault(key(item), item)
            token = reply.next_page_token
            if token is None:
                break
            stop = None
            if token in seen_tokens:
                stop = "the server repeated a page token"
            elif len(items) == before:
                stop = "a page brought nothing new"
            elif page == self._max_pages:
                stop = f"still more after {page} pages"
            if stop:
                events.pagination_stopped(what=what, reason=stop, pages=page, items=len(items))
                break
            seen_tokens.add(token)
        return list(items.values()), request_ids
