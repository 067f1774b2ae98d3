"""The API's envelope as the simulator answers it, and a reply that never comes."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web


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
) -> web.Response:
    request_id = str(uuid.uuid4())
    headers = {"x-request-id": request_id}
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
