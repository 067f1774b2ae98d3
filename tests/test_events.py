"""Events are JSON lines with event, timestamp, level, run_id; secrets never reach the output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from worker import events
from worker.errors import OutcomeUnknown

KEY = "key-id.very-secret-part"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    events.configure(level="debug", fmt="json", secrets=[KEY], stream=out)
    events.bind_run("run-123")
    try:
        yield out
    finally:
        events.unconfigure()
        structlog.contextvars.clear_contextvars()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_the_contract_fields(stream: io.StringIO) -> None:
    events.close_retry(
        account_id=1, instrument="GOOG", attempt=2, reason="429", wait_s=0.5, request_id="r"
    )
    [line] = lines(stream)
    assert line["event"] == "close_retry"
    assert line["run_id"] == "run-123"
    assert line["level"] == "warning"
    assert str(line["timestamp"]).endswith("Z")
    assert line["wait_s"] == 0.5


def test_a_secret_that_slips_into_any_value_is_redacted(stream: io.StringIO) -> None:
    events.log.error(
        "close_failed",
        error=f"Authorization: Bearer {KEY}",
        nested={"headers": [f"Bearer {KEY}"]},
        exc=OutcomeUnknown(f"echoed {KEY}"),
    )
    text = stream.getvalue()
    assert "very-secret-part" not in text
    assert text.count(events.REDACTED) == 3


def test_level_filter_drops_debug_at_info() -> None:
    out = io.StringIO()
    events.configure(level="info", fmt="json", stream=out)
    try:
        events.log.debug("noise")
        events.log.info("signal")
    finally:
        events.unconfigure()
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["signal"]
