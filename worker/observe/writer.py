"""The log pipeline: where events go and how they are written.

`configure` (once, at program start) sets structlog up and installs the logger the emitters in
`worker.observe.events` use: JSON lines on stdout (a readable console form on a terminal), with
every secret redacted from the finished line; the two per-target info events go through the
same processors to a logger that holds their lines for one write per loop round. Events and
their fields are defined in `events`; here only the console form reads a few of them, to print
an order or a wait as one short line.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, BinaryIO, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from worker import jsonbytes
from worker.inputs.secrets import REDACTED as REDACTED  # what a secret reads as in a line
from worker.inputs.secrets import Scrubber, secret_forms
from worker.observe import events
from worker.observe.events import sink


class Redactor:
    """Wrap a renderer: replace every occurrence of a secret in the finished line.

    One substring search per written form of a secret per line (`Scrubber`) finds it however it
    got there (a value, a nested header, an exception's text).
    """

    def __init__(self, renderer: Processor, secrets: Iterable[str]) -> None:
        self._render = renderer
        # Each key also as its secret part alone and as its `Bearer <key>` header value.
        self._scrub = Scrubber(f for s in secrets for f in secret_forms(s))
        self.redact_bytes = self._scrub.raw

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str | bytes:
        rendered = self._render(logger, name, event)
        if isinstance(rendered, bytes):
            return self._scrub.raw(rendered)
        return self._scrub.text(str(rendered))


class _Out:
    """The binary stream of the JSON form, as both loggers use it: the emitters' logger writes
    each line at once (`write`), the info lines' logger (`_InfoLines`) holds its lines until the
    event loop's current round of callbacks is done (`hold`), and one write carries them all.

    A write to stdout can cost a system call per line (it is unbuffered under
    PYTHONUNBUFFERED, as services often run), and a round of the fan-out emits several lines.
    Lines keep the order they were emitted in: a pipeline line writes the held ones first.
    Every held line is out before the loop waits for anything; one emitted outside a running
    loop (another thread, no loop) is written at once.
    """

    HOLD_AT_MOST = 256  # lines; more in one round are written at once

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._held: list[bytes] = []
        self._lock = threading.Lock()
        self._release_due: asyncio.AbstractEventLoop | None = None  # the loop it waits in

    def write(self, data: bytes) -> int:
        with self._lock:
            if self._held:
                self._held.append(data)
                data = b"".join(self._held)
                self._held.clear()
            return self._stream.write(data)

    def flush(self) -> None:
        self._stream.flush()

    def hold(self, line: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # (no loop in this thread)
            loop = None
        with self._lock:
            self._held.append(line)
            if loop is not None and len(self._held) < self.HOLD_AT_MOST:
                if self._release_due is not loop:
                    self._release_due = loop
                    loop.call_soon(self.release)
                return
        self.release()

    def release(self) -> None:
        """Write out every held line."""
        with self._lock:
            self._release_due = None
            if not self._held:
                return
            data = b"".join(self._held)
            self._held.clear()
            self._stream.write(data)
        self._stream.flush()


class _HeldLines:
    """The wrapped logger of the info lines' own structlog logger: each rendered line is held
    (`_Out.hold`) rather than written at once."""

    def __init__(self, out: _Out) -> None:
        self._out = out

    def info(self, line: bytes) -> None:
        self._out.hold(line + b"\n")


class _InfoLines:
    """`close_order` and `target_cost`, one line each per target, the fan-out's hottest path
    after the request: through the pipeline's own processors (the same list, so the same line,
    key for key, and structlog's `capture_logs` sees them), to a logger whose lines are held for
    the rest of the loop's round and written with the round's others in one write (`_Out`).

    Held, a round's lines cost one system call rather than one each (stdout is unbuffered under
    PYTHONUNBUFFERED): bench/README.md has what that saves a close.
    """

    def __init__(self, out: _Out, pipeline: list[Processor]) -> None:
        self._out = out
        self._log: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
            _HeldLines(out),
            processors=pipeline,  # (the list itself: capture_logs edits it in place)
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        ).bind()  # (resolved once, as the emitters' logger is)

    def emit(self, event: str, fields: MutableMapping[str, Any]) -> None:
        self._log.info(event, **fields)

    def close(self) -> None:
        """Write out what is held (the output is being configured anew)."""
        self._out.release()


@atexit.register
def _write_held_lines() -> None:
    """A loop closed before its round ended leaves lines held: they go out at exit."""
    if sink._info_lines is not None:
        with contextlib.suppress(OSError, ValueError):  # (a stream already closed)
            sink._info_lines.close()


class CompactOrders:
    """For people: a `close_order` as one short line; every other event as the renderer has it.

    Thousands of orders in the full form (~330 characters each) flood a terminal; the JSON
    form (`--log-format json`) keeps every field.
    """

    def __init__(self, renderer: Processor) -> None:
        self._render = renderer

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str | bytes:
        if (
            event.get("event") in (events.WAITING_FOR_CLOSE, events.RUN_WOULD_START)
            and "starts" in event
        ):
            clock = str(event.get("timestamp", ""))[11:19]
            return (
                f"{clock} {event['event']}: starts {event['starts']}, in"
                f" {event.get('starts_in')} (today's close {event.get('closes')},"
                f" {event.get('day_type')})"
            )
        if event.get("event") == events.WAITING_FOR_FILLS and "until_local" in event:
            clock = str(event.get("timestamp", ""))[11:19]
            return f"{clock} {events.WAITING_FOR_FILLS}: " + events.resting_text(
                int(event.get("orders", 0)),
                str(event["until_local"]),
                float(event.get("wait_s", 0)),
            )
        if event.get("event") != events.CLOSE_ORDER:
            rendered = self._render(logger, name, event)
            return rendered if isinstance(rendered, str | bytes) else str(rendered)
        clock = str(event.get("timestamp", ""))[11:19]  # HH:MM:SS of the ISO timestamp
        order_id = str(event.get("order_id", ""))[:8]
        line = (
            f"{clock} {events.CLOSE_ORDER} {event.get('account_id')} {event.get('symbol')}"
            f" {event.get('side')} {event.get('quantity')} {event.get('status')} {order_id}"
        )
        if event.get("attempt", 1) != 1:
            line += f" attempt {event.get('attempt')}"
        if event.get("reconciled"):
            line += " (found by a look-up)"
        return line


def _json_bytes(value: Any, **kw: Any) -> bytes:
    return jsonbytes.dumps(value, kw.get("default"))


def _json_text(value: Any, **kw: Any) -> str:
    """For a text-only stream (tests' StringIO): the same JSON as the bytes path."""
    return jsonbytes.dumps(value, kw.get("default")).decode()


def configure(
    *,
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    logger_factory: Callable[..., Any] | None = None,
) -> None:
    """Configure structlog once, at program start. A terminal gets the readable form."""
    if sink._info_lines is not None:
        sink._info_lines.close()
    out = stream if stream is not None else sys.stdout
    console = fmt == "console" or (fmt == "auto" and (out.isatty() or logger_factory is not None))
    binary: BinaryIO | None = getattr(out, "buffer", None)
    fast: _Out | None = None  # the stream both loggers share, with the held info lines
    renderer: Processor
    if console:
        renderer = CompactOrders(
            structlog.dev.ConsoleRenderer(
                colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        )
    elif binary is not None:  # structlog's advice for speed: orjson straight to bytes
        renderer = structlog.processors.JSONRenderer(_json_bytes)
        if logger_factory is None:
            fast = _Out(binary)
            # (it uses only write and flush, which _Out has)
            logger_factory = structlog.BytesLoggerFactory(file=cast(BinaryIO, fast))
    else:
        renderer = structlog.processors.JSONRenderer(_json_text)
    redactor = Redactor(renderer, secrets)
    pipeline: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor,
    ]
    structlog.configure(
        processors=pipeline,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=logger_factory or structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # The emitters' logger, resolved once: an event does not re-resolve the configuration.
    sink.log = structlog.get_logger("liquidator").bind()
    # The held info lines: the JSON form on a byte stream, at a level that lets info through.
    sink._info_lines = None
    if fast is not None and sink.log.is_enabled_for(logging.INFO):
        sink._info_lines = _InfoLines(fast, pipeline)


def unconfigure() -> None:
    """Back to structlog's defaults and a lazy logger (for tests that capture events)."""
    if sink._info_lines is not None:
        sink._info_lines.close()
    sink._info_lines = None
    structlog.reset_defaults()
    sink.log = structlog.get_logger("liquidator")
