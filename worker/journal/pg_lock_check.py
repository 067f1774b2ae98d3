"""Whether the run's PostgreSQL session still holds its lock, asked before each send
(`LockCheck`): shared by the sends that arrive while one check runs, and fresh enough to act on.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

from worker.errors import LockLost
from worker.journal.backend import LOCK_FRESH_S
from worker.journal.pg_session import PgSession

# Lock checks answered too late in a row (each older than LOCK_FRESH_S when it arrived) before
# the run stops: a host that cannot get a fresh answer does not know it still holds the lock.
LOCK_STALE_ANSWERS = 3


class LockCheck:
    """The lock checks of one session."""

    def __init__(self, session: PgSession, timeout_s: float) -> None:
        self._session = session
        self._timeout_s = timeout_s
        # The lock check in progress (whether the lock is held, and when its query started):
        # every send that arrives while it runs shares it, so a busy fan-out costs one query
        # per round trip.
        self._check: asyncio.Future[tuple[bool, float]] | None = None

    async def still_locked(self, thread: Executor) -> None:
        """Ask the database whether this session still holds the run's advisory lock.

        A session that ended (terminated, the server restarted, the network gone) has lost it,
        and a standby may hold it now: the check reconnects and re-takes the lock only if no
        other run held it meanwhile (`PgSession.on_session`), or nothing more is sent.

        An answer counts from when its query started on the database, not from when it was
        asked for: a check queued behind a slow group commit is as fresh as the query. An
        answer older than LOCK_FRESH_S by the time the send would go out (this host paused or
        too busy meanwhile) is asked again, at most LOCK_STALE_ANSWERS times in a row; then
        whether the lock is still held is unknown and nothing more is sent (`LockLost`). The query
        runs in `thread`, the journal's commit thread.
        """
        stale = 0
        while True:
            held, ran_at = await self._answer(thread)
            name = self._session.name
            if not held:
                raise LockLost(
                    f"this run no longer holds the lock on the journal {name}: nothing more is sent"
                )
            age = time.monotonic() - ran_at
            if age <= LOCK_FRESH_S:
                return
            stale += 1
            if stale >= LOCK_STALE_ANSWERS:
                raise LockLost(
                    f"the journal {name} confirmed this run's lock {stale} times in a row,"
                    f" each answer older than {LOCK_FRESH_S:g} s (the last {age:.3f} s) by the"
                    " time the request would go out (this host paused or overloaded): whether"
                    " the run still holds the lock is unknown, nothing more is sent"
                )

    async def _answer(self, thread: Executor) -> tuple[bool, float]:
        """The check in progress, or a new one: whether the lock is held, and since when."""
        loop = asyncio.get_running_loop()
        # A statement that times out, then a reconnect that gives up: each JOURNAL_TIMEOUT.
        wait_s = 2 * self._timeout_s
        if self._check is None or self._check.done():
            self._check = loop.run_in_executor(thread, self._session.lock_held)
            self._check.add_done_callback(lambda c: c.cancelled() or c.exception())
        check = self._check
        name = self._session.name
        try:
            return await asyncio.wait_for(asyncio.shield(check), wait_s)
        except TimeoutError:
            raise LockLost(
                f"the journal {name} did not confirm this run's lock within"
                f" {wait_s:g} s (journal_timeout): nothing more is sent"
            ) from None
        except LockLost:
            raise
        except Exception as exc:
            raise LockLost(
                f"the journal {name} could not confirm this run's lock ({exc}): nothing"
                " more is sent"
            ) from None
