"""How to talk to the Clear Street Trading API: URLs, headers, the envelope, status codes.

Returns typed replies or raises the errors of `worker.errors`; aiohttp, timeout and JSON errors are
translated here and nowhere else. It never retries and never decides whether to: that is
`worker.api.policy`. It makes sure aiohttp cannot re-send a request on its own (`open_session`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import TypeAdapter, ValidationError

from worker import __version__, jsonbytes
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
from worker.api.pace import CHANGE, READ, REPLACE, Pacer
from worker.errors import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    ResendRefused,
    Unauthorized,
)
from worker.inputs.secrets import Scrubber

T = TypeVar("T")
Side = Literal["BUY", "SELL"]
TimeInForce = Literal["DAY", "AT_THE_CLOSE", "IMMEDIATE_OR_CANCEL"]
OrderType = Literal["MARKET", "LIMIT"]

# One pass from bytes to typed data (pydantic-core parses the JSON itself).
_ORDERS = TypeAdapter(Envelope[list[Order]])
_ORDER = TypeAdapter(Envelope[Order])
_POSITIONS = TypeAdapter(Envelope[list[Position]])
_EXECUTIONS = TypeAdapter(Envelope[list[Execution]])
_MARKET_HOURS = TypeAdapter(Envelope[list[MarketHours]])
_CLOCK = TypeAdapter(Envelope[Clock])
_INSTRUMENT = TypeAdapter(Envelope[Instrument])
_SNAPSHOTS = TypeAdapter(Envelope[list[MarketDataSnapshot]])
_CONTRACTS = TypeAdapter(Envelope[list[OptionsContract]])
_EXCERPT_CHARS = 200
# A reply above this is refused without being read whole: no list the worker asks for comes near
# it (1,000 orders are ~0.8 MB), and a 300 MB body must not cost the run its memory.
MAX_REPLY_BYTES = 8 * 1024 * 1024
# Ids in one request's filter (instrument_ids, order_ids, the instruments a cancel names): the
# spec names no maximum; 100 UUIDs keep the query string near 4 kB.
IDS_PER_REQUEST = 100
SNAPSHOT_BATCH = IDS_PER_REQUEST  # instruments per market-data snapshot request
# Contracts per `get_option_contracts` request: the spec's maximum for `contract_ids`.
CONTRACTS_BATCH = 100
_READ_CHUNK = 256 * 1024
# A close's body is one of two documents. aiohttp's BytesPayload is immutable and reusable, so
# each is built once instead of JSON-encoded on every close (~15 us of CPU a close).
_CLOSE_BODY = {
    flag: aiohttp.BytesPayload(
        json.dumps({"cancel_orders": flag}).encode(), content_type="application/json"
    )
    for flag in (False, True)
}


@dataclass(frozen=True, slots=True)
class NewOrder:
    """One order of a batch (`submit_orders`): MARKET, or LIMIT (CLOSE_STYLE=protected)."""

    client_id: str
    instrument_id: str
    side: Side
    quantity: Decimal  # positive
    limit_price: Decimal | None = None  # a LIMIT order at this price; None: MARKET
    time_in_force: TimeInForce | None = None  # None: the batch's

    def as_body(self, time_in_force: TimeInForce) -> dict[str, str]:
        body = {
            "id": self.client_id,
            "instrument_id": self.instrument_id,
            "side": self.side,
            "quantity": _decimal_text(self.quantity),
            "order_type": "MARKET" if self.limit_price is None else "LIMIT",
            "time_in_force": self.time_in_force or time_in_force,
        }
        if self.limit_price is not None:
            body["limit_price"] = _price_text(self.limit_price)
        return body


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    data: T
    request_id: str
    next_page_token: str | None = None


# Counts the sends of the logical request being made in this task. aiohttp re-sends an
# "idempotent" method (DELETE is one) once when a kept-alive connection drops; for a close that
# would be a second market order. The middleware below refuses any second send.
_sends_of_this_request: ContextVar[list[int] | None] = ContextVar("sends", default=None)


async def _refuse_resend(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    sends = _sends_of_this_request.get()
    if sends is not None:
        sends[0] += 1
        if sends[0] > 1:
            raise ResendRefused(f"refused a second send of {request.method} {request.url.path}")
    return await handler(request)


def open_session(
    concurrency: int, request_timeout: float, api_key: str = ""
) -> aiohttp.ClientSession:
    """One session per run, its pool sized to the concurrency, that never re-sends by itself."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    session = aiohttp.ClientSession(
        connector=connector,
        # Set once here rather than merged into every request: the fan-out's hot path.
        headers={
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"liquidator/{__version__}",
        },
        timeout=aiohttp.ClientTimeout(total=request_timeout),
        middlewares=(_refuse_resend,),
        raise_for_status=False,
    )
    # aiohttp's own test client turns its automatic retry off the same way; there is no public
    # switch. If a release renames the flag, fail loudly rather than run with it on.
    if not hasattr(session, "_retry_connection"):
        raise RuntimeError("this aiohttp has no _retry_connection flag; check its re-send rules")
    session._retry_connection = False
    return session


