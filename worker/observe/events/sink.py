"""Where every event goes: the logger the builders emit through, the JSON fast path, and the
run's and the target's fields bound through contextvars.

`worker.observe.writer.configure` replaces `log` and sets `_info_lines`; every builder looks
them up here at call time.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

import structlog

__all__ = ["FastLines", "bind_run", "bound_target"]


class FastLines(Protocol):
    """The JSON form's fast path (`worker.observe.writer`): an info event through the
    pipeline's processors, its line held for one write per loop round."""

    def emit(self, event: str, fields: MutableMapping[str, Any]) -> None: ...
    def close(self) -> None: ...


# Every emitter looks these up at call time. `writer.configure` replaces the lazy proxy with a
# logger resolved once, so an event does not re-resolve the configuration (a hot path: 100k
# orders), and sets the fast path for the JSON form.
log: structlog.typing.FilteringBoundLogger = structlog.get_logger("liquidator")
_info_lines: FastLines | None = None


def info_fast(event: str, fields: MutableMapping[str, Any]) -> None:
    """An info event on the JSON form's fast path when it is set, else through the pipeline:
    the same line either way (tests/observe/test_events.py compares them)."""
    if _info_lines is not None:
        _info_lines.emit(event, fields)
    else:
        log.info(event, **fields)


def bind_run(run_id: str) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(run_id=run_id)


class bound_target:
    """Every event emitted inside (in this task) carries the target's `account_id` and
    `instrument`, unless its emitter passes them. Tasks started inside inherit them: start a
    task that serves other targets outside. (structlog's `bound_contextvars`, without its copy
    of the whole context on the way in: this wraps every close.)"""

    __slots__ = ("_fields", "_tokens")

    def __init__(self, account_id: int, instrument: str) -> None:
        self._fields = {"account_id": account_id, "instrument": instrument}
        self._tokens: Mapping[str, contextvars.Token[Any]] = {}

    def __enter__(self) -> None:
        self._tokens = structlog.contextvars.bind_contextvars(**self._fields)

    def __exit__(self, *exc_info: object) -> None:
        structlog.contextvars.reset_contextvars(**self._tokens)


def target_fields(account_id: int | None, instrument: str | None = None) -> dict[str, Any]:
    """A target's fields passed by hand; those left out come from `bound_target`."""
    fields: dict[str, Any] = {}
    if account_id is not None:
        fields["account_id"] = account_id
    if instrument is not None:
        fields["instrument"] = instrument
    return fields
