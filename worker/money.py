"""Where a quantity becomes money: quantity x price x the instrument's contract multiplier.

Quotes and fills are per share (per unit of the underlying), positions and orders count
contracts, so a put quoted 27.04 held 1 contract is worth 2,704.00 under the standard multiplier
100. Every notional, guard, cost and total the worker computes goes through `value` (or
`money`, for a sum already in price units); nothing else multiplies a quantity by a price. The
multiplier is the API's (`OptionsContract.multiplier`, read by `worker.run.multipliers`); None
means it could not be learned, and then neither can the money: such a figure is None, never a
guess.
"""

from __future__ import annotations

from decimal import Decimal

ONE = Decimal(1)
# Instrument types whose quantity is already units of the price: a share of stock, a unit of
# cash. Every other type (OPTION, and any the API adds) is priced per unit of its underlying,
# so its multiplier is asked of the API.
PER_UNIT_TYPES = frozenset({"COMMON_STOCK", "CASH"})


def needs_multiplier(instrument_type: str) -> bool:
    """True when a position of this type is priced per unit of its underlying: what it is
    worth needs the multiplier the API gives its contract."""
    return instrument_type.upper() not in PER_UNIT_TYPES


def value(quantity: Decimal, price: Decimal, multiplier: Decimal | None) -> Decimal | None:
    """What `quantity` (its sign kept) at `price` is worth: None when the multiplier is not
    known."""
    return money(quantity * price, multiplier)


def money(in_price_units: Decimal, multiplier: Decimal | None) -> Decimal | None:
    """An amount in price units (quantity x price, or a sum of such) as money: None when the
    multiplier is not known."""
    return None if multiplier is None else in_price_units * multiplier


def multiplier_text(multiplier: Decimal | None) -> str | None:
    """As the report and events show it: "100", "1", None when not known."""
    if multiplier is ONE:  # every share's, in every target's events: no formatting
        return "1"
    if multiplier is None:
        return None
    return format(multiplier.normalize(), "f")
