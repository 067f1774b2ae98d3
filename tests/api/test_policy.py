"""Retry decisions are predicates over the typed error; each is proved over every error kind."""

from __future__ import annotations

import random

import pytest
from tenacity import RetryCallState

from tests.support import RecordedSleeps
from worker.api.policy import (
    RetryPolicy,
    aborts_run,
    is_retryable_read,
    is_safe_to_resend,
    looks_after_last,
    needs_look_before_resend,
    retries_close,
)
from worker.errors import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    ResendRefused,
    StillWorking,
    Unauthorized,
)

#                  error                                     resend  look   read   abort
CASES = [
    (NotSent("refused"),                                     True,   False, True,  False),
    (RateLimited("429", status=429, retry_after=1.0),        True,   False, True,  False),
    (OutcomeUnknown("timeout"),                              False,  True,  True,  False),
    (OutcomeUnknown("503", status=503),                      False,  True,  True,  False),
    (OutcomeUnknown("502 html", status=502),                 False,  True,  True,  False),
    (ResendRefused("second send"),                           False,  True,  True,  False),
    (Rejected("400", status=400),                            False,  False, False, False),
    (Rejected("409", status=409),                            False,  False, False, False),
    (Rejected("422", status=422),                            False,  False, False, False),
    (Forbidden("403", status=403),                           False,  False, False, False),
    (NotFound("404", status=404),                            False,  False, False, False),
    (Unauthorized("401", status=401),                        False,  False, False, True),
    (ValueError("a bug"),                                    False,  False, False, False),
]  # fmt: skip


@pytest.mark.parametrize(("err", "resend", "look", "read", "abort"), CASES)
def test_each_error_kind_has_one_decision(
    err: Exception, resend: bool, look: bool, read: bool, abort: bool
) -> None:
    assert is_safe_to_resend(err) is resend
    assert needs_look_before_resend(err) is look
    assert is_retryable_read(err) is read
    assert aborts_run(err) is abort


#                  error                                     retried  last look  look (idempotent)
LAST = [
    (NotSent("refused"),                                     True,    False,     False),
    (RateLimited("429", status=429),                         True,    False,     False),
    (OutcomeUnknown("timeout"),                              True,    True,      False),
    (ResendRefused("second send"),                           True,    True,      False),
    (NotFound("404", status=404),                            False,   True,      False),
    (Conflict("409", status=409),                            False,   True,      False),
    (Rejected("400 self-match", status=400),                 False,   False,     False),
    (StillWorking("resting orders still working"),           False,   False,     False),
    (Unauthorized("401", status=401),                        False,   False,     False),
]  # fmt: skip


@pytest.mark.parametrize(("err", "retried", "last_look", "idempotent_look"), LAST)
def test_policy_decides_each_close_error_during_and_after_the_attempts(
    err: Exception, retried: bool, last_look: bool, idempotent_look: bool
) -> None:
    assert retries_close(err) is retried
    assert looks_after_last(err) is last_look
    # A client id sent again cannot create a second order: no look before re-sending it.
    assert needs_look_before_resend(err, idempotent=True) is idempotent_look


async def test_an_idempotent_close_is_resent_without_the_settle_wait() -> None:
    sleeps = RecordedSleeps()
    policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.01, settle_s=5.0, sleep=sleeps)
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OutcomeUnknown("timeout")
        return "sent"

    assert await policy.close(attempt, lambda *_: None, idempotent=True) == "sent"
    assert max(sleeps.waits) < 5.0
    await policy.before_last_look(OutcomeUnknown("timeout"), idempotent=True)
    assert max(sleeps.waits) < 5.0
    await policy.before_last_look(OutcomeUnknown("timeout"))
    assert sleeps.waits[-1] == 5.0


def test_no_error_is_both_safe_to_resend_and_in_need_of_a_look() -> None:
    assert not any(is_safe_to_resend(e) and needs_look_before_resend(e) for e, *_ in CASES)


def _state_after(err: BaseException, attempt: int) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((type(err), err, None))
    return state


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(retry_after_cap_s=30)
    assert policy.wait_s(_state_after(RateLimited("x", retry_after=2.5), 1)) == 2.5
    assert policy.wait_s(_state_after(RateLimited("x", retry_after=3600), 1)) == 30


def test_backoff_grows_exponentially_with_jitter_and_stops_at_the_ceiling() -> None:
    policy = RetryPolicy(backoff_initial_s=0.5, backoff_max_s=4, rng=random.Random(1))
    waits = [policy.wait_s(_state_after(OutcomeUnknown("x"), n)) for n in range(1, 7)]
    for n, wait in enumerate(waits, start=1):
        ceiling = min(4.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling


def test_a_look_after_an_unknown_close_waits_at_least_the_settle_time() -> None:
    policy = RetryPolicy(backoff_initial_s=0.01, backoff_max_s=0.01, settle_s=1.0)
    assert policy.close_wait_s(_state_after(OutcomeUnknown("timeout"), 1)) == 1.0
    assert policy.close_wait_s(_state_after(RateLimited("x", retry_after=0.2), 1)) == 0.2
    assert policy.wait_s(_state_after(OutcomeUnknown("timeout"), 1)) <= 0.01  # reads: no settle


async def test_reads_retry_transient_errors_up_to_max_attempts_with_injected_sleep() -> None:
    sleeps = RecordedSleeps()
    policy = RetryPolicy(max_attempts=4, backoff_initial_s=1, sleep=sleeps)
    calls = 0
    with pytest.raises(OutcomeUnknown):
        async for attempt in policy.for_reads():
            with attempt:
                calls += 1
                raise OutcomeUnknown("503", status=503)
    assert calls == 4
    assert len(sleeps.waits) == 3


async def test_rejections_are_never_retried() -> None:
    calls = 0
    with pytest.raises(ApiError):
        async for attempt in RetryPolicy(sleep=RecordedSleeps()).for_closes():
            with attempt:
                calls += 1
                raise Rejected("422", status=422)
    assert calls == 1


async def test_a_close_retried_from_its_first_failure_gets_exactly_max_attempts() -> None:
    sleeps = RecordedSleeps()
    policy = RetryPolicy(max_attempts=4, backoff_initial_s=1, sleep=sleeps)
    calls = 0
    retried_after: list[int] = []

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise OutcomeUnknown("timeout")

    with pytest.raises(OutcomeUnknown):
        await policy.close(attempt, lambda state, _: retried_after.append(state.attempt_number))
    assert calls == 4
    assert retried_after == [1, 2, 3]  # tenacity's attempts, the first one included
    assert len(sleeps.waits) == 3


async def test_a_close_that_succeeds_on_its_second_try_returns_its_result() -> None:
    sleeps = RecordedSleeps()
    outcomes: list[Exception | str] = [RateLimited("429", retry_after=0.5), "closed"]

    async def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await RetryPolicy(sleep=sleeps).close(attempt, lambda *_: None) == "closed"
    assert sleeps.waits == [0.5]


async def test_a_refused_close_is_tried_once_and_raises() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise Rejected("422", status=422)

    with pytest.raises(Rejected):
        await RetryPolicy(sleep=RecordedSleeps()).close(attempt, lambda *_: None)
    assert calls == 1
