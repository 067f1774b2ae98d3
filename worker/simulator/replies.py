"""The API's envelope as the simulator answers it, and a reply that never comes."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

_log = logging.getLogger("worker.simulator")


class Dropped(web.Response):
    """Stands for a reply that never went out: the connection was aborted."""


def ok(data: Any, **metadata: Any) -> web.Response:
    request_id = str(uuid.uuid4())
    body = {"data": data, "error": None, "metadata": {"request_id": request_id, **metadata}}
    return web.Response(
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers={"x-request-id": request_id},
    )


def error(
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    request_id = str(uuid.uuid4())
    headers = {**(headers or {}), "x-request-id": request_id}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:.3f}".rstrip("0").rstrip(".")
    problem: dict[str, Any] = {"code": status, "message": message}
    if details is not None:
        problem["details"] = details
    body = {"error": problem, "metadata": {"request_id": request_id}}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def drop(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.abort()
    return Dropped(status=499)


@web.middleware
async def envelope_for_unrouted(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A path the API does not have answers 404, a known path asked with another method 405,
    both inside the envelope (never aiohttp's bare text reply), so a client's error handling
    meets what the API sends."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error(
            405,
            f"Method {request.method} is not allowed on {request.path} (allowed: {allowed})",
            headers={"Allow": allowed},
        )
    except web.HTTPNotFound:
        return error(404, f"No such route: {request.method} {request.path}")


@web.middleware
async def quiet_when_the_client_goes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A client that goes away mid-request (killed, timed out, reset) is normal for an API
    server: one quiet line, never a traceback. The body is read whole first, so a request
    whose body never arrived is neither counted nor applied."""
    try:
        await request.read()
        return await handler(request)
    except ConnectionResetError as exc:
        _log.info("client went away during %s %s (%s)", request.method, request.path, exc)
        return Dropped(status=499)
