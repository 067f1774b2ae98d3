"""`extra_orders`: more than one closing order filled, counted on the sides the worker closed
the position on (the plan's closing side and its own orders' sides)."""

from __future__ import annotations

from worker.results import OrderSummary, TargetResult


def _result(*orders: OrderSummary) -> TargetResult:
    return TargetResult(27001, "P1", side="LONG", quantity="400", orders=list(orders))


def test_a_double_found_by_look_ups_is_flagged_beside_the_close_back_that_undid_it() -> None:
    """Long 400; the first close's first two attempts both had no reply, and were applied
    (held at the gateway): two SELL 400s, found by look-ups. The third attempt, sized by the
    server from the -400 they left, is the job's only answered order: a BUY."""
    result = _result(
        OrderSummary("c3", "BUY", "400", "FILLED", "400", own=True),
        OrderSummary("c1", "SELL", "400", "FILLED", "400", own=False),
        OrderSummary("c2", "SELL", "400", "FILLED", "400", own=False),
    )
    assert result.extra_orders is True


def test_a_desks_order_on_the_other_side_is_no_double() -> None:
    result = _result(
        OrderSummary("c1", "SELL", "400", "FILLED", "400", own=True),
        OrderSummary("desk", "BUY", "40", "FILLED", "40", own=False),
    )
    assert result.extra_orders is False


def test_one_close_found_by_a_look_up_is_no_double() -> None:
    result = _result(
        OrderSummary("c1", "SELL", "400", "FILLED", "400", own=False),
        OrderSummary("c2", "SELL", "400", "CANCELED", "0", own=True),
    )
    assert result.extra_orders is False
