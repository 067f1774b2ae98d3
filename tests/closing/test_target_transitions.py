"""Every transition of a target's life (`worker.closing.target`): the outcome, fate and error it
sets, the event it emits, the journal record it queues, and what it says happens next."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.support import events_emitted
from worker.api.models import Order
from worker.closing import target as life
from worker.closing.target import Next, Target
from worker.errors import NotFound, NotSent, OutcomeUnknown, RateLimited, Rejected
from worker.results import Arrival, Fate, Outcome, TargetResult

TARGET = Target(
    account_id=7,
    instrument="AAPL",
    instrument_id="iid-aapl",
    symbol="AAPL",
    instrument_type="COMMON_STOCK",
    quantity=Decimal(100),
    market_value=Decimal(15000),
    cancel_orders=False,
)


def order(status: str = "FILLED", filled: str = "100") -> Order:
    return Order(
        id="o-1",
        client_order_id="c-1",
        account_id=7,
        side="SELL",
        quantity=Decimal(100),
        order_type="MARKET",
        status=status,
        filled_quantity=Decimal(filled),
        created_at=datetime(2025, 1, 2, 15, tzinfo=UTC),
        instrument_id="iid-aapl",
    )


class Recorder:
    """The journal's records, as queued (the journal itself is tested against SQLite and
    PostgreSQL elsewhere; here: which record each transition queues)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []

    def attempt_result(
        self,
        run_id: str,
        account_id: int,
        instrument_id: str,
        attempt: int,
        request_id: str | None,
        result: str,
    ) -> None:
        self.records.append(("attempt_result", result))

    def orders(
        self,
        run_id: str,
        account_id: int,
        instrument_id: str,
        orders: Iterable[Order],
        request_id: str,
        *,
        reconciled: bool,
    ) -> None:
        self.records.append(("orders", reconciled))


def sent_once(result: TargetResult) -> TargetResult:
    life.sending(result, 1)
    return result


@dataclass(frozen=True)
class Case:
    name: str
    act: Callable[[TargetResult, Recorder], Next]
    outcome: Outcome | None
    fate: Fate
    error: str | None  # a part of the error, or None for none
    events: tuple[str, ...]  # emitted, in order
    journal: list[tuple[str, Any]]
    next: Next
    prepare: Callable[[TargetResult], TargetResult] = lambda r: r


def send_failed(err: Exception) -> Callable[[TargetResult, Recorder], Next]:
    def act(r: TargetResult, j: Recorder) -> Next:
        assert isinstance(err, NotSent | RateLimited | Rejected | OutcomeUnknown)
        life.send_failed(j, "run", TARGET, r, err)
        return life.next_of(r)

    return act


def stop_unsent(r: TargetResult, j: Recorder) -> Next:
    life.stopped_unsent(j, "run", TARGET, r)
    return life.next_of(r)


def fail_unknown(r: TargetResult, j: Recorder) -> Next:
    life.send_failed(j, "run", TARGET, r, OutcomeUnknown("t"))
    return life.failed(r, "outcome unknown: could not read")


def flat_after(filled: str) -> Callable[[TargetResult, Recorder], Next]:
    def act(r: TargetResult, j: Recorder) -> Next:
        life.note_order(r, order(filled=filled), own=True)
        return life.flat(r)

    return act


NEW_Q1 = life.CloseOrders([order("NEW", "0")], "q1")  # a close's reply: its order

