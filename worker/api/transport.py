"""One request, sent once: the session, the pace, the lock check before a change, and every
aiohttp, timeout and transport error translated into `worker.errors` here and nowhere else.

It never retries and never decides whether to: that is `worker.api.policy`. It makes sure
aiohttp cannot re-send a request on its own (`open_session`). The endpoints build on it
(`worker.api.order_entry`, `worker.api.listings`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TypeVar

import aiohttp
from pydantic import TypeAdapter

from worker import __version__
from worker.api.envelope import Reply, error_reply, parse_reply
from worker.api.models import Envelope
from worker.api.pace import CHANGE, READ, REPLACE, Pacer
from worker.errors import ApiError, NotSent, OutcomeUnknown, ResendRefused
from worker.inputs.secrets import Scrubber

T = TypeVar("T")
# A reply above this is refused without being read whole: no list the worker asks for comes near
# it (1,000 orders are ~0.8 MB), and a 300 MB body must not cost the run its memory.
MAX_REPLY_BYTES = 8 * 1024 * 1024
_READ_CHUNK = 256 * 1024


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


class Transport:
    """Sends each request once, in a slot of the pacer; the endpoints are its subclasses'
    (`TradingApi`)."""

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

    def _parse(self, adapter: TypeAdapter[Envelope[T]], raw: bytes) -> Reply[T]:
        try:
            return parse_reply(adapter, raw, self._scrub.raw)
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
        raise error_reply(what, status, raw, self._scrub.raw, header_request_id, retry_after)


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


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds. An HTTP-date form is rare here; treat it as absent."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
