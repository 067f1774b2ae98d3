"""How one close is sent (CLOSE_VIA): the one seam between the two modes.

    close_position  DELETE .../positions/{id}: the server picks the side and the quantity. Not
                    idempotent: after an unknown outcome the closer looks before any re-send,
                    and an order is the worker's by evidence (`worker.closing.evidence`).
    submit_orders   POST .../orders: a MARKET order (DAY, or AT_THE_CLOSE) for the position as
                    last read, under a client id derived from (job, account, instrument,
                    generation); with CLOSE_STYLE=protected the first is a collared LIMIT
                    (`worker.closing.protect` re-prices and escalates it). The server
                    refuses a second order under one id (409), so the same id is simply sent
                    again, and the worker's orders are known by id alone.

A sender sends and finds; it never decides whether to retry (`worker.api.policy`) or when a target
is flat (`worker.closing.follow`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from worker.api.client import NewOrder, Reply, Side, TimeInForce, TradingApi
from worker.api.models import Order
from worker.api.policy import Sleep
from worker.api.reads import Reader
from worker.closing.adopt import Adopted, OwnWorking, find_own_working, own_client_ids
from worker.closing.batch import Batcher
from worker.closing.client_ids import client_order_id
from worker.closing.collar import Collar, limit_price
from worker.closing.evidence import Finding, Verdict, closing_side, look
from worker.closing.target import Target
from worker.errors import ApiError, Conflict, NotFound, OutcomeUnknown, StillWorking, Unauthorized
from worker.journal.store import Prior
from worker.observe import events
from worker.results import TargetResult

Key = tuple[int, str]  # (account_id, instrument_id)
CANCEL_CHUNK = 100  # instrument_ids per cancel request: ~3.7 kB of query string


@dataclass(frozen=True, slots=True)
class Sent:
    orders: list[Order]
    request_id: str
    # The orders were found, not created: the submission's client id was taken (409) by an
    # earlier send of the same close, which landed.
    found: bool = False


class Sender(Protocol):
    # True: sending the same close again cannot create a second order (a client id).
    idempotent: bool

    def client_id(self, target: Target, result: TargetResult) -> tuple[str, int] | None:
        """The id (and its generation) the next send of this target goes under; None: no id."""
        ...

    async def before_fan_out(self, targets: Sequence[Target], stopping: asyncio.Event) -> None:
        """Once, before any close is sent (submit_orders: cancel resting orders, in batches)."""
        ...

    async def prepare(self, target: Target) -> None:
        """Before a target's first send: raises `ApiError` if it must not be sent."""
        ...

    async def send(
        self,
        target: Target,
        client_id: str | None,
        position: Decimal,
        unless: asyncio.Event,
    ) -> Sent:
        """Send one close of `position` (signed, as last read). Raises `ApiError`."""
        ...

    async def look(
        self, target: Target, result: TargetResult, since: datetime, reference: Decimal
    ) -> Finding:
        """What the last unanswered send did. Raises `ApiError` when it cannot be read."""
        ...

    def recognises(self, order: Order, target: Target) -> bool:
        """`order`, listed on the target's instrument, belongs to this run's closes."""
        ...

    def adopted(self, target: Target) -> Adopted | None:
        """The job's own orders an earlier run left working for `target`: followed, not sent."""
        ...

    def at_market(self, target: Target) -> None:
        """From now on `target`'s closes go at market (CLOSE_STYLE=protected: its limit is
        over, the rest is escalated or a residue)."""
        ...


