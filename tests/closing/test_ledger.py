"""The ledger's decisions on their own: fills, reads judged current or stale, a safe first size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from worker.api.models import Execution, Order
from worker.closing.ledger import (
    Fill,
    Reading,
    Seen,
    fills_of,
    held_by_plan,
    is_late_close,
    judge,
    safe_size,
)

T0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
IID = "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa"


def fill(n: int, order: str, signed: int) -> Fill:
    return Fill(f"e{n}", order, Decimal(signed))


def execution(n: int, side: str, quantity: str, *, iid: str = IID) -> Execution:
    return Execution(
        id=f"e{n}",
        order_id=f"o{n}",
        side=side,
        quantity=Decimal(quantity),
        transaction_time=T0 + timedelta(seconds=n),
        instrument_id=iid,
    )


def test_fills_are_the_instruments_own_oldest_first_sells_minus() -> None:
    listed = [  # a listing is newest first
        execution(3, "SELL_SHORT", "5"),
        execution(2, "BUY", "7", iid="other"),
        execution(1, "SELL", "10"),
        execution(0, "BUY", "4"),
    ]
    fills = fills_of(listed, IID.upper())
    assert [(f.id, f.order_id, f.signed) for f in fills] == [
        ("e0", "o0", Decimal(4)),
        ("e1", "o1", Decimal(-10)),
        ("e3", "o3", Decimal(-5)),
    ]
    assert [f.at for f in fills] == [T0 + timedelta(seconds=n) for n in (0, 1, 3)]


def test_the_position_the_ledger_predicts_is_current_and_earlier_states_are_stale() -> None:
    fills = [fill(1, "ours", -100)]
    assert judge(Decimal(0), Decimal(100), fills, {"ours"}).reading is Reading.CURRENT
    assert judge(Decimal(100), Decimal(100), fills, {"ours"}).reading is Reading.STALE
    assert judge(Decimal(40), Decimal(100), fills, {"ours"}).reading is Reading.UNEXPLAINED


def test_a_close_applied_late_explains_a_flip_and_its_residue_ends_flat() -> None:
    """Long 100: the re-send and the late close both sold 100; the residue bought 100 back."""
    both = [fill(1, "resend", -100), fill(2, "late", -100)]
    seen = judge(Decimal(-100), Decimal(100), both, {"resend", "late"})
    assert seen.reading is Reading.CURRENT
    back = [*both, fill(3, "residue", 100)]
    owned = {"resend", "late", "residue"}
    # 0 was also the position between the two sells: without the floor it cannot be told
    assert judge(Decimal(0), Decimal(100), back, owned).reading is Reading.STALE
    assert judge(Decimal(0), Decimal(100), back, owned, seen.seen).reading is Reading.CURRENT


def test_what_a_read_proved_of_the_plan_rules_out_a_later_coincidence() -> None:
    """Long 100; a desk bought 60 right after the plan, then the close sold 100 and read 60:
    so the plan did not hold the desk's fill. The residue sold 60: 0 is flat, though 0 would
    also be the position before the residue had the plan held the desk's fill."""
    fills = [fill(1, "desk", 60), fill(2, "close", -100)]
    seen = judge(Decimal(60), Decimal(100), fills, {"close"})
    assert seen.reading is Reading.CURRENT
    after = [*fills, fill(3, "residue", -60)]
    owned = {"close", "residue"}
    assert judge(Decimal(0), Decimal(100), after, owned).reading is Reading.STALE
    assert judge(Decimal(0), Decimal(100), after, owned, seen.seen).reading is Reading.CURRENT


def test_a_read_ahead_of_a_lagging_ledger_is_unexplained_and_proves_nothing() -> None:
    """The residue bought 215 back and the position reads 0, but the ledger does not list that
    fill yet: 0 is also the state between the two sells, which earlier reads ruled out."""
    both = [fill(1, "resend", -215), fill(2, "late", -215)]
    seen = judge(Decimal(-215), Decimal(215), both, {"resend", "late"}).seen
    owned = {"resend", "late", "residue"}
    early = judge(Decimal(0), Decimal(215), both, owned, seen)
    assert early.reading is Reading.UNEXPLAINED
    assert early.seen == seen
    listed = [*both, fill(3, "residue", 215)]
    assert judge(Decimal(0), Decimal(215), listed, owned, seen).reading is Reading.CURRENT


