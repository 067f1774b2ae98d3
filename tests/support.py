"""Helpers that build real servers on loopback for the tests, and small fakes for waiting."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from worker.api import TradingApi, open_session
from worker.pace import Pacer

API_KEY = "test-key.test-secret"


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yield its base URL."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def api_for(
    base_url: str,
    *,
    concurrency: int = 4,
    rate_limit: float = 0,
    request_timeout: float = 2.0,
    api_key: str = API_KEY,
) -> AsyncIterator[TradingApi]:
    """A TradingApi on a plain ClientSession (not aiohttp's test client), as in production."""
    async with open_session(concurrency, request_timeout, api_key) as session:
        yield TradingApi(session, base_url, Pacer(concurrency, rate_limit))


def envelope(data: Any, **metadata: Any) -> web.Response:
    body = {"data": data, "error": None, "metadata": {"request_id": str(uuid.uuid4()), **metadata}}
    return web.json_response(body)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": status, "message": message}, "metadata": {"request_id": "rid-err"}}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def order(side: str = "SELL", quantity: str = "25", status: str = "PENDING_NEW") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "client_order_id": "close-1",
        "account_id": 19816,
        "venue": "XNMS",
        "side": side,
        "quantity": quantity,
        "order_type": "MARKET",
        "time_in_force": "DAY",
        "status": status,
        "filled_quantity": "0",
        "leaves_quantity": quantity,
        "created_at": "2025-10-03T14:01:15.000000000Z",
        "updated_at": "2025-10-03T14:01:15.000000000Z",
        "symbol": "GOOG",
        "instrument_id": "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa",
    }


@dataclass
class RecordedSleeps:
    """An injected sleep: records each wait and returns at once, so tests never wait."""

    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
