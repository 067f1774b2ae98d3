"""CLOSE_STYLE=protected: re-price each protected LIMIT order, and escalate it at its deadline.

The first close of a protected target is a LIMIT order COLLAR_BPS past its arrival quote
(`worker.closing.modes`). From then on one task ticks:

    every REPRICE_S (re-price k = 1, 2, ... while it fits before DEADLINE_S)
        one snapshot request per SNAPSHOT_BATCH instruments being re-priced (the touch now;
        unreadable or one-sided: the arrival quote), then `replace_order` of each working
        LIMIT order of the job at the collar of tick k (linear to COLLAR_MAX_BPS), never past
        the arrival quote's widest collar; an unchanged price sends nothing. A replace
        never creates an order: one whose outcome is unknown is left, the next tick replaces
        again; one refused (400/404) found its order no longer open, which following reads.
    at DEADLINE_S after the first send (--at-close: one REPRICE_S before the MOC cutoff, at
    the latest)
        the target's later closes go at market (`Sender.at_market`), and each working LIMIT
        order of the job is cancelled by id; a cancel whose outcome is unknown is sent again
        next tick (a cancel is idempotent). Nothing is sent here: following
        (`worker.closing.follow`) sends the rest as its residue close, and only once it reads
        the limit final (no order of the job working) and the position explained by its fills,
        under the next generation's client id, journaled first. So no position ever has two
        working orders of the job, and what a partial fill left is what is escalated.

Only reads of the results here: outcomes are following's (`worker.closing.target`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from worker.api.client import SNAPSHOT_BATCH, TradingApi
from worker.api.models import WORKING_STATUSES
from worker.closing.collar import Collar, limit_price, within_collar
from worker.closing.modes import Sender
from worker.closing.target import Target
from worker.errors import ApiError, NotFound, Rejected, Unauthorized
from worker.observe import events
from worker.results import OrderSummary, TargetResult


@dataclass(slots=True)
class _Protected:
    target: Target
    result: TargetResult
    started: float  # monotonic: when the first send was answered (or the order adopted)
    due: float  # monotonic: its next re-price, or its escalation, or its cancel sent again
    repriced: int = 0  # the last re-price tick done
    escalated: str | None = None  # why: "deadline" or "moc_cutoff"
    cancelled: set[str] = field(default_factory=set)  # limits whose cancel was answered
    told: set[str] = field(default_factory=set)  # limits close_escalated was said for
    prices: dict[str, Decimal] = field(default_factory=dict)  # each limit's price, as replaced


class Protector:
    """Re-prices and escalates the protected targets handed over (`watch`)."""

    def __init__(
        self,
        api: TradingApi,
        sender: Sender,
        collar: Collar,
        *,
        stopping: asyncio.Event,
        server_now: Callable[[], datetime],
        moc_cutoff: datetime | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._api = api
        self._sender = sender
        self._collar = collar
        self._stopping = stopping
        self._clock = clock
        self._sleep = sleep
        self._watched: dict[tuple[int, str], _Protected] = {}
        self._moc_at: float | None = None  # monotonic
        if moc_cutoff is not None:
            left = (moc_cutoff - server_now()).total_seconds()
            self._moc_at = clock() + left - collar.reprice_s
        self._all_sent = asyncio.Event()
        self._more = asyncio.Event()  # a target was handed over

    def watch(self, target: Target, result: TargetResult) -> None:
        """A protected target whose first close was sent (or found, or adopted)."""
        key = (target.account_id, target.instrument_id.lower())
        if key not in self._watched:
            now = self._clock()
            p = _Protected(target, result, now, now)
            p.due = min(now + self._collar.reprice_s, self._escalate_at(p))
            self._watched[key] = p
            self._more.set()

    def all_sent(self) -> None:
        """The fan-out is over: once every watched target has its outcome, `run` ends."""
        self._all_sent.set()
        self._more.set()

    async def run(self) -> None:
        """Tick until every watched target has an outcome and the fan-out is over, or a stop."""
        while not self._stopping.is_set():
            self._drop_settled()
            if not self._watched:
                if self._all_sent.is_set():
                    return
                self._more.clear()
                await self._more.wait()
                continue
            wait = min(p.due for p in self._watched.values()) - self._clock()
            if wait > 0:
                await self._sleep(min(wait, self._collar.reprice_s))
                continue
            await self.tick()

    async def tick(self) -> None:
        """Escalate the targets whose deadline came; re-price those whose next tick came."""
        now = self._clock()
        repricing: list[tuple[_Protected, int]] = []
        for p in list(self._watched.values()):
            if p.result.outcome is not None or p.due > now:
                continue
            if p.escalated is None and now >= self._escalate_at(p):
                moc = self._moc_at is not None and now >= self._moc_at
                p.escalated = "moc_cutoff" if moc else "deadline"
                self._sender.at_market(p.target)  # before any cancel: the rest goes at market
            if p.escalated is not None:
                p.due = now + self._collar.reprice_s  # a cancel left unanswered: again then
                await self._cancel_limits(p)
                continue
            k = min(int((now - p.started) / self._collar.reprice_s + 1e-9), self._collar.reprices)
            p.due = min(p.started + (k + 1) * self._collar.reprice_s, self._escalate_at(p))
            if k > p.repriced and _working_limits(p.result):
                repricing.append((p, k))
        if repricing:
            touch = await self._touch([p.target for p, _ in repricing])
            for p, k in repricing:
                await self._reprice(p, k, touch.get(p.target.instrument_id.lower()))

    def _escalate_at(self, p: _Protected) -> float:
        """DEADLINE_S after the first send; --at-close: one REPRICE_S before the MOC cutoff at
        the latest, so the rest still goes at the close."""
        at = p.started + self._collar.deadline_s
        return at if self._moc_at is None else min(at, self._moc_at)

    def _drop_settled(self) -> None:
        for key in [k for k, p in self._watched.items() if p.result.outcome is not None]:
            del self._watched[key]

    async def _touch(self, targets: list[Target]) -> dict[str, tuple[Decimal, Decimal]]:
        """The two-sided quote now, by instrument id (lower case); left out: not read, or not
        two-sided. One request per SNAPSHOT_BATCH instruments, not retried (the next tick reads
        again, and the arrival quote stands in)."""
        ids = list(dict.fromkeys(t.instrument_id.lower() for t in targets))
        touch: dict[str, tuple[Decimal, Decimal]] = {}
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
                    touch[snapshot.instrument_id.lower()] = (q.bid, q.ask)
        return touch

    async def _reprice(self, p: _Protected, k: int, touch: tuple[Decimal, Decimal] | None) -> None:
        p.repriced = k
        bps = self._collar.bps_at(k)
        arrival = p.target.arrival
        bid, ask = touch or ((arrival.bid, arrival.ask) if arrival is not None else (None, None))
        for order in _working_limits(p.result):
            price = limit_price(order.side, bid, ask, bps)
            if price is None:
                continue  # nothing to price it from: it keeps its limit
            bound = None
            if arrival is not None:
                bound = limit_price(order.side, arrival.bid, arrival.ask, self._collar.max_bps)
            price = within_collar(order.side, price, bound)
            if p.prices.get(order.id, order.limit_price_value) == price:
                continue  # nothing to price it from, or no change: no request
            if order.status == "PENDING_CANCEL":
                continue
            try:
                reply = await self._api.replace_order(
                    p.target.account_id, order.id, limit_price=price
                )
            except Unauthorized:
                raise
            except (NotFound, Rejected):
                continue  # no longer open: following reads how it ended
            except ApiError as err:
                # Unknown: it may apply late; the next tick replaces again (a replace never
                # creates an order, so nothing can double).
                events.reprice_failed(
                    account_id=p.target.account_id,
                    instrument=p.target.instrument,
                    order_id=order.id,
                    limit_price=str(price),
                    error=str(err),
                    request_id=err.request_id,
                )
                continue
            p.prices[order.id] = price
            events.order_repriced(
                account_id=p.target.account_id,
                instrument=p.target.instrument,
                order_id=order.id,
                client_order_id=order.client_order_id,
                limit_price=str(price),
                collar_bps=round(bps, 2),
                reprice=k,
                quote="touch" if touch is not None else "arrival",
                request_id=reply.request_id,
            )

    async def _cancel_limits(self, p: _Protected) -> None:
        """Cancel each working limit of the target whose cancel has not been answered."""
        assert p.escalated is not None
        for order in _working_limits(p.result):
            if order.id in p.cancelled:
                continue
            request_id: str | None
            try:
                reply = await self._api.cancel_open_order(p.target.account_id, order.id)
                request_id = reply.request_id
            except Unauthorized:
                raise
            except (NotFound, Rejected) as err:
                request_id = err.request_id  # no longer open: it ended on its own
            except ApiError as err:
                events.escalation_cancel_failed(
                    account_id=p.target.account_id,
                    instrument=p.target.instrument,
                    order_id=order.id,
                    error=str(err),
                    request_id=err.request_id,
                    limit_price=_last_limit(p, order),
                )
                continue  # unknown: sent again next tick
            p.cancelled.add(order.id)
            if order.id not in p.told:
                p.told.add(order.id)
                events.close_escalated(
                    account_id=p.target.account_id,
                    instrument=p.target.instrument,
                    order_id=order.id,
                    remaining=str(Decimal(order.quantity) - Decimal(order.filled_quantity)),
                    reason=p.escalated,
                    request_id=request_id,
                    limit_price=_last_limit(p, order),
                )


def _last_limit(p: _Protected, order: OrderSummary) -> str | None:
    """The limit as last set: this run's re-price, else as following last read it."""
    price = p.prices.get(order.id)
    return order.limit_price if price is None else str(price)


def _working_limits(result: TargetResult) -> list[OrderSummary]:
    """The job's LIMIT orders of the target that can still fill, as following last read them."""
    return [o for o in result.orders if o.order_type == "LIMIT" and o.status in WORKING_STATUSES]
