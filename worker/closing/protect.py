"""CLOSE_STYLE=protected: re-price each protected LIMIT order within a request budget, and
escalate it at its deadline, whatever the number of positions.

The first close of a protected target is a LIMIT order COLLAR_BPS past its arrival quote
(`worker.closing.modes`). From then on one loop, never waiting on a request itself:

    at DEADLINE_S after the first send (--at-close: early enough that every escalation's
    requests at RATE_LIMIT end before the MOC cutoff)
        the target's later closes go at market (`Sender.at_market`), and its working limits
        are cancelled, an account's together (`worker.closing.escalate`: by instrument where
        only the job's orders work there, by id otherwise); a cancel still read working a
        while after its answer is sent again. Nothing is sent here: following
        (`worker.closing.follow`) sends the rest as its residue close, and only once it reads
        the limit final and the position explained by its fills, under the next generation's
        client id, journaled first; the rests one poll finds go out batched. So no position
        ever has two working orders of the job, and what a partial fill left is what goes.
    every REPRICE_S, one round at a time (a round still running is not doubled)
        the limits whose re-price k came are ranked by unfilled notional x distance from the
        touch; a limit a re-price cannot move (at its bound, or at the price it would get) is
        left alone. Under RATE_LIMIT the round sends at most `schedule.reprice_budget`
        replaces: a share of the rate over the round, less what the escalations due meanwhile
        need. One snapshot request per SNAPSHOT_BATCH chosen instruments (unreadable or
        one-sided: the last touch known, else the arrival quote), then the replaces, all at
        once within the pace, never past the arrival quote's widest collar. A replace never
        creates an order: one whose outcome is unknown is left (the next round replaces
        again); one refused (400/404) found its order no longer open, which following reads.

The pace serves cancels and order entry before replaces, and replaces before reads
(`worker.api.pace`). Only reads of the results here: outcomes are following's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from worker.api.client import SNAPSHOT_BATCH, TradingApi
from worker.api.models import WORKING_STATUSES
from worker.api.reads import Reader
from worker.closing.collar import Collar, limit_price, tick_of, within_collar
from worker.closing.escalate import CHASE_S, Escalator, Limit
from worker.closing.modes import Sender
from worker.closing.schedule import (
    ESCALATION_SLACK_S,
    escalation_requests,
    reprice_budget,
    seconds_at,
)
from worker.closing.target import Target
from worker.errors import ApiError, NotFound, Rejected, Unauthorized
from worker.output import events
from worker.output.results import OrderSummary, TargetResult

LOOP_S = 0.25  # the loop's longest sleep: deadlines and lingering cancels are looked at this often
GROUP_S = 1.0  # an account's limits due within this of one that is due escalate with it

Quote = tuple[Decimal, Decimal]


@dataclass(slots=True)
class _Protected:
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
    p: _Protected
    order: OrderSummary
    k: int
    score: Decimal


class Protector:
    """Re-prices and escalates the protected targets handed over (`watch`)."""

    def __init__(
        self,
        api: TradingApi,
        sender: Sender,
        collar: Collar,
        *,
        reader: Reader,
        others_working: Callable[[int, str], bool],
        poke: Callable[[int], None] | None = None,
        stopping: asyncio.Event,
        server_now: Callable[[], datetime],
        moc_cutoff: datetime | None = None,
        rate_limit: float = 0.0,
        batch_size: int = 100,
        slack_s: float = ESCALATION_SLACK_S,
        chase_s: float = CHASE_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._api = api
        self._sender = sender
        self._collar = collar
        self._stopping = stopping
        self._rate = rate_limit
        self._batch_size = batch_size
        self._slack_s = slack_s
        self._clock = clock
        self._sleep = sleep
        self._poke = poke
        self._escalator = Escalator(
            api, reader, others_working=others_working, clock=clock, chase_s=chase_s
        )
        self._watched: dict[tuple[int, str], _Protected] = {}
        self._cutoff: float | None = None  # monotonic: the MOC cutoff
        if moc_cutoff is not None:
            self._cutoff = clock() + (moc_cutoff - server_now()).total_seconds()
        self._touch: dict[str, Quote] = {}  # the last two-sided quote read, by instrument id
        self._cancelling: set[str] = set()  # limits whose cancel is in flight
        self._round: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._all_sent = asyncio.Event()
        self._more = asyncio.Event()  # a target was handed over

    def watch(self, target: Target, result: TargetResult) -> None:
        """A protected target whose first close was sent (or found, or adopted)."""
        key = (target.account_id, target.instrument_id.lower())
        if key not in self._watched:
            now = self._clock()
            deadline = now + self._collar.deadline_s
            self._watched[key] = _Protected(
                target, result, now, deadline, now + self._collar.reprice_s
            )
            self._more.set()

    def all_sent(self) -> None:
        """The fan-out is over: once every watched target has its outcome, `run` ends."""
        self._all_sent.set()
        self._more.set()

    async def run(self) -> None:
        """Until every watched target has an outcome and the fan-out is over, or a stop."""
        try:
            while not self._stopping.is_set():
                self._raise_failures()
                self._drop_settled()
                if not self._watched:
                    if self._all_sent.is_set():
                        return
                    self._more.clear()
                    await self._more.wait()
                    continue
                now = self._clock()
                self._escalate(now)
                if self._round is None or self._round.done():
                    due = [
                        p
                        for p in self._watched.values()
                        if p.escalated is None and p.next_reprice <= now
                    ]
                    if due:
                        self._round = self._spawn(self._reprice_round(due, now))
                await self._sleep(self._wait(now))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        return task

    def _raise_failures(self) -> None:
        """A fault of a round or a cancel (credentials, the journal's lock) stops the loop."""
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # checked just above

    def _wait(self, now: float) -> float:
        """Until the next deadline or re-price, LOOP_S at most (lingering cancels)."""
        nearest = LOOP_S
        escalation_s = self._escalation_s()
        lead = self._lead(escalation_s)
        for p in self._watched.values():
            if p.escalated is None:
                nearest = min(nearest, p.deadline - lead - now, p.next_reprice - now)
        moc = self._moc_at(escalation_s)
        if moc is not None:
            nearest = min(nearest, moc - now)
        return max(0.005, nearest)

    def _drop_settled(self) -> None:
        for key in [k for k, p in self._watched.items() if p.result.outcome is not None]:
            del self._watched[key]

    def _escalation_s(self) -> float:
        """How long escalating every limit not yet escalated takes at RATE_LIMIT."""
        counts: dict[int, int] = {}
        for p in self._watched.values():
            if p.escalated is None:
                counts[p.target.account_id] = counts.get(p.target.account_id, 0) + 1
        return seconds_at(escalation_requests(counts.values(), self._batch_size), self._rate)

    def _moc_at(self, escalation_s: float) -> float | None:
        """--at-close: when escalation must begin so that every rest is accepted before the
        cutoff: the requests escalating what still rests take at RATE_LIMIT, and the slack
        (round trips, following's pause), one REPRICE_S at least."""
        if self._cutoff is None:
            return None
        return self._cutoff - max(self._collar.reprice_s, escalation_s + self._slack_s)

    def _lead(self, escalation_s: float) -> float:
        """How long before its deadline a limit is escalated: the time the escalations' requests
        take at RATE_LIMIT (the rests then go at about the deadline, not that much after it),
        half of DEADLINE_S at most."""
        return min(escalation_s, self._collar.deadline_s / 2)

    def _escalate(self, now: float) -> None:
        """Mark what reached its deadline, and send the cancels that are due, per account."""
        escalation_s = self._escalation_s()
        moc = self._moc_at(escalation_s)
        lead = self._lead(escalation_s)
        by_account: dict[int, list[Limit]] = {}
        # An account's limits escalate together when their deadlines are near (they went out
        # in one batch): one cancel for all of them, and their rests in one batch.
        due = {
            p.target.account_id
            for p in self._watched.values()
            if p.escalated is None and now >= p.deadline - lead
        }
        for p in self._watched.values():
            if p.escalated is None:
                if moc is not None and now >= moc:
                    p.escalated = "moc_cutoff"
                elif now >= p.deadline - lead - (GROUP_S if p.target.account_id in due else 0):
                    p.escalated = "deadline"
                else:
                    continue
                self._sender.at_market(p.target)  # before any cancel: the rest goes at market
            for order in _working_limits(p.result):
                limit = p.limits.get(order.id)
                if limit is None:
                    limit = p.limits[order.id] = Limit(p.target, order, p.escalated)
                if order.id in self._cancelling or not self._escalator.due(
                    limit, order.status, now
                ):
                    continue
                by_account.setdefault(p.target.account_id, []).append(limit)
        for account_id, limits in by_account.items():
            self._cancelling.update(x.order.id for x in limits)
            self._spawn(self._cancel(account_id, limits))

    async def _cancel(self, account_id: int, limits: list[Limit]) -> None:
        try:
            await self._escalator.cancel(account_id, limits)
        finally:
            self._cancelling.difference_update(x.order.id for x in limits)
        if self._poke is not None:
            self._poke(account_id)  # following reads them final now, and sends the rests

    def _reserved(self, now: float) -> int:
        """Requests the escalations due within the next round need."""
        escalation_s = self._escalation_s()
        moc = self._moc_at(escalation_s)
        until = now + self._collar.reprice_s + self._lead(escalation_s)
        counts: dict[int, int] = {}
        for p in self._watched.values():
            if p.escalated is None and (p.deadline <= until or (moc is not None and moc <= until)):
                counts[p.target.account_id] = counts.get(p.target.account_id, 0) + 1
        return escalation_requests(counts.values(), self._batch_size)

    async def _reprice_round(self, due: list[_Protected], now: float) -> None:
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
        quotes = math.ceil(len({c.p.target.instrument_id for c in candidates}) / SNAPSHOT_BATCH)
        budget = reprice_budget(self._rate, self._collar.reprice_s, self._reserved(now), quotes)
        if budget is not None and len(candidates) > budget:
            candidates.sort(key=lambda c: c.score, reverse=True)
            candidates = candidates[:budget]
        if not candidates:
            return
        await self._read_touch(c.p.target for c in candidates)
        await asyncio.gather(*(self._replace(c) for c in candidates))

    def _worth_it(self, p: _Protected, k: int) -> list[_Candidate]:
        """The target's working limits that re-price k would move, each scored by its unfilled
        notional x its distance from the touch (as last known)."""
        out = []
        for order in _working_limits(p.result):
            if order.status == "PENDING_CANCEL":
                continue
            touch = self._quote(p.target)
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
        self, p: _Protected, order: OrderSummary, k: int, touch: Quote | None
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
                events.quotes_unavailable(instruments=len(ids[start:]), error=str(err))
                continue
            for snapshot in reply.data:
                q = snapshot.last_quote
                if q is not None and q.bid is not None and q.ask is not None:
                    self._touch[snapshot.instrument_id.lower()] = (q.bid, q.ask)

    async def _replace(self, c: _Candidate) -> None:
        p, order = c.p, c.order
        read = self._touch.get(p.target.instrument_id.lower())
        price = self._price(p, order, c.k, self._quote(p.target))
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
            collar_bps=round(self._collar.bps_at(c.k), 2),
            reprice=c.k,
            quote="touch" if read is not None else "arrival",
            request_id=reply.request_id,
        )


def _working_limits(result: TargetResult) -> list[OrderSummary]:
    """The job's LIMIT orders of the target that can still fill, as following last read them."""
    return [o for o in result.orders if o.order_type == "LIMIT" and o.status in WORKING_STATUSES]
