"""The one place an outcome is set (`settle`), and the price of what closed it."""

from __future__ import annotations

from decimal import Decimal

from worker.closing.target.value import Next
from worker.money import money
from worker.observe import events
from worker.results import Outcome, TargetResult


def settle(
    result: TargetResult, outcome: Outcome, error: str | None, *, why: str | None = None
) -> Next:
    """The one place an outcome is set; `why`: said as `target_settled` (the one emitter).
    A target whose closing orders filled is priced here, and says so (`target_cost`)."""
    result.outcome = outcome
    result.error = error
    _price(result)
    if why is not None:
        events.target_settled(
            account_id=result.account_id,
            instrument=result.instrument,
            outcome=str(outcome),
            why=why,
            prices=result.price_fields(),
        )
    if result.filled_quantity is not None:
        events.target_cost(
            account_id=result.account_id,
            instrument=result.instrument,
            outcome=str(outcome),
            prices=result.price_fields(),
        )
    return Next.SETTLED


_PRICE_PLACES = Decimal("0.000001")
_BPS_PLACES = Decimal("0.01")


def _price(result: TargetResult) -> None:
    """The volume-weighted fill of the orders that closed it (its closing side's filled
    orders), and what that cost against the arrival midpoint: (mid - avg) x qty for a sell,
    (avg - mid) x qty for a buy, each times the contract multiplier (`worker.money`), so
    positive is money given up; bps of mid x qty. Left None without fills, the average (and
    cost) None when a filled order has no price, and the cost None when the multiplier is not
    known."""
    closing = _CLOSING_SIDES.get(result.side or "")
    filled = [
        o
        for o in result.orders
        if Decimal(o.filled_quantity) != 0 and (closing is None or o.side == closing)
    ]
    if not filled:
        return
    quantity = sum((abs(Decimal(o.filled_quantity)) for o in filled), Decimal(0))
    result.filled_quantity = str(quantity)
    if any(o.average_fill_price is None for o in filled):
        return
    paid = sum(
        (abs(Decimal(o.filled_quantity)) * Decimal(o.average_fill_price or 0) for o in filled),
        Decimal(0),
    )
    result.average_fill_price = format((paid / quantity).quantize(_PRICE_PLACES).normalize(), "f")
    mid = result.arrival.midpoint if result.arrival is not None else None
    if mid is None or not mid:
        return
    # Per unit of price: (mid - avg) x qty, as money once through the multiplier.
    given_up = mid * quantity - paid if filled[0].side == "SELL" else paid - mid * quantity
    cost = money(given_up, result.multiplier)
    if cost is None:
        return
    result.cost = format(cost, "f")
    result.cost_bps = str((given_up / (mid * quantity) * 10_000).quantize(_BPS_PLACES))


_CLOSING_SIDES = {"LONG": "SELL", "SHORT": "BUY"}