class ClosePositionSender:
    """close_position: the default mode; the server sizes the close and picks its side."""

    idempotent = False

    def __init__(
        self, api: TradingApi, reader: Reader, preexisting: Mapping[int, frozenset[str]]
    ) -> None:
        self._api = api
        self._reader = reader
        self._preexisting = preexisting

    def client_id(self, target: Target, result: TargetResult) -> tuple[str, int] | None:
        return None

    async def before_fan_out(self, targets: Sequence[Target], stopping: asyncio.Event) -> None:
        return None  # cancel_orders rides on each close itself

    async def prepare(self, target: Target) -> None:
        return None

    async def send(
        self, target: Target, client_id: str | None, position: Decimal, unless: asyncio.Event
    ) -> Sent:
        reply = await self._api.close_position(
            target.account_id,
            target.instrument_id,
            cancel_orders=target.cancel_orders,
            unless=unless,
        )
        return Sent(reply.data, reply.request_id)

    async def look(
        self, target: Target, result: TargetResult, since: datetime, reference: Decimal
    ) -> Finding:
        return await look(
            self._reader,
            target,
            since,
            reference=reference,
            preexisting=self._preexisting_of(target.account_id),
        )

    def recognises(self, order: Order, target: Target) -> bool:
        return order.id not in (self._preexisting_of(target.account_id) or ())

    def adopted(self, target: Target) -> Adopted | None:
        return None  # no client ids: an earlier run's close is found by a look (evidence)

    def at_market(self, target: Target) -> None:
        return None  # every close is a market order

    def _preexisting_of(self, account_id: int) -> Collection[str] | None:
        return self._preexisting.get(account_id)


@dataclass(frozen=True)
class CancelWait:
    """How long to wait for cancelled resting orders to stop working before submitting."""

    timeout_s: float = 120.0
    first_pause_s: float = 0.2
    max_pause_s: float = 2.0


