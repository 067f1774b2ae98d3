"""CLOSE_STYLE=protected: one re-price round, within a request budget.

The limits whose re-price k came are ranked by unfilled notional x distance from the touch (as
last known); a limit a re-price cannot move (at its bound, or at the price it would get) is left
alone. Under RATE_LIMIT the rounds send at most REPRICE_SHARE of the rate (accrued over time,
so a round shorter than one replace's share carries it over), less what the escalations due
meanwhile need. One snapshot request per
SNAPSHOT_BATCH chosen instruments (unreadable or one-sided: the last touch known, else the
arrival quote), then the replaces, all at once within the pace, never past the arrival quote's
widest collar. A replace never creates an order: one whose outcome is unknown is left (the next
round replaces again); one refused (400/404) found its order no longer open, which following
reads.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from worker.api.client import SNAPSHOT_BATCH, TradingApi
from worker.api.models import WORKING_STATUSES
from worker.closing.collar import Collar, limit_price, tick_of, within_collar
from worker.closing.escalate import Limit
from worker.closing.schedule import REPRICE_SHARE, affordable
from worker.closing.target import Target
from worker.errors import ApiError, NotFound, Rejected, Unauthorized
from worker.observe import events
from worker.results import OrderSummary, TargetResult

Quote = tuple[Decimal, Decimal]


@dataclass(slots=True)
class Protected:
    """A protected target handed over, and where its re-prices and escalation stand."""

    target: Target
    result: TargetResult
    started: float  # monotonic: when the first send was answered (or the order adopted)
    deadline: float  # monotonic: started + DEADLINE_S
    next_reprice: float  # monotonic
    repriced: int = 0  # the last re-price round taken (sent or left alone)
    escalated: str | None = None  # why: "deadline" or "moc_cutoff"
    limits: dict[str, Limit] = field(default_factory=dict)  # escalated limits, by order id
    prices: dict[str, Decimal] = field(default_factory=dict)  # each limit's price, as replaced


@dataclass(slots=True)
class _Candidate:
    p: Protected
    order: OrderSummary
    k: int
    score: Decimal
    collar_k: int = 0  # the re-price whose collar it is priced at: k, or later under a budget

    def __post_init__(self) -> None:
        self.collar_k = self.collar_k or self.k


class Repricer:
    """Sends re-price rounds; keeps the last two-sided quote read per instrument."""

    def __init__(
        self, api: TradingApi, collar: Collar, *, rate_limit: float, stopping: asyncio.Event
    ) -> None:
        self._api = api
        self._collar = collar
        self._rate = rate_limit
        self._stopping = stopping
        self._touch: dict[str, Quote] = {}  # the last two-sided quote read, by instrument id
        self._credit = 0.0  # requests the rounds may still spend (REPRICE_SHARE of the rate)
        self._credit_at: float | None = None

    async def round(self, due: list[Protected], now: float, reserved: int) -> None:
        """Re-price k of each of `due` whose k came, within the round's budget; `reserved`:
        the requests the escalations due meanwhile need."""
        candidates: list[_Candidate] = []
        for p in due:
            k = min(int((now - p.started) / self._collar.reprice_s + 1e-9), self._collar.reprices)
            p.next_reprice = p.started + (k + 1) * self._collar.reprice_s
            if k <= p.repriced:
                continue
            p.repriced = k  # taken now, sent or not: the next round prices k + 1
            candidates.extend(self._worth_it(p, k))
        if not candidates:
            return
        budget = self._allowance(now, reserved, len(candidates))
        if budget is not None and len(candidates) > budget:
            # Re-priced about once in `turns` rounds: each chosen limit goes to the collar it
            # would have reached by its next turn, not one step wider, or the budget spends
            # its few replaces on steps that change nothing on a thin book.
            turns = math.ceil(len(candidates) / max(1, budget))
            candidates.sort(key=lambda c: c.score, reverse=True)
            candidates = candidates[:budget]
            for c in candidates:
                c.collar_k = min(self._collar.reprices, c.k + turns - 1)
        if not candidates:
            return
        if budget is not None:
            self._credit -= len(candidates) + math.ceil(len(candidates) / SNAPSHOT_BATCH)
        await self._read_touch(c.p.target for c in candidates)
        await asyncio.gather(*(self._replace(c) for c in candidates))

    def _allowance(self, now: float, reserved: int, wanted: int) -> int | None:
        """Replaces this round may send: REPRICE_SHARE of RATE_LIMIT accrues as time passes (a
        round too short for one replace carries its share over; at most one REPRICE_S's worth,
        and one request, is kept), less what the escalations due meanwhile need. None: no rate
        limit, no budget."""
        if self._rate <= 0:
            return None
        per_s = self._rate * REPRICE_SHARE
        since = self._collar.reprice_s if self._credit_at is None else now - self._credit_at
        cap = max(1.0, per_s * self._collar.reprice_s)
        self._credit = min(cap, self._credit + per_s * max(0.0, since))
        self._credit_at = now
        return affordable(self._credit - reserved, wanted)

    def _worth_it(self, p: Protected, k: int) -> list[_Candidate]:
        """The target's working limits that re-price k would move, each scored by its unfilled
        notional x its distance from the touch (as last known)."""
        out = []
        touch = self._quote(p.target)
        for order in working_limits(p.result):
            if order.status == "PENDING_CANCEL":
                continue
            price = self._price(p, order, k, touch)
            current = p.prices.get(order.id, order.limit_price_value)
            if price is None or current is None or price == current or touch is None:
                continue  # nothing to price it from, or nothing a re-price can change
            unfilled = Decimal(order.quantity) - Decimal(order.filled_quantity)
            near = touch[0] if order.side.startswith("SELL") else touch[1]
            distance = abs(current - near) + tick_of(current)
            out.append(_Candidate(p, order, k, unfilled * current * distance))
        return out

    def _quote(self, target: Target) -> Quote | None:
        known = self._touch.get(target.instrument_id.lower())
        if known is not None:
            return known
        arrival = target.arrival
        if arrival is None or arrival.bid is None or arrival.ask is None:
            return None
        return (arrival.bid, arrival.ask)

    def _price(
        self, p: Protected, order: OrderSummary, k: int, touch: Quote | None
    ) -> Decimal | None:
        if touch is None:
            return None
        side = "SELL" if order.side.startswith("SELL") else "BUY"
        price = limit_price(side, touch[0], touch[1], self._collar.bps_at(k))
        if price is None:
            return None
        arrival = p.target.arrival
        bound = None
        if arrival is not None:
            bound = limit_price(side, arrival.bid, arrival.ask, self._collar.max_bps)
        return within_collar(side, price, bound)

    async def _read_touch(self, targets: Iterable[Target]) -> None:
        """The two-sided quote now of these instruments, into the touch known. One request per
        SNAPSHOT_BATCH instruments, not retried (the last touch known, or the arrival quote,
        stands in)."""
        ids = list(dict.fromkeys(t.instrument_id.lower() for t in targets))
        for start in range(0, len(ids), SNAPSHOT_BATCH):
            try:
                reply = await self._api.get_snapshots(ids[start : start + SNAPSHOT_BATCH])
            except Unauthorized:
                raise
            except ApiError as err:
                events.quotes_unavailable(
                    instruments=len(ids[start : start + SNAPSHOT_BATCH]), error=str(err)
                )
                continue
            for snapshot in reply.data:
                q = snapshot.last_quote
                if q is not None and q.bid is not None and q.ask is not None:
                    self._touch[snapshot.instrument_id.lower()] = (q.bid, q.ask)

    async def _replace(self, c: _Candidate) -> None:
        p, order = c.p, c.order
        read = self._touch.get(p.target.instrument_id.lower())
        price = self._price(p, order, c.collar_k, self._quote(p.target))
        if price is None or p.prices.get(order.id, order.limit_price_value) == price:
            return
        if p.escalated is not None or order.status not in WORKING_STATUSES:
            return  # escalated, or ended, while the quotes were read
        if self._stopping.is_set():
            return
        try:
            reply = await self._api.replace_order(p.target.account_id, order.id, limit_price=price)
        except Unauthorized:
            raise
        except (NotFound, Rejected):
            return  # no longer open: following reads how it ended
        except ApiError as err:
            # Unknown: it may apply late; the next round replaces again (a replace never
            # creates an order, so nothing can double).
            events.reprice_failed(
                account_id=p.target.account_id,
                instrument=p.target.instrument,
                order_id=order.id,
                limit_price=str(price),
                error=str(err),
                request_id=err.request_id,
            )
            return
        p.prices[order.id] = price
        events.order_repriced(
            account_id=p.target.account_id,
            instrument=p.target.instrument,
            order_id=order.id,
            client_order_id=order.client_order_id,
            limit_price=str(price),
            collar_bps=round(self._collar.bps_at(c.collar_k), 2),
            reprice=c.k,
            quote="touch" if read is not None else "arrival",
            request_id=reply.request_id,
        )


def working_limits(result: TargetResult) -> list[OrderSummary]:
    """The job's LIMIT orders of the target that can still fill, as following last read them."""
    return [o for o in result.orders if o.order_type == "LIMIT" and o.status in WORKING_STATUSES]
