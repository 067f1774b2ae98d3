"""Events are JSON lines with event, timestamp, level, run_id; secrets never reach the output."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

import pytest
import structlog

from tests.support import events_emitted
from worker.api.models import Order
from worker.errors import OutcomeUnknown
from worker.inputs.targets import TargetSpec
from worker.observe import events, writer
from worker.observe.events import sink
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import Faults, Simulator

KEY = "key-id.very-secret-part"


class Output:
    """Where events go: a text-only stream, or one with a binary buffer like stdout."""

    def __init__(self, binary: bool) -> None:
        self._bytes = io.BytesIO()
        self.stream: TextIO = io.TextIOWrapper(self._bytes) if binary else io.StringIO()

    def getvalue(self) -> str:
        if isinstance(self.stream, io.StringIO):
            return self.stream.getvalue()
        self.stream.flush()
        return self._bytes.getvalue().decode()


@pytest.fixture(params=["text", "binary"])
def stream(request: pytest.FixtureRequest) -> Iterator[Output]:
    out = Output(binary=request.param == "binary")
    writer.configure(level="debug", fmt="json", secrets=[KEY], stream=out.stream)
    events.bind_run("run-123")
    try:
        yield out
    finally:
        writer.unconfigure()
        structlog.contextvars.clear_contextvars()


def strings_in(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def lines(stream: Output) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_the_contract_fields(stream: Output) -> None:
    events.close_retry(
        account_id=1, instrument="GOOG", attempt=2, reason="429", wait_s=0.5, request_id="r"
    )
    [line] = lines(stream)
    assert line["event"] == "close_retry"
    assert line["run_id"] == "run-123"
    assert line["level"] == "warning"
    assert str(line["timestamp"]).endswith("Z")
    assert line["wait_s"] == 0.5


def test_a_secret_that_slips_into_any_value_is_redacted(stream: Output) -> None:
    sink.log.error(
        "close_failed",
        error=f"Authorization: Bearer {KEY}",
        nested={"headers": [f"Bearer {KEY}"]},
        exc=OutcomeUnknown(f"echoed {KEY}"),
    )
    text = stream.getvalue()
    assert "very-secret-part" not in text
    assert text.count(writer.REDACTED) == 3


@pytest.mark.parametrize("fmt", ["json-text", "json-binary", "console"])
def test_a_secret_with_quotes_backslashes_and_accents_is_redacted_in_every_form(fmt: str) -> None:
    secret = "k\\e\"y'.sé\x1f"
    out = Output(binary=fmt == "json-binary")
    writer.configure(
        level="debug",
        fmt="console" if fmt == "console" else "json",
        secrets=[secret],
        stream=out.stream,
    )
    try:
        sink.log.error(
            "close_failed",
            error=f"Bearer {secret}",
            nested={"headers": [f"Bearer {secret}"]},
            exc=ValueError(f"echoed {secret}"),
        )
    finally:
        writer.unconfigure()
    text = out.getvalue()
    if fmt != "console":  # what a reader of the JSON gets back, escapes undone
        text = "\n".join(strings_in(json.loads(text)))
    for spelled in (secret, repr(secret)[1:-1], "sé"):
        assert spelled not in text
    assert text.count(writer.REDACTED) == 3


def an_order(**fields: Any) -> Order:
    return Order.model_validate(
        {
            "id": "ord-1",
            "client_order_id": "",
            "account_id": 7,
            "side": "SELL",
            "quantity": "10",
            "order_type": "MARKET",
            "status": "NEW",
            "filled_quantity": "0",
            "created_at": "2026-11-25T20:00:00Z",
            "symbol": "GOOG",
            "instrument_id": "inst-1",
            **fields,
        }
    )


def test_close_order_on_its_fast_path_is_the_pipelines_line_key_for_key() -> None:
    out = Output(binary=True)  # stdout's form: the only one with the fast path
    writer.configure(level="info", fmt="json", secrets=[KEY], stream=out.stream)
    events.bind_run("run-123")
    echoed = an_order(symbol=f"echo {KEY}", time_in_force="DAY")  # a server that echoes
    try:
        assert sink._info_lines is not None
        with events.bound_target(7, "GOOG"):
            events.close_order(echoed, instrument_id="inst-1", request_id="r", attempt=1)
            fast = sink._info_lines
            sink._info_lines = None  # the same event through structlog's pipeline
            events.close_order(echoed, instrument_id="inst-1", request_id="r", attempt=1)
            sink._info_lines = fast
        events.close_order(
            an_order(), instrument_id="inst-1", request_id="r", attempt=2, account_id=8
        )
    finally:
        writer.unconfigure()
        structlog.contextvars.clear_contextvars()
    fast_line, pipeline_line, unbound = lines(out)
    assert list(fast_line) == list(pipeline_line)  # the same keys, in the same order
    assert {**fast_line, "timestamp": 0} == {**pipeline_line, "timestamp": 0}
    assert fast_line["symbol"] == f"echo {writer.REDACTED}"
    assert str(fast_line["timestamp"]).endswith("Z")
    assert (fast_line["run_id"], fast_line["account_id"], fast_line["instrument"]) == (
        "run-123",
        7,
        "GOOG",
    )
    assert (unbound["account_id"], unbound["attempt"], unbound["level"]) == (8, 2, "info")
    assert "instrument" not in unbound


def test_close_order_respects_the_level_on_its_fast_path() -> None:
    out = Output(binary=True)
    writer.configure(level="warning", fmt="json", stream=out.stream)
    try:
        events.close_order(an_order(), instrument_id="inst-1", request_id="r", attempt=1)
        events.close_retry(
            account_id=1, instrument="GOOG", attempt=2, reason="429", wait_s=0.5, request_id="r"
        )
    finally:
        writer.unconfigure()
    assert [line["event"] for line in lines(out)] == ["close_retry"]


def test_a_lone_surrogate_from_a_server_message_still_makes_a_json_line(stream: Output) -> None:
    message = json.loads('"order rejected \\ud800 halted"')  # what json.loads makes of it
    events.close_failed(
        account_id=1, instrument="GOOG", status=422, error=message, request_id="r", attempts=1
    )
    [line] = lines(stream)
    assert line["error"] == message


def test_a_secret_with_a_single_quote_is_redacted_inside_a_repr_that_has_both() -> None:
    secret = "key'secret"
    out = Output(binary=True)
    writer.configure(level="debug", fmt="json", secrets=[secret], stream=out.stream)
    try:
        # repr of this text uses single quotes, so the secret is written key\'secret
        sink.log.error("close_failed", exc=ValueError(f'say "{secret}"'))
    finally:
        writer.unconfigure()
    text = "\n".join(strings_in(json.loads(out.getvalue())))
    assert "secret" not in text
    assert writer.REDACTED in text


def test_level_filter_drops_debug_at_info() -> None:
    out = io.StringIO()
    writer.configure(level="info", fmt="json", stream=out)
    try:
        sink.log.debug("noise")
        sink.log.info("signal")
    finally:
        writer.unconfigure()
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["signal"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_secret_part_alone_and_the_bearer_header_are_redacted(
    fmt: Literal["json", "console"],
) -> None:
    out = Output(binary=True)
    writer.configure(fmt=fmt, secrets=[KEY], stream=out.stream)
    try:
        sink.log.error("x", a=KEY.split(".")[1], b=f"Bearer {KEY}", c=repr(KEY.split(".")[1]))
    finally:
        writer.unconfigure()
    text = out.getvalue()
    assert "very-secret-part" not in text
    assert text.count("[REDACTED]") == 3


async def test_events_during_a_close_carry_its_target_and_following_inherits_none(
    sim: Simulator, settings_for: Any
) -> None:
    # Each close is applied and its reply dropped; the look after it reads orders, which
    # answer 503: one read retry inside each close, emitted with no target passed by hand.
    sim.add_account(19816)
    for symbol in ("GOOG", "MSFT"):
        sim.add_position(19816, symbol, "25")
    sim.config.faults = {
        "close": Faults(p_drop_after=1.0),
        "orders": Faults(p_503=1.0, retry_after_s=0.001),
    }
    with events_emitted() as emitted:
        result = await run(
            settings_for(sim, max_attempts=2),
            RunRequest(specs=[TargetSpec(19816, "GOOG"), TargetSpec(19816, "MSFT")]),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.FAILED  # the closes' fate could not be read
    assert sim.stats.by_route["close"] == 2  # and nothing was sent again
    retries = [e for e in emitted if e["event"] == events.READ_RETRY]
    in_a_close = sorted((e["account_id"], e["instrument"]) for e in retries if "instrument" in e)
    assert in_a_close == [(19816, "GOOG"), (19816, "MSFT")]
    # The snapshot before the fan-out and the follower's reads belong to no one target.
    assert len(retries) > len(in_a_close)
    assert all("account_id" not in e for e in retries if "instrument" not in e)


def test_every_event_is_built_in_events_py() -> None:
    """Only the event list (the package `observe/events/`) emits; the writer installs the
    logger it emits through."""
    root = Path(events.__file__).parents[2]  # worker/
    elsewhere = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.py"))
        if not path.relative_to(root).as_posix().startswith("observe/events/")
        and path.relative_to(root).as_posix() != "observe/writer.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "events.log" in line or "sink.log" in line or "structlog.get_logger" in line
    ]
    assert elsewhere == []


def test_the_command_starts_without_rich_in_structlog_and_the_terminal_still_has_rich() -> None:
    """structlog would import rich for a traceback default the worker does not use (~30 ms of
    every start); the command hides it from that import only."""
    code = (
        "import sys, worker.__main__, structlog.dev\n"
        "print('rich' in sys.modules, structlog.dev.rich is None)\n"
        "import rich.console\n"
        "print('rich' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert done.stdout.split() == ["False", "True", "True"]


def test_the_console_form_writes_a_plain_traceback(tmp_path: Path) -> None:
    """The console renderer's traceback format is named, not left to what structlog found."""
    out = io.StringIO()
    writer.configure(fmt="console", stream=out)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            sink.log.error("internal_error", exc_info=True)
    finally:
        writer.unconfigure()
    text = out.getvalue()
    assert "Traceback (most recent call last):" in text
    assert "ValueError: boom" in text
    assert "╭" not in text  # (rich draws its tracebacks in a box)


