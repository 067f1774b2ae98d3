"""One run per journal at a time: an exclusive lock held for the run's whole life.

A second run waits up to LOCK_WAIT, then refuses (exit 2) naming the holder. The lock is the
operating system's or the database's (`flock`; a PostgreSQL session advisory lock), so a killed
holder releases it at once and no lock outlives its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from worker.errors import JournalRefused
from worker.observe import events

POLL_S = 0.1  # how often a waiting run tries the lock again
# A run takes the lock, then writes who it is: one found in between is given this long to say.
NAME_WAIT_S = 0.5
UNNAMED = "a run that has not yet said who it is"


@dataclass(frozen=True, slots=True)
class Holder:
    host: str
    pid: int
    since: str  # ISO 8601, UTC

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), datetime.now(UTC).isoformat())

    def __str__(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.since}"


class FileLock:
    """`flock` on a small file that also names its holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalRefused(
                f"state_dir: cannot open the journal lock {path}: {exc.strerror}"
            ) from None

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        holder = orjson.dumps(dataclasses.asdict(Holder.me()))
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder, 0)
        return True

    def holder(self) -> str:
        try:
            with self.path.open("rb") as f:
                return str(Holder(**orjson.loads(f.read())))
        except (OSError, ValueError, TypeError):
            return UNNAMED

    def release(self) -> None:
        os.close(self._fd)  # closing the descriptor drops the flock


async def acquire(
    try_acquire: Callable[[], bool],
    holder: Callable[[], str],
    *,
    what: str,
    wait_s: float,
    stop: asyncio.Event | None = None,
) -> bool:
    """Take the lock, waiting up to `wait_s` seconds, or raise JournalRefused naming its holder.

    True when it had to wait: another run held it, and may have died with closes in flight.
    """
    if try_acquire():
        return False
    named = await _named(holder)
    if wait_s <= 0:
        raise JournalRefused(
            f"{what} is in use by another run ({named}); nothing was sent. Set lock_wait"
            " (--lock-wait) to wait for it"
        )
    events.lock_waiting(journal=what, holder=named, wait_s=wait_s)
    deadline = time.monotonic() + wait_s
    stop = stop or asyncio.Event()
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(POLL_S, max(0.0, deadline - time.monotonic())))
        if stop.is_set():
            raise JournalRefused(f"stop requested while waiting for {what} ({named})")
        if try_acquire():
            events.lock_acquired(journal=what, holder=named)
            return True
        named = holder()
    raise JournalRefused(
        f"{what} is still in use by another run ({named}) after waiting {wait_s:g} s"
        " (lock_wait); nothing was sent"
    )


async def _named(holder: Callable[[], str]) -> str:
    """The holder, as it names itself once it has written its name (at most NAME_WAIT_S)."""
    named = holder()
    deadline = time.monotonic() + NAME_WAIT_S
    while named == UNNAMED and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        named = holder()
    return named
