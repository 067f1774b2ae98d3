"""Error replies against the spec: the envelope its examples show, `error` an ApiError."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from tests.spec_validation import SPEC, load_spec
from worker.simulator import RecordedRequest


@functools.cache
def _error_envelope_validator() -> Any:
    from openapi_schema_validator import OAS31Validator

    if not SPEC.exists():
        load_spec(SPEC, os.environ)  # skips (fails in CI), saying where the spec comes from
    components = json.loads(SPEC.read_text(encoding="utf-8"))["components"]
    schema = {
        "type": "object",
        "required": ["error", "metadata"],
        "properties": {
            "error": {"$ref": "#/components/schemas/ApiError"},
            "metadata": {"$ref": "#/components/schemas/ResponseMetadata"},
        },
        "components": components,
    }
    return OAS31Validator(schema)


def validate_error_reply(recorded: RecordedRequest) -> None:
    """An error reply: the envelope every example of the spec shows, `error` an ApiError.

    (The spec's error responses name ApiError as the whole body, while every example, and the
    API, wrap it: {"error": {"code", "message", "details"?}, "metadata": {"request_id"}}.)
    """
    body = json.loads(recorded.response_body)
    try:
        _error_envelope_validator().validate(body)
    except Exception as exc:
        raise AssertionError(
            f"error reply {recorded.response_status} to {recorded.method} {recorded.path}"
            f" is not the spec's error envelope: {exc}: {recorded.response_body[:300]!r}"
        ) from exc
    assert body["error"]["code"] == recorded.response_status, body
