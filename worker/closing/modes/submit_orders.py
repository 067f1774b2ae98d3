"""submit_orders: POST .../orders, exactly once by the server's client-id uniqueness.

A MARKET order (DAY, or AT_THE_CLOSE) for the position as last read, under a client id derived
from (job, account, instrument, generation); with CLOSE_STYLE=protected the first is a collared
LIMIT (`worker.closing.protect` re-prices and escalates it). The server refuses a second order
under one id (409), so the same id is simply sent again, and the worker's orders are known by id
alone. Under cancel_orders the targets' resting orders go first (`cancel_resting`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from worker.api.client import NewOrder, Reply, Side, TimeInForce, TradingApi
from worker.api.models import Order
from worker.api.reads import Reader
from worker.closing.adopt import Adopted, OwnWorking, find_own_working, own_client_ids
from worker.closing.batch import Batcher
from worker.closing.client_ids import client_order_id
from worker.closing.collar import Collar, limit_price
from worker.closing.evidence import Finding, Verdict, closing_side
from worker.closing.ledger import Fill
from worker.closing.modes.cancel_resting import CancelWait, ReadBefore, RestingCanceller
from worker.closing.modes.sender import Key, Sent
from worker.closing.sizing import first_size, recent_fills
from worker.closing.target import Target
from worker.closing.waves import Waves
from worker.errors import Conflict, OutcomeUnknown
from worker.journal.store import Prior
from worker.results import TargetResult


@dataclass(frozen=True)
class ClientIds:
    """What the closes' client ids are made from: today's job, and per position the generation
    its next send goes under (an earlier run's, resumed: `submit_generations`)."""

    job: str
    generations: Mapping[Key, int]


@dataclass(frozen=True)
class OrderStyle:
    """How the closes are sent: their time in force, how many of an account's go out together
    (BATCH_SIZE), and with CLOSE_STYLE=protected the collar of the first and, with
    PROTECTED_VIA=ioc_waves, the schedule of its waves."""

    time_in_force: TimeInForce
    batch_size: int = 1
    collar: Collar | None = None
    waves: Waves | None = None


class SubmitOrdersSender:
    """submit_orders: exactly once by the server's client-id uniqueness."""

    idempotent = True

    def __init__(
        self,
        api: TradingApi,
        reader: Reader,
        *,
        ids: ClientIds,
        style: OrderStyle,
        cancel_wait: CancelWait,
        before: ReadBefore,
    ) -> None:
        self._api = api
        # PROTECTED_VIA=ioc_waves: every close of a protected target is a marketable IOC limit
        # at its wave's collar until its market wave (`worker.closing.waves`).
        self.waves = style.waves
        # The ledger's window (the server's time): fills from then on that the plan's read may
        # not hold yet size each first order (`first_size`). None: sized from the plan alone.
        self._ledger_from = before.ledger_from
        self._fills_before: dict[Key, list[Fill]] = {}
        # CLOSE_STYLE=protected: a target's first close is a LIMIT order at COLLAR_BPS past
        # its arrival quote (DAY, also with --at-close); its later closes go at market.
        self._collar = style.collar
        self._at_market: set[Key] = set()
        # BATCH_SIZE above 1: the account's orders go out together (`worker.closing.batch`).
        self._batcher = (
            Batcher(api, reader, size=style.batch_size, time_in_force=style.time_in_force)
            if style.batch_size > 1
            else None
        )
        # Per account, the orders that could still fill when the run read them (None: not
        # read): the ledger's read sets them apart.
        self._working_before = before.working_before
        self._reader = reader
        self._job = ids.job
        self._tif: TimeInForce = style.time_in_force
        # Per position, the generation its next send goes under (an earlier run's, resumed).
        self._generation: dict[Key, int] = dict(ids.generations)
        self._stems: dict[Key, str] = {}
        # cancel_orders: the targets' resting orders, cancelled before any is sent.
        self._canceller = RestingCanceller(
            api, reader, wait=cancel_wait, before=before, recognises=self.recognises
        )
        # The job's own orders earlier runs left working, by position (`worker.closing.adopt`).
        self._adopted: dict[Key, Adopted] = {}

    def client_id(self, target: Target, result: TargetResult) -> tuple[str, int]:
        """The same id until its order is seen at the server; then a new generation.

        A residue close whose previous order was never seen sends that order's id again: if
        it landed late, the server refuses the copy (409) and it is found; never a second order.
        """
        key = (target.account_id, target.instrument_id.lower())  # as the journal keys priors
        generation = self._generation.get(key, 0)
        current = self._id(target, generation)
        if any(o.client_order_id == current for o in result.orders):
            generation += 1
            self._generation[key] = generation
            current = self._id(target, generation)
        return current, generation

    async def before_fan_out(self, targets: Sequence[Target], stopping: asyncio.Event) -> None:
        """Adopt the job's own working orders; cancel_orders: cancel the targets' other open
        orders, then wait until none of those is working (`cancel_resting`). A target whose
        orders could not be cancelled, or still work when the wait ends, is not sent
        (`prepare`).
        """
        own_ids = own_client_ids(self._job, targets, self._generation)
        own = await find_own_working(self._reader, self._api, own_ids) if own_ids else OwnWorking()
        self._adopted = own.adopted
        await asyncio.gather(
            self._read_ledger(targets),
            *self._canceller.cancels(targets, self._adopted, own.to_cancel, stopping),
        )

    async def _read_ledger(self, targets: Sequence[Target]) -> None:
        if self._ledger_from is not None:
            self._fills_before = await recent_fills(
                self._reader,
                targets,
                self._ledger_from,
                self._working_before or {},
                self.recognises,
            )

    def first_size(self, target: Target, position: Decimal) -> Decimal:
        """Never past zero whichever recent fills the plan's read holds (`closing.sizing`)."""
        key = (target.account_id, target.instrument_id.lower())
        return first_size(target, position, self._fills_before.get(key))

    def adopted(self, target: Target) -> Adopted | None:
        return self._adopted.get((target.account_id, target.instrument_id.lower()))

    def at_market(self, target: Target) -> None:
        self._at_market.add((target.account_id, target.instrument_id.lower()))

    def wave_at(self, target: Target) -> float | None:
        key = (target.account_id, target.instrument_id.lower())
        if self.waves is None or key in self._at_market:
            return None
        return self.waves.next_at(key)

    def _terms(self, target: Target, position: Decimal) -> tuple[Decimal | None, TimeInForce]:
        """The limit and time in force of the target's next close. The protected limit of
        its first close rests DAY (at the close only its escalated rest goes); with IOC waves
        each close until its market wave is an IOC at the wave's collar. No limit: a market
        order (the market style, a later close, or no two-sided arrival quote to price it:
        `--force` sends such a target, held by the protected guard otherwise, at market)."""
        key = (target.account_id, target.instrument_id.lower())
        if self._collar is None or key in self._at_market or target.arrival is None:
            return None, self._tif
        quote = target.arrival
        side = _closing_side(position)
        if self.waves is None:
            limit = limit_price(side, quote.bid, quote.ask, self._collar.first_bps)
            return limit, "DAY" if limit is not None else self._tif
        bps = self.waves.bps(key)
        if bps is None:
            self._at_market.add(key)  # its waves are over: this and every later close
            return None, self._tif
        self.waves.sent(key)
        limit = limit_price(side, quote.bid, quote.ask, bps)
        return limit, "IMMEDIATE_OR_CANCEL" if limit is not None else self._tif

    async def prepare(self, target: Target) -> None:
        refusal = self._canceller.refusal(target)
        if refusal is not None:
            raise refusal

    async def send(
        self, target: Target, client_id: str | None, position: Decimal, unless: asyncio.Event
    ) -> Sent:
        """A market order for the position as last read: never more than it, never flipped."""
        assert client_id is not None, "every submission goes under a client id"
        if position == 0:
            raise ValueError("a submission needs an open position")
        limit, tif = self._terms(target, position)
        if self._batcher is not None:
            return await self._send_in_batch(target, client_id, position, unless, limit, tif)
        try:
            side = _closing_side(position)
            order = NewOrder(client_id, target.instrument_id, side, abs(position), limit, tif)
            reply: Reply[Order] = await self._api.submit_order(
                target.account_id, order, unless=unless
            )
        except Conflict:
            found = await self._find(target, client_id)
            if not found.data:
                raise OutcomeUnknown(
                    f"{target.instrument}: client id {client_id} refused as taken (409), and no"
                    " order with it was found",
                    status=409,
                    request_id=found.request_id,
                ) from None
            return Sent(found.data, found.request_id, found=True)
        return Sent([reply.data], reply.request_id)

    async def _send_in_batch(
        self,
        target: Target,
        client_id: str,
        position: Decimal,
        unless: asyncio.Event,
        limit: Decimal | None,
        tif: TimeInForce,
    ) -> Sent:
        """The same order as `send`'s, sent with the account's others (`worker.closing.batch`)."""
        assert self._batcher is not None
        order = NewOrder(
            client_id,
            target.instrument_id,
            _closing_side(position),
            abs(position),
            limit,
            None if limit is None else tif,
        )
        submitted = await self._batcher.submit(target.account_id, order, target.instrument, unless)
        return Sent([submitted.order], submitted.request_id, found=submitted.found)

    async def look(
        self, target: Target, result: TargetResult, since: datetime, reference: Decimal
    ) -> Finding:
        """By the client id alone: found, it is this close; not found, its fate stays open."""
        current, _ = self.client_id(target, result)
        found = await self._find(target, current)
        if found.data:
            return Finding(Verdict.CLOSED, found.data, found.request_id)
        return Finding(Verdict.OPEN, [], found.request_id)

    def recognises(self, order: Order, target: Target) -> bool:
        return order.client_order_id.startswith(self._stem(target))

    async def _find(self, target: Target, client_id: str) -> Reply[list[Order]]:
        return await self._reader.retried(
            f"order {client_id}",
            lambda: self._api.orders_by_client_id(target.account_id, [client_id]),
        )

    def _id(self, target: Target, generation: int) -> str:
        return f"{self._stem(target)}{generation}"

    def _stem(self, target: Target) -> str:
        """The id without its generation number, 'lq-<digest>-g'."""
        key = (target.account_id, target.instrument_id)
        stem = self._stems.get(key)
        if stem is None:
            stem = client_order_id(self._job, *key, 0)[:-1]
            self._stems[key] = stem
        return stem


def _closing_side(position: Decimal) -> Side:
    return "SELL" if closing_side(position) == "SELL" else "BUY"


def submit_generations(priors: Mapping[Key, Prior]) -> dict[Key, int]:
    """The generation each position resumes at: the one an earlier run recorded last."""
    return {k: p.generation for k, p in priors.items() if p.generation is not None}
