"""stdout and stderr that cannot stop a run: a reader that goes away is not a crash.

A write that fails (a closed pipe, a hung-up terminal) is dropped, the stream is pointed at
/dev/null and one line says so on the other stream. The run's truth lives in its journal and
report, so output never raises into the fan-out.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

Note = Callable[[str], None]


class _Guarded:
    """A stream (text or binary) whose write and flush never raise once its reader is gone.

    Everything else (isatty, fileno, encoding, …) is the wrapped stream's own.
    """

    def __init__(self, stream: Any, name: str, on_lost: Callable[[str, BaseException], None]):
        self._stream = stream
        self._name = name
        self._on_lost = on_lost
        self.lost = False
        binary = getattr(stream, "buffer", None)
        self._buffer = None if binary is None else _Guarded(binary, name, self._lose)

    @property
    def buffer(self) -> Any:
        if self._buffer is None:
            raise AttributeError("buffer")
        return self._buffer

    def write(self, data: Any) -> int:
        if self.lost:
            return len(data)
        try:
            return int(self._stream.write(data))
        except (OSError, ValueError) as err:  # ValueError: the stream was closed under us
            self._lose(self._name, err)
            return len(data)

    def flush(self) -> None:
        if self.lost:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError) as err:
            self._lose(self._name, err)

    def _lose(self, name: str, err: BaseException) -> None:
        if self.lost:
            return
        self.lost = True
        if self._buffer is not None:
            self._buffer.lost = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        self._on_lost(name, err)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_stdio() -> Iterator[None]:
    """sys.stdout and sys.stderr guarded while inside; the streams as they were afterwards."""
    before = sys.stdout, sys.stderr
    streams: dict[str, _Guarded] = {}

    def lost(name: str, err: BaseException) -> None:
        other = streams["stderr" if name == "stdout" else "stdout"]
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        other.write(
            f"liquidator: {name} closed ({why}); the run goes on, its events are in the"
            " report and the journal only\n"
        )
        other.flush()

    streams["stdout"] = _Guarded(sys.stdout, "stdout", lost)
    streams["stderr"] = _Guarded(sys.stderr, "stderr", lost)
    sys.stdout, sys.stderr = streams["stdout"], streams["stderr"]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = before
