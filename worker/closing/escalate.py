"""CLOSE_STYLE=protected: cancel an account's escalated limits in as few requests as can be, and
chase the cancels that linger.

Up to BY_ID_MAX limits are cancelled by id. More are cancelled by instrument (`DELETE
/v1/accounts/{id}/orders?instrument_ids=`, CANCEL_CHUNK a request) where following's last read of
the orders on the instrument (and the orders snapshot before the fan-out) showed nothing working
there but the job's own orders, and a listing of the instruments' orders by status just before
the cancel (READ_CHUNK a request, never bounded by time) shows none either: following's listing
is bounded by order stamps, and an order stamped before its floor would be cancelled unseen. An
instrument where another's order works has the job's limit cancelled by id. Nothing is sent for
the rest here: following sends it once it reads the limit final (`worker.closing.protect`).

A cancel answered but still working as following last read it CHASE_S later is read (by id,
READ_CHUNK a request) and, still working (PENDING_CANCEL, or never applied), sent again by id;
after CHASES such sends the limit is reported (`escalation_cancel_stuck`,
with its id), well before FLAT_TIMEOUT calls the position not flat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.api.client import Reply, TradingApi
from worker.api.models import WORKING_STATUSES
from worker.api.reads import Reader
from worker.closing.schedule import BY_ID_MAX, CANCEL_CHUNK, READ_CHUNK
from worker.closing.target import Target
from worker.errors import ApiError, NotFound, Rejected, Unauthorized
from worker.observe import events
from worker.results import OrderSummary

CHASE_S = 3.0  # a cancel still read working this long after its answer is sent again
CHASES = 3  # sends again before the limit is reported as one that cannot be cancelled
RETRY_S = 0.5  # a cancel whose outcome is unknown is sent again this much later


@dataclass(slots=True)
class Limit:
    """One escalated limit and its cancel's history."""

    target: Target
    order: OrderSummary
    reason: str  # deadline or moc_cutoff
    prices: dict[str, Decimal]  # the target's limits' prices, as this run replaced them
    answered_at: float | None = None  # monotonic: its cancel's last answer
    retry_at: float = 0.0  # monotonic: no cancel before this (after an unknown outcome)
    sends: int = 0
    final: bool = False  # read final by the chase: nothing more to cancel
    told: bool = False  # close_escalated said
    stuck: bool = False  # escalation_cancel_stuck said

    @property
    def last_price(self) -> str | None:
        """The limit as last set: this run's re-price, else as following last read it."""
        price = self.prices.get(self.order.id)
        return self.order.limit_price if price is None else str(price)