class TradingApi:
    """The endpoints the worker uses. Every request takes a slot from the pacer."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        pacer: Pacer,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`session` comes from `open_session`, which carries the key and disables re-sends.

        `before_send`: awaited right before every request that changes something (not GETs),
        once it has its slot and its pace; it raises to keep the request from going out (the
        journal's lock check, `Journal.still_locked`).
        """
        self._session = session
        self._base = base_url.rstrip("/")
        self._pacer = pacer
        self._before_send = before_send
        # A server may echo the key back (in a message, a page, a header). A reply is parsed as
        # received: its ids and client ids are data the worker acts on, and a short secret can
        # occur inside one. Only the errors raised here are scrubbed; every other exit
        # (events, the report, the journal's texts, the terminal) scrubs what it writes.
        bearer = session.headers.get("Authorization", "")
        self._scrub = Scrubber.for_key(bearer.removeprefix("Bearer "))

    async def close_position(
        self,
        account_id: int,
        instrument_id: str,
        *,
        cancel_orders: bool,
        unless: asyncio.Event | None = None,
    ) -> Reply[list[Order]]:
        """DELETE one position. Not idempotent: the caller must know what a failure means.

        If `unless` is set by the time a request slot is free, nothing is sent (`NotSent`).
        """
        raw = await self._call(
            "DELETE",
            f"/v1/accounts/{account_id}/positions/{instrument_id}",
            body=_CLOSE_BODY[cancel_orders],
            unless=unless,
        )
        return self._parse(_ORDERS, raw)

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
        return self._parse(_ORDERS, raw)

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

    async def submit_order(
        self,
        account_id: int,
        *,
        client_id: str,
        instrument_id: str,
        side: Side,
        quantity: Decimal,
        time_in_force: TimeInForce = "DAY",
        unless: asyncio.Event | None = None,
        limit_price: Decimal | None = None,
    ) -> Reply[Order]:
        """POST one order under the client `id` (submit_orders): MARKET, or LIMIT at
        `limit_price` when one is given.

        The server keeps client ids unique per account, so sending the same `client_id` again
        cannot create a second order: a 409 (`Conflict`) says one with that id already exists.
        If `unless` is set by the time a request slot is free, nothing is sent (`NotSent`).
        """
        if quantity <= 0:
            raise ValueError(f"an order's quantity must be positive, not {quantity}")
        order = NewOrder(client_id, instrument_id, side, quantity, limit_price).as_body(
            time_in_force
        )
        body = aiohttp.BytesPayload(jsonbytes.dumps([order]), content_type="application/json")
        raw = await self._call(
            "POST", f"/v1/accounts/{account_id}/orders", body=body, unless=unless
        )
        reply = self._parse(_ORDERS, raw)
        if len(reply.data) != 1:
            # A 200 that does not show the one order sent: whether it exists is not known.
            raise self._scrub.error(
                OutcomeUnknown(
                    f"POST /v1/accounts/{account_id}/orders: reply lists {len(reply.data)} orders",
                    status=200,
                    request_id=reply.request_id,
                )
            )
        return Reply(reply.data[0], reply.request_id)

    async def submit_orders(
        self,
        account_id: int,
        orders: Sequence[NewOrder],
        *,
        time_in_force: TimeInForce = "DAY",
        unless: asyncio.Event | None = None,
    ) -> Reply[list[Order]]:
        """POST orders in one request, each under its own client `id` (a batch).

        The reply is returned as the server gave it: the spec says nothing about a batch's
        limits or atomicity, so what a short or mixed reply means is decided by the caller
        (`worker.closing.batch`). If `unless` is set by the time a request slot is free,
        nothing is sent (`NotSent`).
        """
        if not orders:
            raise ValueError("a batch needs at least one order")
        body = [o.as_body(time_in_force) for o in orders]
        for o in orders:
            if o.quantity <= 0:
                raise ValueError(f"an order's quantity must be positive, not {o.quantity}")
        payload = aiohttp.BytesPayload(jsonbytes.dumps(body), content_type="application/json")
        raw = await self._call(
            "POST", f"/v1/accounts/{account_id}/orders", body=payload, unless=unless
        )
        return self._parse(_ORDERS, raw)

    async def cancel_open_orders(
        self, account_id: int, instrument_ids: Sequence[str]
    ) -> Reply[list[Order]]:
        """DELETE the open orders on these instruments (cancel_all_open_orders).

        The reply lists the orders whose cancellation was requested (typically PENDING_CANCEL):
        they may still fill until the server says CANCELED. The server answers 404
        (`NotFound`) when no open order matches. Never call it without instruments: that
        would cancel every open order of the account.
        """
        if not instrument_ids:
            raise ValueError("cancel_open_orders needs at least one instrument")
        params = {"instrument_ids": ",".join(instrument_ids)}
        raw = await self._call("DELETE", f"/v1/accounts/{account_id}/orders", params=params)
        return self._parse(_ORDERS, raw)

    async def cancel_open_order(self, account_id: int, order_id: str) -> Reply[Order]:
        """DELETE one open order, named by its `id` or its client id (cancel_open_order)."""
        raw = await self._call("DELETE", f"/v1/accounts/{account_id}/orders/{order_id}")
        return self._parse(_ORDER, raw)

    async def replace_order(
        self, account_id: int, order_id: str, *, limit_price: Decimal
    ) -> Reply[Order]:
        """PATCH an open order's limit price (replace_order, ReplaceOrderRequest). The order
        keeps its id and client id: a replace never creates an order. 400/404: it is no longer
        open (or never was)."""
        body = aiohttp.BytesPayload(
            jsonbytes.dumps({"limit_price": _price_text(limit_price)}),
            content_type="application/json",
        )
        path = f"/v1/accounts/{account_id}/orders/{quote(order_id, safe='')}"
        return self._parse(_ORDER, await self._call("PATCH", path, body=body))

    async def get_order(self, account_id: int, order_id: str) -> Reply[Order]:
        """One order (get_order_by_id), named by its `id` whatever its status, or by its client
        id while it is open. Current even when the orders listing lags; `NotFound` (404): no
        such order, or, by client id, none open under it."""
        path = f"/v1/accounts/{account_id}/orders/{quote(order_id, safe='')}"
        return self._parse(_ORDER, await self._call("GET", path))

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

    def _parse(self, adapter: TypeAdapter[Envelope[T]], raw: bytes) -> Reply[T]:
        try:
            return _parse(adapter, raw, self._scrub.raw)
        except ApiError as err:
            raise self._scrub.error(err) from None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: aiohttp.BytesPayload | None = None,
        unless: asyncio.Event | None = None,
    ) -> bytes:
        """Send one request, once. Return the body of a 2xx reply; raise for anything else."""
        token = _sends_of_this_request.set([0])
        try:
            async with self._pacer.slot(_PRIORITY[method]):
                # Waiting for a slot can take a while; the caller may have stopped meanwhile.
                if unless is not None and unless.is_set():
                    raise NotSent(f"{method} {path}: not sent, stopped while waiting to send")
                if self._before_send is not None and method != "GET":
                    await self._before_send()  # e.g. the run still holds the journal's lock
                    # The check can take a while (a database round trip, a reconnect): a stop
                    # that came meanwhile must still keep the request from going out.
                    if unless is not None and unless.is_set():
                        raise NotSent(f"{method} {path}: not sent, stopped while checking the lock")
                return await self._send(method, path, params, body)
        except ApiError as err:
            # The exception is an exit: also what aiohttp said about a malformed reply.
            self._scrub.error(err)
            raise
        finally:
            _sends_of_this_request.reset(token)

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: aiohttp.BytesPayload | None,
    ) -> bytes:
        what = f"{method} {path}"
        try:
            async with self._session.request(
                method, self._base + path, params=params, data=body
            ) as resp:
                raw = await _read_capped(resp, what)
                status = resp.status
                header_request_id = resp.headers.get("x-request-id")
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except ApiError:
            raise
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Raised while connecting: the request never reached the server.
            raise NotSent(f"{what}: could not connect: {_describe(exc)}") from None
        except TimeoutError:
            raise OutcomeUnknown(f"{what}: no reply within the request timeout") from None
        except aiohttp.ClientError as exc:
            raise OutcomeUnknown(
                f"{what}: connection failed mid-request: {_describe(exc)}"
            ) from None

        if 200 <= status < 300:
            return raw  # parsed by the caller against the shape it expects
        envelope = _decode(raw)  # its `details` are data (which order of a batch was refused)
        # What the error says is read from the body scrubbed whole, before any cut of it could
        # split a secret in two.
        shown = self._scrub.raw(raw)
        request_id = _envelope_request_id(envelope) or header_request_id
        message = f"{what}: {_error_message(_decode(shown), status)}"
        kw: dict[str, Any] = {
            "status": status,
            "request_id": request_id,
            "excerpt": None if envelope else _excerpt(shown),
            "retry_after": retry_after,
            "details": _error_details(envelope),
        }
        if status == 429:
            raise RateLimited(message, **kw)
        if status == 401:
            raise Unauthorized(message, **kw)
        if status == 403:
            raise Forbidden(message, **kw)
        if status == 404:
            raise NotFound(message, **kw)
        if status == 409:
            raise Conflict(message, **kw)
        # 408 may come from a proxy that already forwarded the request: its fate is not known.
        if 400 <= status < 500 and status != 408:
            raise Rejected(message, **kw)
        raise OutcomeUnknown(message, **kw)