def _readme_row(event: str) -> str:
    """The event's row in docs/events.md, where every event's fields are listed."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    [row] = [line for line in doc.splitlines() if line.startswith(f"| `{event}` |")]
    return row


async def test_the_cancel_events_carry_the_fields_the_readme_names(
    sim: Simulator, settings_for: Any
) -> None:
    sim.add_account(19816)
    sim.add_position(19816, "GOOG", "10")
    sim.add_position(19816, "AAPL", "5")
    sim.add_resting_order(19816, "GOOG", "SELL", "10", "999.00")
    with events_emitted() as emitted:
        result = await run(
            settings_for(sim, close_via="submit_orders", follow_pause=0.02, flat_timeout=3),
            RunRequest(specs=[TargetSpec(19816, None)]),
            asyncio.Event(),
        )
    assert result.exit_code == ExitCode.OK
    common = {"event", "log_level", "run_id"}
    [requested] = [e for e in emitted if e["event"] == events.CANCEL_REQUESTED]
    # One cancel per account (in chunks): `instruments` counts the instruments it named.
    assert set(requested) - common == {"account_id", "instruments", "orders", "request_id"}
    assert (requested["instruments"], requested["orders"]) == (2, 1)
    [canceled] = [e for e in emitted if e["event"] == events.ORDERS_CANCELED]
    assert set(canceled) - common == {"account_id", "seconds", "polls"}
    for event, entry in ((events.CANCEL_REQUESTED, requested), (events.ORDERS_CANCELED, canceled)):
        row = _readme_row(event)
        for key in set(entry) - common:
            assert f"`{key}`" in row, (key, row)
        assert "`instrument`" not in row, row


def test_target_cost_on_its_fast_path_is_the_pipelines_line_key_for_key() -> None:
    out = Output(binary=True)
    writer.configure(level="info", fmt="json", secrets=[KEY], stream=out.stream)
    events.bind_run("run-123")
    prices = {"arrival_bid": "1.5", "cost": "0.00", "price_note": f"echo {KEY}"}
    try:
        assert sink._info_lines is not None
        events.target_cost(outcome="closed", prices=prices, account_id=7, instrument="GOOG")
        fast = sink._info_lines
        sink._info_lines = None  # the same event through structlog's pipeline
        events.target_cost(outcome="closed", prices=prices, account_id=7, instrument="GOOG")
        sink._info_lines = fast
    finally:
        writer.unconfigure()
        structlog.contextvars.clear_contextvars()
    fast_line, pipeline_line = lines(out)
    assert list(fast_line) == list(pipeline_line)  # the same keys, in the same order
    assert {**fast_line, "timestamp": 0} == {**pipeline_line, "timestamp": 0}
    assert fast_line["event"] == "target_cost"
    assert fast_line["price_note"] == f"echo {writer.REDACTED}"
    assert (fast_line["run_id"], fast_line["account_id"], fast_line["level"]) == (
        "run-123",
        7,
        "info",
    )


def test_capture_logs_sees_the_fast_path_events_and_the_stream_gets_none_of_them() -> None:
    """A configured writer (stdout's form, the fast path on): structlog's `capture_logs`, as a
    test uses it, sees `close_order` and `target_cost` like every other event; after it the
    fast path writes them again."""
    out = Output(binary=True)
    writer.configure(level="info", fmt="json", stream=out.stream)
    prices = {"arrival_bid": "1.5", "cost": "0.00"}
    try:
        assert sink._info_lines is not None
        with structlog.testing.capture_logs() as captured:
            events.close_order(an_order(), instrument_id="inst-1", request_id="r", attempt=1)
            events.target_cost(outcome="closed", prices=prices, account_id=7, instrument="GOOG")
        events.close_order(an_order(id="after"), instrument_id="i", request_id="r", attempt=1)
    finally:
        writer.unconfigure()
    assert [(e["event"], e["log_level"]) for e in captured] == [
        ("close_order", "info"),
        ("target_cost", "info"),
    ]
    assert captured[0]["order_id"] == an_order().id
    assert (captured[1]["account_id"], captured[1]["cost"]) == (7, "0.00")
    assert [(e["event"], e["order_id"]) for e in lines(out)] == [("close_order", "after")]


class Writes(io.RawIOBase):
    """A file that keeps each write it is given, as the system calls a real file would take."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.calls.append(bytes(data))
        return len(data)


@pytest.mark.parametrize("buffer_size", [1, 1 << 16])  # 1: as stdout under PYTHONUNBUFFERED
async def test_a_rounds_fast_lines_go_out_in_one_write_in_order_with_the_pipelines(
    buffer_size: int,
) -> None:
    raw = Writes()
    out = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=buffer_size))
    writer.configure(level="info", fmt="json", stream=out)
    try:
        for n in range(5):
            events.close_order(
                an_order(id=f"ord-{n}"), instrument_id="i", request_id="r", attempt=1
            )
        assert raw.calls == []  # held until the loop's round is done
        await asyncio.sleep(0)
        assert len(raw.calls) == 1
        events.close_order(an_order(id="ord-5"), instrument_id="i", request_id="r", attempt=1)
        events.close_retry(  # the pipeline's line flushes at once, the held one before it
            account_id=1, instrument="GOOG", attempt=2, reason="429", wait_s=0.5, request_id="r"
        )
        assert len(raw.calls) == 2
        events.close_order(an_order(id="ord-6"), instrument_id="i", request_id="r", attempt=1)
    finally:
        writer.unconfigure()  # writes out what is held
    written = [json.loads(line) for line in b"".join(raw.calls).splitlines()]
    assert [(e["event"], e.get("order_id")) for e in written] == [
        *[("close_order", f"ord-{n}") for n in range(6)],
        ("close_retry", None),
        ("close_order", "ord-6"),
    ]


def test_a_line_held_when_its_loop_stopped_still_goes_out_at_exit() -> None:
    code = (
        "import asyncio\n"
        "from tests.observe.test_events import an_order\n"
        "from worker.observe import events, writer\n"
        "writer.configure(level='info', fmt='json')\n"
        "loop = asyncio.new_event_loop()\n"
        "order = an_order()\n"
        "emit = lambda: events.close_order(order, instrument_id='i', request_id='r', attempt=1)\n"
        "loop.call_soon(emit)\n"
        "loop.call_soon(loop.stop)  # the round ends, and the loop with it\n"
        "loop.run_forever()\n"
        "loop.close()\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    [line] = [json.loads(text) for text in done.stdout.splitlines()]
    assert (line["event"], line["order_id"]) == ("close_order", "ord-1")