CASES = [
    Case("planned flat", lambda r, j: life.planned_flat(r, "not held"), Outcome.ALREADY_FLAT,
         Fate.NOT_SENT, None, ("target_settled",), [], Next.SETTLED),
    Case("unknown instrument",
         lambda r, j: life.unknown_instrument(r, NotFound("no such", status=404, request_id="q")),
         Outcome.FAILED, Fate.NOT_SENT, "unknown instrument 'AAPL'", ("close_failed",), [],
         Next.SETTLED),
    Case("unreadable", lambda r, j: life.unreadable(r, Rejected("503", status=503)),
         Outcome.FAILED, Fate.NOT_SENT, "could not list the account's positions",
         ("close_failed",), [], Next.SETTLED),
    Case("sent",
         lambda r, j: life.sent(j, "run", TARGET, r, NEW_Q1, found=False),
         None, Fate.APPLIED, None, ("close_order",), [("attempt_result", "ok"), ("orders", False)],
         Next.FOLLOW, sent_once),
    Case("found (client id taken)",
         lambda r, j: life.sent(j, "run", TARGET, r, NEW_Q1, found=True),
         None, Fate.APPLIED, None, ("close_order",),
         [("attempt_result", "found"), ("orders", True)], Next.FOLLOW, sent_once),
    Case("found by a look",
         lambda r, j: life.found(j, "run", TARGET, r, life.CloseOrders([order()], "q2")),
         None, Fate.APPLIED, None, ("close_order",), [("orders", True)], Next.FOLLOW, sent_once),
    Case("adopted", lambda r, j: life.adopted(j, "run", TARGET, r, [order("NEW", "0")], "q3"),
         None, Fate.APPLIED, None, ("order_adopted", "close_order"), [("orders", True)],
         Next.FOLLOW),
    Case("refused", send_failed(Rejected("no", status=422, request_id="q4")), None,
         Fate.REFUSED, None, (), [("attempt_result", "Rejected")], Next.FOLLOW, sent_once),
    Case("unknown", send_failed(OutcomeUnknown("timeout")), None, Fate.UNKNOWN, None, (),
         [("attempt_result", "OutcomeUnknown")], Next.FOLLOW, sent_once),
    Case("not sent (stopping)",
         lambda r, j: stop_unsent(r, j),
         None, Fate.NOT_SENT, None, (), [("attempt_result", "stopped")], Next.FOLLOW,
         sent_once),
    Case("failed, fate unknown: watched",
         lambda r, j: fail_unknown(r, j),
         Outcome.FAILED, Fate.UNKNOWN, "outcome unknown", ("close_failed",),
         [("attempt_result", "OutcomeUnknown")], Next.WATCH, sent_once),
    Case("flat (closed): priced", flat_after("100"), Outcome.CLOSED, Fate.NOT_SENT, None,
         ("target_cost",), [], Next.SETTLED),
    Case("guarded: not sent", lambda r, j: life.guarded(r, "spread of X is 900.0 bps"),
         Outcome.GUARDED, Fate.NOT_SENT, "spread of X", ("target_settled",), [], Next.SETTLED),
    Case("flat, the close refused", flat_after("0"), Outcome.ALREADY_FLAT, Fate.NOT_SENT, None,
         ("target_settled",), [], Next.SETTLED),
    Case("flat after a close whose reply was lost",
         lambda r, j: life.flat(r, by_unfound_close=True), Outcome.CLOSED, Fate.NOT_SENT,
         "reply was lost", ("target_settled",), [], Next.SETTLED),
    Case("read flat by a look before any close",
         lambda r, j: life.read_flat(r, "a look"), Outcome.ALREADY_FLAT, Fate.NOT_SENT, None,
         ("target_settled",), [], Next.SETTLED),
    Case("not flat", lambda r, j: life.not_flat(r, "still open after 1 s (FLAT_TIMEOUT)"),
         Outcome.NOT_FLAT, Fate.NOT_SENT, "still open after 1 s", ("target_not_flat",), [],
         Next.SETTLED),
    Case("skipped", lambda r, j: life.skipped(r), Outcome.SKIPPED, Fate.NOT_SENT,
         "run stopped before this target was sent", (), [], Next.SETTLED),
    Case("market closed", lambda r, j: life.market_closed(r, "holiday"),
         Outcome.MARKET_CLOSED, Fate.NOT_SENT, "holiday", (), [], Next.SETTLED),
    Case("stopped before a re-send", lambda r, j: life.stopped(r), Outcome.FAILED,
         Fate.NOT_SENT, "run stopped before the close could be sent again", ("close_failed",), [],
         Next.SETTLED, sent_once),
    Case("cut off, nothing sent",
         lambda r, j: life.cut_off(r, not_sent="not sent: x", unknown="y"), Outcome.SKIPPED,
         Fate.NOT_SENT, "not sent: x", (), [], Next.SETTLED),
    Case("cut off after a send",
         lambda r, j: life.cut_off(r, not_sent="x", unknown="the run stopped"), Outcome.FAILED,
         Fate.UNKNOWN, "outcome unknown: the run stopped", ("close_failed",), [], Next.WATCH,
         sent_once),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_transition_sets_outcome_fate_error_event_and_record(case: Case) -> None:
    with events_emitted() as emitted:
        result = case.prepare(TARGET.result())
        journal = Recorder()
        next_step = case.act(result, journal)
    assert next_step is case.next
    assert result.outcome is case.outcome
    assert result.fate is case.fate
    if case.error is None:
        assert result.error is None
    else:
        assert result.error is not None
        assert case.error in result.error
    assert tuple(e["event"] for e in emitted) == case.events
    assert journal.records == case.journal


def test_every_failed_transition_is_said() -> None:
    """A failure is never silent: each transition to FAILED in the table emits close_failed."""
    failing = [c for c in CASES if c.outcome is Outcome.FAILED]
    assert failing
    assert all(c.events == ("close_failed",) for c in failing)


def test_residue_closes_count_only_what_may_have_changed_the_position() -> None:
    result = sent_once(TARGET.result())
    assert life.residue_begun(result) == 1
    life.residue_uncounted(result)  # provably changed nothing
    assert result.residue_closes == 0
    assert life.residue_begun(result) == 1
    life.residue_unknown(result)
    assert (result.residue_closes, result.fate) == (1, Fate.UNKNOWN)
    life.position_read(result, Decimal(40))
    assert result.remaining_quantity == "40"
    life.flat(result)
    assert result.remaining_quantity is None


def test_with_arrival_is_replace_of_every_field() -> None:
    """`with_arrival` names the fields by hand: each one must come through, a new one too."""
    first = Arrival(Decimal("1.00"), Decimal("1.02"), Decimal("1.01"), 0.5)
    # Every field unlike its default, so a field left out would show.
    values = {f.name: getattr(TARGET, f.name) for f in dataclasses.fields(Target)}
    values.update(cancel_orders=True, arrival=first)
    target = Target(**values)
    second = Arrival(Decimal(2), None, None, None)
    assert target.with_arrival(second) == dataclasses.replace(target, arrival=second)
    assert target.with_arrival(None) == dataclasses.replace(target, arrival=None)
    assert target.with_arrival(second).arrival is second
