"""The HTTP layer never sends a close twice, whatever the connection does (real loopback server)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.support import api_for, envelope, order, serving
from worker.errors import (
    NotSent,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    ResendRefused,
    Unauthorized,
)

CLOSE_PATH = "/v1/accounts/19816/positions/GOOG"


async def test_close_dropped_after_apply_on_kept_alive_connection_is_not_resent() -> None:
    # aiohttp re-sends "idempotent" methods (DELETE) once when a kept-alive connection drops.
    # The server below applies every close it receives, then drops the connection.
    applied: list[str] = []

    async def clock(request: web.Request) -> web.Response:
        return envelope({"clock": "2025-03-01T03:35:00.000000000Z"})

    async def close(request: web.Request) -> web.StreamResponse:
        applied.append(request.path)
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0.05)
        return web.Response()

    app = web.Application()
    app.router.add_get("/v1/clock", clock)
    app.router.add_delete(CLOSE_PATH, close)
    async with serving(app) as base, api_for(base, concurrency=1) as api:
        await api.get_clock()  # leaves a kept-alive connection in the pool for the close to reuse
        with pytest.raises(OutcomeUnknown):
            await api.close_position(19816, "GOOG", cancel_orders=True)
    assert applied == [CLOSE_PATH], "the close must reach the server exactly once"


async def test_session_has_aiohttps_automatic_retry_switched_off() -> None:
    async with api_for("http://127.0.0.1:9") as api:
        assert api._session._retry_connection is False


async def test_connection_refused_is_not_sent() -> None:
    async with api_for("http://127.0.0.1:9") as api:  # discard port: nothing listens
        with pytest.raises(NotSent):
            await api.close_position(19816, "GOOG", cancel_orders=True)


async def test_reply_after_timeout_is_unknown_outcome() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return envelope([order()])

    app = web.Application()
    app.router.add_delete(CLOSE_PATH, slow)
    async with serving(app) as base, api_for(base, request_timeout=0.1) as api:
        with pytest.raises(OutcomeUnknown, match="timeout"):
            await api.close_position(19816, "GOOG", cancel_orders=True)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (429, '{"error":{"code":429,"message":"slow down"},"metadata":{"request_id":"r"}}',
         "application/json", RateLimited),
        (401, '{"error":{"code":401,"message":"bad key"},"metadata":{"request_id":"r"}}',
         "application/json", Unauthorized),
        (422, '{"error":{"code":422,"message":"no"},"metadata":{"request_id":"r"}}',
         "application/json", Rejected),
        (500, '{"error":{"code":500,"message":"boom"},"metadata":{"request_id":"r"}}',
         "application/json", OutcomeUnknown),
        (502, "<html><body>Bad Gateway</body></html>", "text/html", OutcomeUnknown),
        (200, "<html>ok</html>", "text/html", OutcomeUnknown),
        (200, '{"unexpected": true}', "application/json", OutcomeUnknown),
        (200, '{"data":[{"id":1}],"metadata":{"request_id":"r"}}', "application/json",
         OutcomeUnknown),
    ],
)  # fmt: skip
async def test_replies_map_to_what_is_known_of_the_requests_fate(
    status: int, body: str, content_type: str, expected: type[Exception]
) -> None:
    async def reply(request: web.Request) -> web.Response:
        return web.Response(
            status=status, text=body, content_type=content_type, headers={"Retry-After": "2"}
        )

    app = web.Application()
    app.router.add_delete(CLOSE_PATH, reply)
    async with serving(app) as base, api_for(base) as api:
        with pytest.raises(expected) as caught:
            await api.close_position(19816, "GOOG", cancel_orders=True)
    if expected is RateLimited:
        assert caught.value.retry_after == 2.0  # type: ignore[attr-defined]
    assert "test-secret" not in str(caught.value)


async def test_close_sends_cancel_orders_body_and_bearer_key() -> None:
    seen: list[tuple[str | None, str | None, object]] = []

    async def close(request: web.Request) -> web.Response:
        auth, kind = request.headers.get("Authorization"), request.headers.get("Content-Type")
        seen.append((auth, kind, await request.json()))
        return envelope([order()])

    app = web.Application()
    app.router.add_delete(CLOSE_PATH, close)
    async with serving(app) as base, api_for(base) as api:
        reply = await api.close_position(19816, "GOOG", cancel_orders=False)
        await asyncio.gather(
            *(api.close_position(19816, "GOOG", cancel_orders=flag) for flag in (True, False))
        )
    bearer, kind = "Bearer test-key.test-secret", "application/json"
    assert seen[0] == (bearer, kind, {"cancel_orders": False})
    # Two closes at once share nothing: each carries its own flag (in either order).
    assert sorted(seen[1:], key=repr) == [
        (bearer, kind, {"cancel_orders": False}),
        (bearer, kind, {"cancel_orders": True}),
    ]
    assert [o.side for o in reply.data] == ["SELL"]
    assert reply.request_id


async def test_resend_guard_alone_refuses_aiohttps_second_send() -> None:
    # The second layer: even if aiohttp's retry flag came back on (a new release, a changed
    # default), the session middleware refuses the second send before it leaves this host.
    applied: list[str] = []

    async def clock(request: web.Request) -> web.Response:
        return envelope({"clock": "2025-03-01T03:35:00.000000000Z"})

    async def close(request: web.Request) -> web.StreamResponse:
        applied.append(request.path)
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0.05)
        return web.Response()

    app = web.Application()
    app.router.add_get("/v1/clock", clock)
    app.router.add_delete(CLOSE_PATH, close)
    async with serving(app) as base, api_for(base, concurrency=1) as api:
        api._session._retry_connection = True
        await api.get_clock()
        with pytest.raises(ResendRefused):
            await api.close_position(19816, "GOOG", cancel_orders=True)
    assert applied == [CLOSE_PATH]
