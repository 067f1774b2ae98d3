"""The API's envelope: a 2xx body read into typed data, a non-2xx body into the error it is.

Nothing here sends a request; `worker.api.transport` hands the bodies over. An error's message
and excerpt are cut from the body scrubbed whole, so no cut can split a secret in two.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from worker.api.models import Envelope, Order
from worker.errors import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Unauthorized,
)

T = TypeVar("T")
# The replies both order entry and the reads parse (pydantic-core parses the JSON itself).
ORDERS = TypeAdapter(Envelope[list[Order]])
ORDER = TypeAdapter(Envelope[Order])
_EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    data: T
    request_id: str
    next_page_token: str | None = None


def parse_reply(
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


def error_reply(
    what: str,
    status: int,
    raw: bytes,
    scrub: Callable[[bytes], bytes],
    header_request_id: str | None,
    retry_after: float | None,
) -> ApiError:
    """The error a non-2xx reply is: its kind by status, its message, request id and details
    from the envelope (the message and excerpt cut from the body `scrub`bed whole)."""
    envelope = _decode(raw)  # its `details` are data (which order of a batch was refused)
    # What the error says is read from the body scrubbed whole, before any cut of it could
    # split a secret in two.
    shown = scrub(raw)
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
        return RateLimited(message, **kw)
    if status == 401:
        return Unauthorized(message, **kw)
    if status == 403:
        return Forbidden(message, **kw)
    if status == 404:
        return NotFound(message, **kw)
    if status == 409:
        return Conflict(message, **kw)
    # 408 may come from a proxy that already forwarded the request: its fate is not known.
    if 400 <= status < 500 and status != 408:
        return Rejected(message, **kw)
    return OutcomeUnknown(message, **kw)


def _excerpt(raw: bytes) -> str:
    return raw[:_EXCERPT_CHARS].decode("utf-8", "replace")