class Escalator:
    """Sends the cancels of escalated limits, an account at a time."""

    def __init__(
        self,
        api: TradingApi,
        reader: Reader,
        *,
        others_working: Callable[[int, str], bool],
        clock: Callable[[], float],
        chase_s: float = CHASE_S,
    ) -> None:
        self._api = api
        self._reader = reader
        self._others_working = others_working
        self._clock = clock
        self._chase_s = chase_s

    def due(self, limit: Limit, status: str, now: float) -> bool:
        """Whether `limit` (as following last read it: `status`) needs a cancel sent now."""
        if limit.final or status not in WORKING_STATUSES or now < limit.retry_at:
            return False
        return limit.answered_at is None or now - limit.answered_at >= self._chase_s

    async def cancel(self, account_id: int, limits: Sequence[Limit]) -> None:
        """Cancel these limits of one account: by instrument where only the job's orders work
        on the instruments, by id otherwise (and for a few, and for every cancel sent again)."""
        first = [x for x in limits if x.sends == 0]
        by_id = await self._still_working(account_id, [x for x in limits if x.sends > 0])
        if len(first) <= BY_ID_MAX:
            by_id += first
        else:
            alone, shared = self._only_ours(first)
            alone, seen = await self._alone_now(account_id, alone)
            by_id += shared + seen
            chunks = [alone[i : i + CANCEL_CHUNK] for i in range(0, len(alone), CANCEL_CHUNK)]
            await asyncio.gather(*(self._by_instrument(account_id, c) for c in chunks))
        await asyncio.gather(*(self._by_id(account_id, x) for x in by_id))

    async def _still_working(self, account_id: int, limits: list[Limit]) -> list[Limit]:
        """Of these answered cancels, the limits a read by id shows still working; a limit read
        final needs nothing more, one not read is sent again."""
        if not limits:
            return []
        ids = [x.order.id for x in limits]
        status: dict[str, str] = {}
        try:
            for start in range(0, len(ids), READ_CHUNK):
                listed, _ = await self._reader.orders_by_id(
                    account_id, ids[start : start + READ_CHUNK]
                )
                status.update((o.id, o.status) for o in listed)
        except Unauthorized:
            raise
        except ApiError:
            return limits
        working = []
        for x in limits:
            read = status.get(x.order.id)
            if read is not None and read not in WORKING_STATUSES:
                x.final = True
            else:
                working.append(x)
        return working

    def _only_ours(self, limits: list[Limit]) -> tuple[list[Limit], list[Limit]]:
        """The limits alone on their instrument among its working orders as following last
        read them, and the others (another's order may work there)."""
        alone: list[Limit] = []
        shared: list[Limit] = []
        for x in limits:
            account_id, iid = x.target.account_id, x.target.instrument_id
            (shared if self._others_working(account_id, iid) else alone).append(x)
        return alone, shared

    async def _alone_now(
        self, account_id: int, limits: list[Limit]
    ) -> tuple[list[Limit], list[Limit]]:
        """Of these limits, those alone on their instrument among the orders that can still
        fill there, as a listing by status reads them now (any age), and the others; all are
        the others when the account cannot be read or another's order names no instrument."""
        ours = {x.order.id for x in limits}
        shared: set[str] = set()
        try:
            for start in range(0, len(limits), READ_CHUNK):
                chunk = [x.target.instrument_id for x in limits[start : start + READ_CHUNK]]
                listed, _ = await self._reader.working_orders(account_id, chunk)
                others = [o for o in listed if o.id not in ours]
                if any(o.instrument_id is None for o in others):
                    return [], limits  # another's order on an instrument not named: by id
                shared.update((o.instrument_id or "").lower() for o in others)
        except Unauthorized:
            raise
        except ApiError:
            return [], limits
        alone = [x for x in limits if x.target.instrument_id.lower() not in shared]
        return alone, [x for x in limits if x.target.instrument_id.lower() in shared]

    async def _by_instrument(self, account_id: int, limits: list[Limit]) -> None:
        iids = [x.target.instrument_id for x in limits]
        await self._send(limits, lambda: self._api.cancel_open_orders(account_id, iids))

    async def _by_id(self, account_id: int, limit: Limit) -> None:
        order_id = limit.order.id
        await self._send([limit], lambda: self._api.cancel_open_order(account_id, order_id))

    async def _send(self, limits: list[Limit], cancel: Callable[[], Awaitable[Reply[Any]]]) -> None:
        """One cancel request for `limits`: answered (or nothing open there any more: they
        ended on their own), or its outcome unknown (sent again RETRY_S later)."""
        for x in limits:
            x.sends += 1
        request_id: str | None
        try:
            request_id = (await cancel()).request_id
        except Unauthorized:
            raise
        except (NotFound, Rejected) as err:
            request_id = err.request_id  # nothing open there: they ended on their own
        except ApiError as err:
            for x in limits:
                self._unknown(x, err)
            return
        for x in limits:
            self._answered(x, request_id)

    def _unknown(self, limit: Limit, err: ApiError) -> None:
        limit.retry_at = self._clock() + RETRY_S
        events.escalation_cancel_failed(
            account_id=limit.target.account_id,
            instrument=limit.target.instrument,
            order_id=limit.order.id,
            error=str(err),
            request_id=err.request_id,
            limit_price=limit.last_price,
        )

    def _answered(self, limit: Limit, request_id: str | None) -> None:
        limit.answered_at = self._clock()
        if not limit.told:
            limit.told = True
            order = limit.order
            events.close_escalated(
                account_id=limit.target.account_id,
                instrument=limit.target.instrument,
                order_id=order.id,
                remaining=str(Decimal(order.quantity) - Decimal(order.filled_quantity)),
                reason=limit.reason,
                request_id=request_id,
                limit_price=limit.last_price,
            )
        if limit.sends > CHASES and not limit.stuck:
            limit.stuck = True
            events.escalation_cancel_stuck(
                account_id=limit.target.account_id,
                instrument=limit.target.instrument,
                order_id=limit.order.id,
                status=limit.order.status,
                cancels=limit.sends,
            )
