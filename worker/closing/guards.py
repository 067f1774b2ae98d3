"""Guards before a blind market order: policy only, on the quote read before the first close.

A guard holds a target back (outcome `guarded`, nothing sent) when the market it would be sent
into says a market order is blind: no two-sided quote (halted, or no market), a quote older than
MAX_QUOTE_AGE_S, a spread wider than MAX_SPREAD_BPS, or a position worth more than MAX_NOTIONAL
(quantity x price x the contract multiplier, `worker.money`); with CLOSE_STYLE=protected, no
two-sided quote to price its limit (not even one that was read). An option whose multiplier could
not be learned is held too: what it is worth, and so every guard on money, would be a guess.
A quote that could not be read at all cannot be judged: that target has no arrival price and is
not held (docs/prices.md says why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from worker.closing.target import Target
from worker.money import value
from worker.results import Arrival


@dataclass(frozen=True, slots=True)
class Guards:
    require_quote: bool = True
    max_quote_age_s: float | None = None
    max_spread_bps: float | None = 500.0
    max_notional: Decimal | None = None
    # CLOSE_STYLE=protected: a limit is priced from the arrival quote, so a target without a
    # two-sided one (not read, halted, one-sided) is held; --force sends it at market.
    protected: bool = False
    # max_spread_bps as the Decimal a spread is compared with (once, not once per target).
    spread_limit: Decimal | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limit = None if self.max_spread_bps is None else Decimal(str(self.max_spread_bps))
        object.__setattr__(self, "spread_limit", limit)


def held_because(target: Target, guards: Guards, *, quote_read: bool) -> str | None:
    """Why this target must not be sent as a market order, or None. `quote_read`: its
    instrument's snapshot was answered (with or without a quote)."""
    if target.multiplier is None:
        return (
            f"the contract multiplier of {target.symbol} ({target.instrument_type}) could not be"
            " learned from the API, so its value, MAX_NOTIONAL and cost cannot be judged"
        )
    quote = target.arrival
    if quote_read and guards.require_quote:
        if quote is None:
            return f"no quote for {target.symbol} (halted, or no market): REQUIRE_QUOTE"
        if quote.bid is None or quote.ask is None:
            side = "bid" if quote.bid is None else "ask"
            return (
                f"one-sided quote for {target.symbol} (no {side}; bid {_show(quote.bid)},"
                f" ask {_show(quote.ask)}): REQUIRE_QUOTE"
            )
    if guards.protected and (quote is None or quote.bid is None or quote.ask is None):
        read = "no quote was read" if not quote_read else "the quote is missing or one-sided"
        return (
            f"no two-sided arrival quote for {target.symbol} to price its protected limit"
            f" ({read}): CLOSE_STYLE=protected; --force sends it at market"
        )
    if quote is not None:
        why = _quote_problem(target.symbol, quote, guards)
        if why is not None:
            return why
    if guards.max_notional is not None:
        notional = notional_of(target)
        if notional is not None and notional > guards.max_notional:
            return (
                f"notional {notional:.2f} of {target.symbol} ({_units(target)}) is above"
                f" MAX_NOTIONAL {guards.max_notional}"
            )
    return None


def notional_of(target: Target) -> Decimal | None:
    """What the position is worth: at the arrival midpoint (x its multiplier) when quoted,
    else its market value (the API's, which counts the multiplier); None when the multiplier
    is not known."""
    mid = target.arrival.midpoint if target.arrival is not None else None
    if mid:
        return value(abs(target.quantity), mid, target.multiplier)
    return abs(target.market_value)


def _units(target: Target) -> str:
    if target.multiplier == 1:
        return f"{target.quantity} shares"
    return f"{target.quantity} contracts x {target.multiplier:f}"


def _quote_problem(symbol: str, quote: Arrival, guards: Guards) -> str | None:
    if (
        guards.max_quote_age_s is not None
        and quote.age_s is not None
        and quote.age_s > guards.max_quote_age_s
    ):
        return (
            f"quote for {symbol} is {quote.age_s:.1f}s old (bid {_show(quote.bid)}, ask"
            f" {_show(quote.ask)}), older than MAX_QUOTE_AGE_S {guards.max_quote_age_s:g}"
        )
    spread = quote.spread_bps
    if guards.spread_limit is not None and spread is not None and spread > guards.spread_limit:
        return (
            f"spread of {symbol} is {spread:.1f} bps (bid {quote.bid}, ask {quote.ask}), wider"
            f" than MAX_SPREAD_BPS {guards.max_spread_bps:g}"
        )
    return None


def _show(price: Decimal | None) -> str:
    return "none" if price is None else str(price)
