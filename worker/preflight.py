"""Before the plan: the key checked against the server's clock (learning its offset from ours),
then, with `--before-close`, the wait for today's close window. Nothing here changes anything."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from worker.api import TradingApi
from worker.errors import ApiError
from worker.outcomes import Outcome
from worker.policy import RetryPolicy
from worker.reads import Reader
from worker.run_end import Ended, aborted, unplanned
from worker.schedule import Go, wait_for_close_window
from worker.targets import TargetSpec

# The key check's tries. Only transient failures (timeouts, 5xx, 429, refused connections) are
# tried again; a rejected key (401) ends the run at the first reply.
KEY_CHECK_ATTEMPTS = 5


@dataclass(frozen=True)
class Ready:
    """The key works and it is time: the server's clock, as ours plus the offset measured."""

    server_now: Callable[[], datetime]


async def preflight(
    api: TradingApi,
    reader: Reader,
    policy: RetryPolicy,
    *,
    specs: Sequence[TargetSpec],
    before_close: timedelta | None,
    stop: asyncio.Event,
) -> Ready | Ended:
    check = Reader(api, dataclasses.replace(policy, max_attempts=KEY_CHECK_ATTEMPTS))
    try:
        clock = await check.clock()
    except ApiError as err:
        return aborted(f"the API did not accept the key or could not be reached: {err}", [])
    offset = clock.data - datetime.now(UTC)

    def server_now() -> datetime:
        return datetime.now(UTC) + offset

    if before_close is not None:
        timing = await wait_for_close_window(reader, before_close, server_now, stop, policy.sleep)
        if timing.go is Go.MARKET_CLOSED:
            why = f"market closed: {timing.reason}"
            return Ended(unplanned(specs, why, Outcome.MARKET_CLOSED))
        if timing.go is Go.STOPPED:
            return aborted(timing.reason, [])
    return Ready(server_now)