def test_a_read_of_the_account_that_held_a_later_fill_holds_an_earlier_one_elsewhere() -> None:
    """Short 80; the desk bought 50 just before the plan read -30: 20 long, or -30 as read.
    Nothing of the job's filled here, but the listing was proven (on another instrument) to
    hold a fill made after the desk's: -30 is the position now."""
    desk = [Fill("e1", "desk", Decimal(50), T0)]
    assert judge(Decimal(-30), Decimal(-30), desk, set()).reading is Reading.STALE
    later = T0 + timedelta(seconds=1)
    held = judge(Decimal(-30), Decimal(-30), desk, set(), Seen(), later)
    assert held.reading is Reading.CURRENT
    assert held.holds_until == T0
    earlier = T0 - timedelta(seconds=1)
    assert judge(Decimal(-30), Decimal(-30), desk, set(), Seen(), earlier).reading is (
        Reading.STALE
    )


def test_a_proof_that_explains_nothing_any_more_is_dropped() -> None:
    fills = [fill(1, "ours", -100)]
    wrong = Seen(frozenset({"nowhere"}), "e1")
    assert judge(Decimal(0), Decimal(100), fills, {"ours"}, wrong).reading is Reading.CURRENT


def test_a_fill_before_the_plans_read_may_or_may_not_be_in_it() -> None:
    """A desk sold 40 just before the plan read 100 (a lagging listing, or not): the job sold 60."""
    fills = [fill(1, "desk", -40), fill(2, "ours", -60)]
    assert judge(Decimal(0), Decimal(100), fills, {"ours"}).reading is Reading.CURRENT
    assert judge(Decimal(40), Decimal(100), fills, {"ours"}).reading is Reading.CURRENT
    assert judge(Decimal(60), Decimal(100), fills, {"ours"}).reading is Reading.STALE


def test_anothers_fill_after_the_jobs_own_is_counted_never_assumed_in_the_plan() -> None:
    fills = [fill(1, "ours", -60), fill(2, "desk", -40)]
    assert judge(Decimal(0), Decimal(100), fills, {"ours"}).reading is Reading.CURRENT
    assert judge(Decimal(40), Decimal(100), fills, {"ours"}).reading is Reading.STALE
    assert judge(Decimal(-40), Decimal(100), fills, {"ours"}).reading is Reading.UNEXPLAINED


def test_without_fills_the_plans_read_is_the_position() -> None:
    assert judge(Decimal(100), Decimal(100), [], set()).reading is Reading.CURRENT
    assert judge(Decimal(90), Decimal(100), [], set()).reading is Reading.UNEXPLAINED


def test_an_earlier_runs_fills_up_to_what_this_run_first_read_are_in_the_plan() -> None:
    """An adopted limit had filled 50 when the rerun read it (30 + 20), then filled 40 more."""
    fills = [
        fill(1, "limit", -30),
        fill(2, "desk", 10),
        fill(3, "limit", -20),
        fill(4, "limit", -40),
    ]
    kept = held_by_plan(fills, {"limit"}, Decimal(-50))
    assert kept == [fill(2, "desk", 10), fill(4, "limit", -40)]
    split = held_by_plan([fill(1, "limit", -80)], {"limit"}, Decimal(-50))
    assert split == [fill(1, "limit", -30)]
    # The plan read 250 after the first 50; the rest sold 40 since: 210 is current
    after = held_by_plan([fill(1, "limit", -50), fill(2, "limit", -40)], {"limit"}, Decimal(-50))
    assert judge(Decimal(210), Decimal(250), after, {"limit"}).reading is Reading.CURRENT
    # A desk's sale instead, that the plan's read may not hold yet: read again
    desk = [fill(1, "desk", -50)]
    assert judge(Decimal(50), Decimal(50), desk, set()).reading is Reading.STALE


@pytest.mark.parametrize(
    ("position", "fills", "size"),
    [
        (100, [], 100),
        (100, [-40], 60),  # the read may not hold the desk's sale: never sell the 40 again
        (100, [40], 100),  # a buy the read may not hold: selling 100 cannot cross zero
        (-50, [20, -5], -35),  # both unseen: -35; only the last: -55; none: -50
        (100, [-100], 0),  # it may be flat already: nothing sent, following decides
        (100, [-150, 50], 0),
    ],
)
def test_a_first_order_is_never_larger_than_any_reading_of_the_ledger_leaves(
    position: int, fills: list[int], size: int
) -> None:
    ledger = [fill(n, f"o{n}", q) for n, q in enumerate(fills)]
    assert safe_size(Decimal(position), ledger) == Decimal(size)