# Changes before reads when requests queue for the pace: a deadline's cancels and rests, and
# order entry, must not wait behind following's polls.
_PRIORITY = {"POST": CHANGE, "DELETE": CHANGE, "PATCH": REPLACE, "GET": READ}


async def _read_capped(resp: aiohttp.ClientResponse, what: str) -> bytes:
    """The whole body, or `OutcomeUnknown` as soon as it proves larger than MAX_REPLY_BYTES."""
    if resp.content_length is not None and resp.content_length > MAX_REPLY_BYTES:
        raise _too_big(resp, what)
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(_READ_CHUNK):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise _too_big(resp, what)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_big(resp: aiohttp.ClientResponse, what: str) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"{what}: reply larger than {MAX_REPLY_BYTES} bytes, refused unread",
        status=resp.status,
        request_id=resp.headers.get("x-request-id"),
    )


def _parse(
    adapter: TypeAdapter[Envelope[T]], raw: bytes, scrub: Callable[[bytes], bytes]
) -> Reply[T]:
    """A 2xx body, as received, as the spec's envelope of T; anything else is an unknown outcome
    (its excerpt cut from the body `scrub`bed whole)."""
    try:
        envelope = adapter.validate_json(raw)
    except RecursionError:  # nested deeper than any parser should follow
        raise OutcomeUnknown(
            "reply is nested too deeply to decode", status=200, excerpt=_excerpt(scrub(raw))
        ) from None
    except ValidationError as exc:
        decoded = _decode(raw)
        request_id = _envelope_request_id(decoded)
        if decoded is None or "data" not in decoded or request_id is None:
            why = "reply is not the API envelope"
        else:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            why = f"reply does not match the spec at {where}: {first['msg']}"
        raise OutcomeUnknown(
            why, status=200, request_id=request_id, excerpt=_excerpt(scrub(raw))
        ) from None
    meta = envelope.metadata
    return Reply(envelope.data, meta.request_id, meta.next_page_token or None)


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _envelope_request_id(envelope: Mapping[str, Any] | None) -> str | None:
    if envelope is None:
        return None
    metadata = envelope.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("request_id"), str):
        return str(metadata["request_id"])
    return None


