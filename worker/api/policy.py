"""When to retry, and when to look before retrying: decided from the typed error alone.

A close through close_position is re-sent directly only when the failed request provably had no
effect; when its fate is unknown the account is looked at first (`needs_look_before_resend`),
while a submission under a client id is sent again under the same id. This module never sends a
request or reads a clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from worker.errors import (
    ApiError,
    Conflict,
    NotFound,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
)

T = TypeVar("T")
# A server may ask for longer than we can wait at the end of the day (`Retry-After: 3600`);
# beyond this a retry waits only this long, and the pace holds every send only this long.
RETRY_AFTER_CAP_S = 30.0
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class TimeSource:
    """The clock a wait is measured by (monotonic seconds) and the sleep it pauses with: what
    tests inject so that no test waits for real."""

    clock: Callable[[], float] = time.monotonic
    sleep: Sleep = asyncio.sleep


REAL_TIME = TimeSource()  # time.monotonic and asyncio.sleep

RetryListener = Callable[[RetryCallState, float], None]
"""Called as (state, wait_seconds) before each retry wait: where retry events come from."""


def is_safe_to_resend(err: BaseException) -> bool:
    """The failed close provably changed nothing, so it may simply be sent again."""
    return isinstance(err, RateLimited | NotSent)


def needs_look_before_resend(err: BaseException | None, *, idempotent: bool = False) -> bool:
    """The close may have been applied: look at orders and the position before any new send.

    Not for an idempotent send (a client id): sent again, it cannot create a second order.
    """
    return not idempotent and isinstance(err, OutcomeUnknown)


def looks_after_last(err: BaseException) -> bool:
    """The attempts are over; one more look decides the target before it fails.

    Unknown: the close may have been applied. 404: the position may have gone flat meanwhile.
    409 (`Conflict`): a close may be pending, or (submit_orders) the client id is taken.
    """
    return isinstance(err, OutcomeUnknown | NotFound | Conflict)


def is_retryable_read(err: BaseException) -> bool:
    """A read failed for a reason that may pass (rate limit, 5xx, timeout, dropped connection)."""
    return isinstance(err, RateLimited | NotSent | OutcomeUnknown)


def retries_close(err: BaseException) -> bool:
    """A close that failed this way gets another attempt (after a look, if its fate is unknown)."""
    return is_safe_to_resend(err) or isinstance(err, OutcomeUnknown)


def aborts_run(err: BaseException) -> bool:
    """Credentials were refused: every further request would be refused too."""
    return isinstance(err, Unauthorized)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry. One value object, built from the settings."""

    max_attempts: int = 8
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 8.0
    # The pacer holds every send at most as long (`Pacer(retry_after_cap_s=...)`) and has slowed
    # the whole run down meanwhile.
    retry_after_cap_s: float = RETRY_AFTER_CAP_S
    # Before looking at what an unanswered close did, give a slow server time to finish applying
    # it: a look that comes too early can see "not done" and allow a second close.
    settle_s: float = 0.0
    sleep: Sleep = field(default=asyncio.sleep)
    rng: random.Random = field(default_factory=random.Random)

    def wait_s(self, state: RetryCallState) -> float:
        """Retry-After when the server gave one, else exponential backoff with full jitter."""
        outcome = state.outcome
        err = outcome.exception() if outcome is not None else None
        if isinstance(err, ApiError) and err.retry_after is not None:
            return min(err.retry_after, self.retry_after_cap_s)
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (state.attempt_number - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    def close_wait_s(self, state: RetryCallState) -> float:
        """As `wait_s`, and never less than `settle_s` before the look an unknown outcome needs."""
        wait = self.wait_s(state)
        err = state.outcome.exception() if state.outcome is not None else None
        return max(wait, self.settle_s) if needs_look_before_resend(err) else wait

    def for_closes(
        self, on_retry: RetryListener | None = None, *, idempotent: bool = False
    ) -> AsyncRetrying:
        """Attempts of one close. The caller looks before re-sending after an unknown outcome;
        an idempotent send is re-sent at once (backoff only), with no look and no settle wait."""
        wait = self.wait_s if idempotent else self.close_wait_s
        return self._retrying(retries_close, on_retry, wait)

    async def before_last_look(self, err: BaseException, *, idempotent: bool = False) -> None:
        """A slow server gets `settle_s` to apply an unanswered close before the last look."""
        if needs_look_before_resend(err, idempotent=idempotent):
            await self.sleep(self.settle_s)

    async def close(
        self,
        attempt: Callable[[], Awaitable[T]],
        on_retry: RetryListener,
        *,
        idempotent: bool = False,
    ) -> T:
        """Call `attempt` until it returns, or raises what `for_closes` does not retry.

        The first try runs bare, and a first try that fails is handed to tenacity as its attempt
        1, so every retry, wait and stop is tenacity's exactly as if it had run the first try.
        Why: almost every close succeeds at once, and tenacity's per-call state costs CPU and
        memory on every close; `make bench` shows it beyond its noise (bench/README.md).
        """
        try:
            return await attempt()
        except Exception as err:
            if not retries_close(err) or self.max_attempts <= 1:
                raise
            first_failure: Exception | None = err

        async def replay_first_failure_then_attempt() -> T:
            nonlocal first_failure
            if first_failure is not None:
                err, first_failure = first_failure, None
                raise err
            return await attempt()

        async for trying in self.for_closes(on_retry, idempotent=idempotent):
            with trying:
                return await replay_first_failure_then_attempt()
        raise AssertionError("tenacity stops by raising (reraise=True)")  # pragma: no cover

    def for_reads(self, on_retry: RetryListener | None = None) -> AsyncRetrying:
        return self._retrying(is_retryable_read, on_retry, self.wait_s)

    def _retrying(
        self,
        predicate: Callable[[BaseException], bool],
        on_retry: RetryListener | None,
        wait: Callable[[RetryCallState], float],
    ) -> AsyncRetrying:
        def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None:
                on_retry(state, state.upcoming_sleep)

        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=retry_if_exception(predicate),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