class SubmitOrdersSender:
    """submit_orders: exactly once by the server's client-id uniqueness."""

    idempotent = True

    def __init__(
        self,
        api: TradingApi,
        reader: Reader,
        *,
        job: str,
        time_in_force: TimeInForce,
        generations: Mapping[Key, int],
        cancel_wait: CancelWait,
        sleep: Sleep,
        clock: Callable[[], float] = time.monotonic,
        batch_size: int = 1,
        working_before: Mapping[int, Sequence[Order]] | None = None,
        read_accounts: Collection[int] | None = None,
        collar: Collar | None = None,
    ) -> None:
        self._api = api
        # CLOSE_STYLE=protected: a target's first close is a LIMIT order at COLLAR_BPS past
        # its arrival quote (DAY, also with --at-close); its later closes go at market.
        self._collar = collar
        self._at_market: set[Key] = set()
        # BATCH_SIZE above 1: the account's orders go out together (`worker.closing.batch`).
        self._batcher = (
            Batcher(api, reader, size=batch_size, time_in_force=time_in_force)
            if batch_size > 1
            else None
        )
        # Per account, the orders that could still fill when the run read them (None: not
        # read): an account with none on a target's instrument has nothing to cancel.
        self._working_before = working_before
        self._read_accounts = set(read_accounts or ())
        self._reader = reader
        self._job = job
        self._tif: TimeInForce = time_in_force
        # Per position, the generation its next send goes under (an earlier run's, resumed).
        self._generation: dict[Key, int] = dict(generations)
        self._stems: dict[Key, str] = {}
        self._cancel_wait = cancel_wait
        # Targets whose resting orders could not be cancelled, or still work: never sent.
        self._not_to_send: dict[Key, ApiError] = {}
        self._sleep = sleep
        self._clock = clock
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
        orders, then wait until none of those is working.

        One cancel per account and CANCEL_CHUNK instruments (`instrument_ids` takes a list),
        not one per close: a request per close would double the run's requests. On an
        instrument with an adopted order, the others are cancelled one by one, by id. A target
        whose orders could not be cancelled, or still work when the wait ends, is not sent
        (`prepare`).
        """
        own_ids = own_client_ids(self._job, targets, self._generation)
        own = await find_own_working(self._reader, self._api, own_ids) if own_ids else OwnWorking()
        self._adopted = own.adopted
        by_account: dict[int, list[Target]] = {}
        keeping: dict[int, list[Target]] = {}  # instruments with an adopted order
        to_cancel = self._accounts_to_cancel(targets)
        for t in targets:
            if t.cancel_orders and t.account_id in to_cancel:
                adopted = (t.account_id, t.instrument_id.lower()) in self._adopted
                (keeping if adopted else by_account).setdefault(t.account_id, []).append(t)
        chunks = [
            batch[start : start + CANCEL_CHUNK]
            for batch in by_account.values()
            for start in range(0, len(batch), CANCEL_CHUNK)
        ]
        await asyncio.gather(
            *(self._cancel_chunk(chunk, stopping) for chunk in chunks),
            *(self._cancel_others(batch, stopping) for batch in keeping.values()),
            *(
                self._cancel_each(a, orders, stopping, instruments=len({t for t, _ in orders}))
                for a, orders in own.to_cancel.items()
            ),
        )

    def _accounts_to_cancel(self, targets: Sequence[Target]) -> set[int]:
        """The accounts where a cancel may find something: those whose snapshot shows a
        working order on a target's instrument, and those the snapshot could not read.

        Every request counts under a rate limit: a cancel where nothing works is one wasted.
        """
        accounts = {t.account_id for t in targets}
        if self._working_before is None:  # no snapshot was given: cancel everywhere
            return accounts
        wanted = accounts - self._read_accounts  # unread: whether anything works is unknown
        for t in targets:
            if any(
                o.working and (o.instrument_id or "").lower() == t.instrument_id.lower()
                for o in self._working_before.get(t.account_id, ())
            ):
                wanted.add(t.account_id)
        return wanted

    def adopted(self, target: Target) -> Adopted | None:
        return self._adopted.get((target.account_id, target.instrument_id.lower()))

    def at_market(self, target: Target) -> None:
        self._at_market.add((target.account_id, target.instrument_id.lower()))

    def _limit(self, target: Target, position: Decimal) -> Decimal | None:
        """The protected limit of the target's first close; None: a market order (the market
        style, a later close, or no two-sided arrival quote to price it: `--force` sends such
        a target, held by the protected guard otherwise, at market)."""
        if self._collar is None or (target.account_id, target.instrument_id.lower()) in (
            self._at_market
        ):
            return None
        quote = target.arrival
        if quote is None:
            return None
        return limit_price(_closing_side(position), quote.bid, quote.ask, self._collar.first_bps)

    async def prepare(self, target: Target) -> None:
        refusal = self._not_to_send.get((target.account_id, target.instrument_id))
        if refusal is not None:
            raise refusal

    async def _cancel_chunk(self, targets: list[Target], stopping: asyncio.Event) -> None:
        account_id = targets[0].account_id
        iids = [t.instrument_id for t in targets]
        try:  # cancelling twice is harmless: retried as a read
            reply = await self._reader.retried(
                f"cancel orders of account {account_id}",
                lambda: self._api.cancel_open_orders(account_id, iids),
            )
        except NotFound as err:  # nothing to cancel
            events.cancel_requested(
                account_id=account_id, instruments=len(iids), orders=0, request_id=err.request_id
            )
            return
        except Unauthorized:
            raise
        except ApiError as err:
            for t in targets:
                self._not_to_send[(account_id, t.instrument_id)] = err
            return
        events.cancel_requested(
            account_id=account_id,
            instruments=len(iids),
            orders=len(reply.data),
            request_id=reply.request_id,
        )
        if reply.data:
            await self._until_not_working(account_id, reply.data, stopping)

    async def _cancel_others(self, targets: list[Target], stopping: asyncio.Event) -> None:
        """Cancel, one by one, the working orders on these instruments that are not the job's."""
        account_id = targets[0].account_id
        by_iid = {t.instrument_id.lower(): t for t in targets}
        try:
            listed, request_ids = await self._reader.orders(account_id, list(by_iid), None)
        except Unauthorized:
            raise
        except ApiError as err:
            for t in targets:
                self._not_to_send[(account_id, t.instrument_id)] = err
            return
        others = [
            (by_iid[(o.instrument_id or "").lower()], o)
            for o in listed
            if o.working
            and (o.instrument_id or "").lower() in by_iid
            and not self.recognises(o, by_iid[(o.instrument_id or "").lower()])
        ]
        request_id = request_ids[-1] if request_ids else None
        await self._cancel_each(
            account_id, others, stopping, instruments=len(targets), request_id=request_id
        )

    async def _cancel_each(
        self,
        account_id: int,
        orders: list[tuple[Target, Order]],
        stopping: asyncio.Event,
        *,
        instruments: int,
        request_id: str | None = None,
    ) -> None:
        """Cancel these orders one by one, by id, and wait until none of them is working."""
        cancelled: list[Order] = []
        for t, o in orders:
            try:
                reply = await self._reader.retried(
                    f"cancel order {o.id} of account {account_id}",
                    functools.partial(self._api.cancel_open_order, account_id, o.id),
                )
            except NotFound:  # no longer open: nothing to cancel
                continue
            except Unauthorized:
                raise
            except ApiError as err:
                self._not_to_send[(account_id, t.instrument_id)] = err
                continue
            cancelled.append(reply.data)
            request_id = reply.request_id
        events.cancel_requested(
            account_id=account_id,
            instruments=instruments,
            orders=len(cancelled),
            request_id=request_id,
        )
        if cancelled:
            await self._until_not_working(account_id, cancelled, stopping)

    async def _until_not_working(
        self, account_id: int, cancelled: list[Order], stopping: asyncio.Event
    ) -> None:
        """Poll the cancelled orders (they may still fill meanwhile) until none is working."""
        order_ids = [o.id for o in cancelled]
        started = self._clock()
        pause, polls = self._cancel_wait.first_pause_s, 0
        while True:
            try:
                listed = await self._reader.retried(
                    f"orders of account {account_id}",
                    lambda: self._api.get_orders(account_id, order_ids=order_ids),
                )
            except Unauthorized:
                raise
            except ApiError as err:  # whether they still work is not known: send none of them
                for o in cancelled:
                    self._not_to_send[(account_id, o.instrument_id or "")] = err
                return
            polls += 1
            working = {o.instrument_id or "" for o in listed.data if o.working}
            if not working:
                events.orders_canceled(
                    account_id=account_id, seconds=self._clock() - started, polls=polls
                )
                return
            if stopping.is_set() or self._clock() - started >= self._cancel_wait.timeout_s:
                for iid in working:
                    self._not_to_send[(account_id, iid)] = StillWorking(
                        f"resting orders on {iid} still working"
                        f" {self._clock() - started:.3g} s after their cancel was requested;"
                        " nothing was submitted",
                        request_id=listed.request_id,
                    )
                return
            await self._sleep(pause)
            pause = min(pause * 2, self._cancel_wait.max_pause_s)

    async def send(
        self, target: Target, client_id: str | None, position: Decimal, unless: asyncio.Event
    ) -> Sent:
        """A market order for the position as last read: never more than it, never flipped."""
        assert client_id is not None, "every submission goes under a client id"
        if position == 0:
            raise ValueError("a submission needs an open position")
        limit = self._limit(target, position)
        if self._batcher is not None:
            return await self._send_in_batch(target, client_id, position, unless, limit)
        try:
            reply: Reply[Order] = await self._api.submit_order(
                target.account_id,
                client_id=client_id,
                instrument_id=target.instrument_id,
                side=_closing_side(position),
                quantity=abs(position),
                # A protected limit rests DAY; at the close only its escalated rest goes.
                time_in_force=self._tif if limit is None else "DAY",
                unless=unless,
                limit_price=limit,
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
    ) -> Sent:
        """The same order as `send`'s, sent with the account's others (`worker.closing.batch`)."""
        assert self._batcher is not None
        order = NewOrder(
            client_id,
            target.instrument_id,
            _closing_side(position),
            abs(position),
            limit,
            None if limit is None else "DAY",
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