def _error_message(envelope: Mapping[str, Any] | None, status: int) -> str:
    error = envelope.get("error") if envelope else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return f"HTTP {status}: {error['message'][:_EXCERPT_CHARS]}{_error_reasons(error)}"
    return f"HTTP {status}"


def _error_reasons(error: Mapping[str, Any]) -> str:
    """The server's reasons from `error.details` (a risk check's, e.g.), as ' (a; b)'."""
    details = error.get("details")
    if not isinstance(details, list):
        return ""
    reasons = [
        d["description"][:_EXCERPT_CHARS]
        for d in details[:5]
        if isinstance(d, dict) and isinstance(d.get("description"), str)
    ]
    return f" ({'; '.join(reasons)})" if reasons else ""


def _error_details(envelope: Mapping[str, Any] | None) -> list[dict[str, object]]:
    error = envelope.get("error") if envelope else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return []
    return [d for d in details[:1000] if isinstance(d, dict)]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds. An HTTP-date form is rare here; treat it as absent."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def _page(page_token: str | None, page_size: int) -> dict[str, str]:
    """A listing's paging parameters: the next page's token, or the first page's size."""
    return {"page_token": page_token} if page_token else {"page_size": str(page_size)}


def _filters(*, since: datetime | None = None, **lists: Sequence[str]) -> dict[str, str]:
    """A listing's filters: each non-empty list comma-separated, `since` as the API's `from`."""
    params = {name: ",".join(values) for name, values in lists.items() if values}
    if since is not None:
        params["from"] = since.isoformat().replace("+00:00", "Z")
    return params


def _price_text(value: Decimal) -> str:
    """A limit price as the API spells it: "99.95", "0.5007", never "9.995E+1"."""
    return format(value, "f")


def _decimal_text(value: Decimal) -> str:
    """A quantity as the API spells it: "25", "0.5", never "2.5E+1"."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _excerpt(raw: bytes) -> str:
    return raw[:_EXCERPT_CHARS].decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
