"""Before the plan: the key checked against the server's clock, then the wait for today's close
window (`--before-close`) or the market-on-close cutoff (`--at-close`). Time comes from the server,
carried on by the monotonic clock, never from the local wall clock; nothing here changes anything.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.api.reads import Reader
from worker.errors import ApiError
from worker.inputs.settings import Settings
from worker.observe import events
from worker.results import Outcome
from worker.run.ended import Ended, aborted, unplanned
from worker.run.schedule import Go, MocCutoff, read_moc_cutoff, wait_for_close_window
from worker.run.scope import RunScope

# The key check's tries. Only transient failures (timeouts, 5xx, 429, refused connections) are
# tried again; a rejected key (401) ends the run at the first reply.
KEY_CHECK_ATTEMPTS = 5


@dataclass(frozen=True)
class Ready:
    """The key works and it is time: the server's clock (as read, plus monotonic time since);
    with --at-close, today's cutoff (not passed, or passed for a dry run)."""

    server_now: Callable[[], datetime]
    cutoff: MocCutoff | None = None

    def cutoff_line(self) -> str | None:
        """What the plan says of the cutoff, for --at-close."""
        if self.cutoff is None:
            return None
        reason = self.cutoff.reason
        return f"cutoff passed: {reason}" if self.cutoff.passed else reason

    def until_close_s(self) -> float:
        """Market-on-close orders fill at the close: following waits for it, then FLAT_TIMEOUT."""
        if self.cutoff is None or self.cutoff.regular_close is None:
            return 0.0
        return max(0.0, (self.cutoff.regular_close - self.server_now()).total_seconds())


async def preflight(
    run: RunScope, monotonic: Callable[[], float] = time.monotonic
) -> Ready | Ended:
    """The key checked and the server's clock read, today's close window waited for
    (--before-close), and --at-close's cutoff read: the run goes on, or ends here."""
    settings, reader, policy, request = run.settings, run.reader, run.policy, run.request
    check = Reader(run.api, dataclasses.replace(policy, max_attempts=KEY_CHECK_ATTEMPTS))
    try:
        clock = await check.clock()
    except ApiError as err:
        return aborted(f"the API did not accept the key or could not be reached: {err}", [])
    # The server's time as read, carried forward by the monotonic clock: a step of the local
    # wall clock (NTP, a resumed VM) moves no window and no evidence of the worker's.
    server_at, read_at = clock.data, monotonic()

    def server_now() -> datetime:
        return server_at + timedelta(seconds=monotonic() - read_at)

    dry_run = request.dry_run
    if request.before_close is not None:
        timing = await wait_for_close_window(
            reader, request.before_close, server_now, run.stop, policy.sleep, dry_run=dry_run
        )
        if timing.go is Go.MARKET_CLOSED:
            why = f"market closed: {timing.reason}"
            return Ended(unplanned(request.specs, why, Outcome.MARKET_CLOSED))
        if timing.go is Go.STOPPED:
            return aborted(timing.reason, [])
    cutoff = await _moc_cutoff(settings, reader, server_now) if settings.at_close else None
    if cutoff is not None and cutoff.passed and not dry_run:
        # exit 2: nothing that changes anything was sent
        return aborted(f"--at-close: {cutoff.reason}; nothing was sent", [], refused=True)
    return Ready(server_now, cutoff)


async def _moc_cutoff(
    settings: Settings, reader: Reader, server_now: Callable[[], datetime]
) -> MocCutoff:
    """--at-close: today's cutoff from the market-hours calendar, logged (check, dry run too)."""
    cutoff = await read_moc_cutoff(reader, server_now, settings.moc_cutoff)
    events.moc_cutoff(
        passed=cutoff.passed,
        cutoff=None if cutoff.cutoff is None else cutoff.cutoff.isoformat(),
        regular_close=None if cutoff.regular_close is None else cutoff.regular_close.isoformat(),
        reason=cutoff.reason,
    )
    return cutoff
