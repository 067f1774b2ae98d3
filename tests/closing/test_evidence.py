"""The policy of following and evidence, decided from listings alone: table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.support import order
from worker.api.models import Order
from worker.closing.evidence import Step, follow_step, is_our_close

IID = "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa"
SINCE = datetime(2025, 10, 3, 14, 0, tzinfo=UTC)


def an_order(
    side: str = "SELL",
    quantity: str = "25",
    status: str = "FILLED",
    *,
    order_type: str = "MARKET",
    created: datetime | None = None,
    order_id: str | None = None,
) -> Order:
    body = order(side, quantity, status)
    body["order_type"] = order_type
    body["created_at"] = (created or SINCE + timedelta(seconds=1)).isoformat()
    if order_id:
        body["id"] = order_id
    return Order.model_validate(body)


#          order                                                 reference  preexisting  ours
EVIDENCE = [
    (an_order(), Decimal(25), set(), True),  # closes the long as sent
    (an_order(status="PENDING_NEW"), Decimal(25), set(), True),  # still working: a close
    (an_order(order_id="desk"), Decimal(25), {"desk"}, False),  # was there before the run
    (an_order(), Decimal(25), None, False),  # no snapshot: nothing is evidence
    (an_order("BUY"), Decimal(25), set(), False),  # the plan's side was stale? not ours
    (an_order(quantity="10"), Decimal(25), set(), False),  # another participant's reduction
    (an_order(order_type="LIMIT"), Decimal(25), set(), False),  # a close is a market order
    (an_order(status="REJECTED"), Decimal(25), set(), False),  # dead: it closed nothing
    # Stamped 90 s before the attempt (order timestamps behind the server's clock): not in the
    # snapshot, so identity says it is new; its timestamp decides nothing.
    (an_order(created=SINCE - timedelta(seconds=90)), Decimal(25), set(), True),
    (an_order("BUY", "40"), Decimal(-40), set(), True),  # flipped to short: closed as it is
    (an_order("SELL", "25"), Decimal(0), set(), False),  # nothing to close, nothing is ours
]


@pytest.mark.parametrize(("found", "reference", "preexisting", "ours"), EVIDENCE)
def test_an_order_is_our_close_only_with_evidence(
    found: Order, reference: Decimal, preexisting: set[str] | None, ours: bool
) -> None:
    assert (
        is_our_close(
            found,
            instrument_id=IID,
            reference=reference,
            preexisting=preexisting,
        )
        is ours
    )


W, F, C, R, X = "PENDING_NEW", "FILLED", "CANCELED", "REJECTED", "EXPIRED"
#        position  order statuses  residue sent  may send  step
STEPS = [
    (Decimal(0), [F], 0, True, Step.FLAT),
    (Decimal(0), [], 0, True, Step.FLAT),
    (Decimal(0), [W], 0, True, Step.WAIT),  # an order can still fill and reopen it
    (Decimal(0), [F, W], 0, True, Step.WAIT),
    (Decimal(50), [W], 0, True, Step.WAIT),  # never a residue close while one can fill
    (Decimal(50), [C], 0, True, Step.RESIDUE),  # partial fill, rest canceled
    (Decimal(50), [X], 1, True, Step.RESIDUE),  # rest expired, one residue left
    (Decimal(25), [R], 0, True, Step.RESIDUE),  # rejected after acceptance
    (Decimal(-40), [F, F], 0, True, Step.RESIDUE),  # flipped by someone: closed as it is
    (Decimal(50), [C], 2, True, Step.STUCK),  # residue closes used up
    (Decimal(50), [C], 0, False, Step.WAIT),  # stopping, or settling after an unknown
]


@pytest.mark.parametrize(("position", "statuses", "sent", "may_send", "step"), STEPS)
def test_following_decides_from_the_position_and_every_order_on_the_instrument(
    position: Decimal, statuses: list[str], sent: int, may_send: bool, step: Step
) -> None:
    orders = [an_order(status=s) for s in statuses]
    assert (
        follow_step(position, orders, residue_sent=sent, max_residue=2, may_send=may_send) is step
    )
