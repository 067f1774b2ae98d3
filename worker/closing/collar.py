"""The protected style's prices (CLOSE_STYLE=protected): pure arithmetic, no requests.

A protected close is a LIMIT order a collar past the touch: a sell at most `collar_bps` below the
bid, a buy at most that far above the ask. Rounding goes toward the touch, so the limit never
gives up more than the collar: a sell limit rounds up to the tick, a buy limit down. The tick is a
cent, or 0.0001 below one dollar (Reg NMS sub-penny rule).

The collar widens linearly from COLLAR_BPS at the first send to COLLAR_MAX_BPS at the last
re-price that fits before DEADLINE_S, priced from the touch as it is then, but never past the
arrival quote's widest collar (COLLAR_MAX_BPS from the arrival bid or ask): on a thin book the
touch walks down as the limit fills, and a limit that followed it would walk the book as a market
order does, only slower. At DEADLINE_S the rest goes at market.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

CENT = Decimal("0.01")
SUB_PENNY = Decimal("0.0001")
_BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True)
class Collar:
    """The protected style's settings."""

    first_bps: float  # COLLAR_BPS
    max_bps: float  # COLLAR_MAX_BPS
    reprice_s: float  # REPRICE_S
    deadline_s: float  # DEADLINE_S

    @property
    def reprices(self) -> int:
        """Re-prices that fall before the deadline: at REPRICE_S, 2 x REPRICE_S, ... (the
        deadline's own tick escalates instead)."""
        return max(0, math.ceil(self.deadline_s / self.reprice_s - 1e-9) - 1)

    def bps_at(self, k: int) -> float:
        """The collar of re-price `k` (0: the first send): linear to COLLAR_MAX_BPS, reached at
        the last re-price."""
        n = self.reprices
        if k <= 0 or n == 0:
            return self.first_bps
        step = min(k, n) / n
        return self.first_bps + (self.max_bps - self.first_bps) * step


def tick_of(price: Decimal) -> Decimal:
    return CENT if price >= 1 else SUB_PENNY


def limit_price(side: str, bid: Decimal | None, ask: Decimal | None, bps: float) -> Decimal | None:
    """The limit of a `side` ("SELL"/"BUY") order `bps` past the touch; None without a
    two-sided quote (a one-sided or missing quote prices nothing)."""
    if bid is None or ask is None or bid <= 0 or ask <= 0 or ask < bid:
        return None
    collar = Decimal(str(bps)) / _BPS
    if side == "SELL":
        raw = bid * (1 - collar)
        tick = tick_of(raw)
        return max(tick, raw.quantize(tick, ROUND_CEILING))
    raw = ask * (1 + collar)
    tick = tick_of(raw)
    return raw.quantize(tick, ROUND_FLOOR)


def within_collar(side: str, price: Decimal, bound: Decimal | None) -> Decimal:
    """`price`, but never past `bound` (the arrival quote's widest collar): re-pricing follows
    the touch, and a touch that walked down a thin book (or ran away) must not take the limit
    with it; past the bound the rest waits for the deadline, then goes at market."""
    if bound is None:
        return price
    return max(price, bound) if side == "SELL" else min(price, bound)