def test_an_unknown_order_is_a_late_close_only_after_an_unanswered_close_on_a_closing_side() -> (
    None
):
    order = Order(
        id="x",
        client_order_id="close-position-9",
        account_id=1,
        side="SELL",
        quantity=Decimal(100),
        order_type="MARKET",
        status="FILLED",
        filled_quantity=Decimal(100),
        created_at=T0,
    )
    assert is_late_close(order, sides={"SELL"}, unanswered=True)
    assert not is_late_close(order, sides={"SELL"}, unanswered=False)
    assert not is_late_close(order, sides={"BUY"}, unanswered=True)
    limit = order.model_copy(update={"order_type": "LIMIT"})
    assert not is_late_close(limit, sides={"SELL"}, unanswered=True)


def test_an_earlier_runs_fill_between_the_plan_and_its_look_is_not_taken_for_the_plans() -> None:
    """A rerun planned -10 while the earlier run's buy still worked; it filled before the rerun
    looked and found it (filled 10 then). Read 0: flat, though the plan did not hold that fill."""
    from worker.closing.books import Books

    fill_ = Execution(
        id="e1",
        order_id="earlier",
        side="BUY",
        quantity=Decimal(10),
        transaction_time=T0,
        instrument_id=IID,
    )
    books = Books(Decimal(-10), frozenset({"earlier"}), Decimal(10))
    assert books.current(Decimal(0), [fill_], IID, {"earlier"}).reading is Reading.CURRENT
    # Read -10, it is taken for held by the plan (what the ledger cannot tell: safety.md)
    held = Books(Decimal(-10), frozenset({"earlier"}), Decimal(10))
    assert held.current(Decimal(-10), [fill_], IID, {"earlier"}).reading is Reading.CURRENT
    # A takeover confirmed the plan at one point, where the buy had filled nothing yet: -10 is a
    # read behind the ledger, never one to size a residue from
    confirmed = Books(Decimal(-10), frozenset({"earlier"}), Decimal(0), confirmed=True)
    assert confirmed.current(Decimal(-10), [fill_], IID, {"earlier"}).reading is Reading.STALE
    assert confirmed.current(Decimal(0), [fill_], IID, {"earlier"}).reading is Reading.CURRENT


def test_an_earlier_runs_close_found_done_by_following_counts_in_the_plans_read() -> None:
    """close_position rerun: the killed run's BUY 10 filled 5 and ended as the rerun planned -5;
    the rerun's BUY 5 filled. Following finds the earlier close by its fill (read by id) after
    its own: told that it is an earlier run's, the books read 0 as flat (taken for the run's
    own, the plan could hold none of its fills, and 0 would be stale for ever)."""
    from types import SimpleNamespace

    from worker.closing.books import Books, of_earlier_run
    from worker.closing.target import Target
    from worker.results import TargetResult

    def execution_of(n: int, order: str) -> Execution:
        at = T0 + timedelta(seconds=n)
        return Execution(
            id=f"e{n}", order_id=order, side="BUY", quantity=Decimal(5), transaction_time=at,
            instrument_id=IID,
        )  # fmt: skip

    fills = [execution_of(2, "mine"), execution_of(1, "killed")]  # newest first
    earlier = Order(
        id="killed", client_order_id="close-position-1", account_id=7, side="BUY",
        quantity=Decimal(10), order_type="MARKET", status="CANCELED",
        filled_quantity=Decimal(5), created_at=T0,
    )  # fmt: skip
    taken_for_own = Books(Decimal(-5))
    own = {"mine", "killed"}
    assert taken_for_own.current(Decimal(0), fills, IID, own).reading is Reading.STALE
    books = Books(Decimal(-5))
    books.found_earlier(earlier)
    books.found_earlier(earlier)  # (found again by a later round: counted once)
    assert books.current(Decimal(0), fills, IID, own).reading is Reading.CURRENT
    # -5 is a read behind the run's own fill, whether the plan held that fill or not
    behind = Books(Decimal(-5))
    behind.found_earlier(earlier)
    assert behind.current(Decimal(-5), fills, IID, own).reading is Reading.STALE
    # Proof that it is an earlier run's: an earlier run sent a close for the position, and
    # none of this run's closes for it went unanswered (close_position only).
    target = Target(7, "A", IID, "A", "EQUITY", Decimal(-5), Decimal(-500), False)
    key = {(7, IID.lower()): object()}
    close_position = SimpleNamespace(idempotent=False)
    result = TargetResult(7, "A", IID, "A")
    assert of_earlier_run(close_position, key, target, result)
    assert not of_earlier_run(close_position, {}, target, result)
    assert not of_earlier_run(SimpleNamespace(idempotent=True), key, target, result)
    result.unanswered = 1
    assert not of_earlier_run(close_position, key, target, result)
