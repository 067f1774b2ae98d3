"""What the worker reads: positions, orders and executions (listings, paged and filtered), one
order, instruments, quotes, option contracts, the clock and market hours. Every one is a GET,
safe to send again (`worker.api.reads` retries them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from pydantic import TypeAdapter

from worker.api.envelope import ORDER, ORDERS, Reply
from worker.api.models import (
    Clock,
    Envelope,
    Execution,
    Instrument,
    MarketDataSnapshot,
    MarketHours,
    OptionsContract,
    Order,
    Position,
)
from worker.api.transport import Transport
from worker.errors import OutcomeUnknown

# One pass from bytes to typed data (pydantic-core parses the JSON itself).
_POSITIONS = TypeAdapter(Envelope[list[Position]])
_EXECUTIONS = TypeAdapter(Envelope[list[Execution]])
_MARKET_HOURS = TypeAdapter(Envelope[list[MarketHours]])
_CLOCK = TypeAdapter(Envelope[Clock])
_INSTRUMENT = TypeAdapter(Envelope[Instrument])
_SNAPSHOTS = TypeAdapter(Envelope[list[MarketDataSnapshot]])
_CONTRACTS = TypeAdapter(Envelope[list[OptionsContract]])
# Ids in one request's filter (instrument_ids, order_ids, the instruments a cancel names): the
# spec names no maximum; 100 UUIDs keep the query string near 4 kB.
IDS_PER_REQUEST = 100
SNAPSHOT_BATCH = IDS_PER_REQUEST  # instruments per market-data snapshot request
# Contracts per `get_option_contracts` request: the spec's maximum for `contract_ids`.
CONTRACTS_BATCH = 100


class Listings(Transport):
    """The endpoints that read."""

    async def get_positions(
        self,
        account_id: int,
        *,
        page_token: str | None = None,
        instrument_ids: Sequence[str] = (),
        page_size: int = 1000,
    ) -> Reply[list[Position]]:
        params = _page(page_token, page_size) | _filters(instrument_ids=instrument_ids)
        raw = await self._call("GET", f"/v1/accounts/{account_id}/positions", params=params)
        return self._parse(_POSITIONS, raw)

    async def get_orders(
        self,
        account_id: int,
        *,
        instrument_ids: Sequence[str] = (),
        order_ids: Sequence[str] = (),
        since: datetime | None = None,
        statuses: Sequence[str] = (),
        page_token: str | None = None,
        page_size: int = 1000,
    ) -> Reply[list[Order]]:
        params = _page(page_token, page_size) | _filters(
            instrument_ids=instrument_ids, order_ids=order_ids, status=statuses, since=since
        )
        raw = await self._call("GET", f"/v1/accounts/{account_id}/orders", params=params)
        return self._parse(ORDERS, raw)

    async def get_executions(
        self,
        account_id: int,
        *,
        instrument_ids: Sequence[str] = (),
        since: datetime | None = None,
        page_token: str | None = None,
        page_size: int = 1000,
    ) -> Reply[list[Execution]]:
        """The account's fills (get_executions), newest first, each with its order id."""
        params = _page(page_token, page_size) | _filters(instrument_ids=instrument_ids, since=since)
        raw = await self._call("GET", f"/v1/accounts/{account_id}/executions", params=params)
        return self._parse(_EXECUTIONS, raw)

    async def get_order(self, account_id: int, order_id: str) -> Reply[Order]:
        """One order (get_order_by_id), named by its `id` whatever its status, or by its client
        id while it is open. Current even when the orders listing lags; `NotFound` (404): no
        such order, or, by client id, none open under it."""
        path = f"/v1/accounts/{account_id}/orders/{quote(order_id, safe='')}"
        return self._parse(ORDER, await self._call("GET", path))

    async def orders_by_client_id(
        self, account_id: int, client_ids: Sequence[str]
    ) -> Reply[list[Order]]:
        """The account's orders whose client id is one of `client_ids` (at most 1,000).

        The spec's `order_ids` filter matches an order's `id` or its `client_order_id`; only
        client-id matches are kept, so an engine id can never pass for one of ours.
        """
        if not 1 <= len(client_ids) <= 1000:
            raise ValueError("orders_by_client_id takes 1 to 1,000 client ids (one page)")
        reply = await self.get_orders(account_id, order_ids=client_ids)
        wanted = set(client_ids)
        mine = [o for o in reply.data if o.client_order_id in wanted]
        return Reply(mine, reply.request_id, reply.next_page_token)

    async def get_instrument(self, instrument: str) -> Reply[Instrument]:
        """One instrument by UUID or symbol; `NotFound` when the API does not know it."""
        raw = await self._call("GET", f"/v1/instruments/{quote(instrument, safe='')}")
        return self._parse(_INSTRUMENT, raw)

    async def get_snapshots(self, instrument_ids: Sequence[str]) -> Reply[list[MarketDataSnapshot]]:
        """Market data snapshots (the last quote) of these instruments, by UUID or symbol: at
        most SNAPSHOT_BATCH to a request."""
        params = {"instrument_ids": ",".join(instrument_ids)}
        raw = await self._call("GET", "/v1/market-data/snapshot", params=params)
        return self._parse(_SNAPSHOTS, raw)

    async def get_option_contracts(
        self, contract_ids: Sequence[str]
    ) -> Reply[list[OptionsContract]]:
        """These option contracts (by UUID or OSI symbol, at most CONTRACTS_BATCH): one page,
        since 100 contracts are far below its 1,000. A contract the API does not know is left
        out of the list."""
        if not 1 <= len(contract_ids) <= CONTRACTS_BATCH:
            raise ValueError(f"get_option_contracts takes 1 to {CONTRACTS_BATCH} contract ids")
        params = {"contract_ids": ",".join(contract_ids)}
        raw = await self._call("GET", "/v1/instruments/options/contracts", params=params)
        return self._parse(_CONTRACTS, raw)

    async def get_clock(self) -> Reply[datetime]:
        reply = self._parse(_CLOCK, await self._call("GET", "/v1/clock"))
        return Reply(reply.data.clock, reply.request_id)

    async def get_market_hours(self, date: str | None = None) -> Reply[MarketHours]:
        params = {"market": "us_equities"}
        if date:
            params["date"] = date
        reply = self._parse(
            _MARKET_HOURS, await self._call("GET", "/v1/calendars/market-hours", params=params)
        )
        if not reply.data:
            empty = OutcomeUnknown(
                "market-hours reply is an empty list", request_id=reply.request_id
            )
            raise self._scrub.error(empty)
        return Reply(reply.data[0], reply.request_id)


def _page(page_token: str | None, page_size: int) -> dict[str, str]:
    """A listing's paging parameters: the next page's token, or the first page's size."""
    return {"page_token": page_token} if page_token else {"page_size": str(page_size)}


def _filters(*, since: datetime | None = None, **lists: Sequence[str]) -> dict[str, str]:
    """A listing's filters: each non-empty list comma-separated, `since` as the API's `from`."""
    params = {name: ",".join(values) for name, values in lists.items() if values}
    if since is not None:
        params["from"] = since.isoformat().replace("+00:00", "Z")
    return params
