"""submit_orders under cancel_orders: the targets' resting orders cancelled before any close is
submitted, and waited for until none of them works.

One cancel per account and CANCEL_CHUNK instruments (`instrument_ids` takes a list), not one per
close: a request per close would double the run's requests. On an instrument with an adopted
order, the others are cancelled one by one, by id. A target whose orders could not be cancelled,
or still work when the wait ends, is not sent (`refusal`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.api.client import IDS_PER_REQUEST, TradingApi
from worker.api.models import Order
from worker.api.policy import Sleep
from worker.api.reads import Reader
from worker.closing.modes.sender import Key
from worker.closing.target import Target
from worker.errors import ApiError, NotFound, StillWorking, Unauthorized
from worker.observe import events

CANCEL_CHUNK = IDS_PER_REQUEST


@dataclass(frozen=True)
class CancelWait:
    """How long to wait for cancelled resting orders to stop working before submitting, and the
    clock and sleep that wait is measured and paused by."""

    timeout_s: float = 120.0
    first_pause_s: float = 0.2
    max_pause_s: float = 2.0
    sleep: Sleep = asyncio.sleep
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class ReadBefore:
    """What the run read before the fan-out: per account, the orders that could still fill (None:
    not read), the accounts that read covered, and the start of the ledger's window (the
    server's time; None: first orders are sized from the plan alone)."""

    working_before: Mapping[int, Sequence[Order]] | None = None
    read_accounts: Collection[int] | None = None
    ledger_from: datetime | None = None


class RestingCanceller:
    """Cancels the targets' resting orders before the fan-out, and keeps which may not be sent."""

    def __init__(
        self,
        api: TradingApi,
        reader: Reader,
        *,
        wait: CancelWait,
        before: ReadBefore,
        recognises: Callable[[Order, Target], bool],
    ) -> None:
        self._api = api
        self._reader = reader
        # Per account, the orders that could still fill when the run read them (None: not
        # read): an account with none on a target's instrument has nothing to cancel.
        self._working_before = before.working_before
        self._read_accounts = set(before.read_accounts or ())
        self._cancel_wait = wait
        self._sleep = wait.sleep
        self._clock = wait.clock
        # Whether an order is the job's own (never cancelled by `_cancel_others`).
        self._recognises = recognises
        # Targets whose resting orders could not be cancelled, or still work: never sent.
        self._not_to_send: dict[Key, ApiError] = {}

    def refusal(self, target: Target) -> ApiError | None:
        """Why `target` must not be sent: its resting orders were not shown cancelled."""
        return self._not_to_send.get((target.account_id, target.instrument_id))

    def cancels(
        self,
        targets: Sequence[Target],
        adopted: Collection[Key],
        own_to_cancel: Mapping[int, list[tuple[Target, Order]]],
        stopping: asyncio.Event,
    ) -> list[Coroutine[Any, Any, None]]:
        """The cancels to run: by instrument where nothing is adopted, by id beside an adopted
        order, and the job's own unadopted working orders (`worker.closing.adopt`)."""
        by_account: dict[int, list[Target]] = {}
        keeping: dict[int, list[Target]] = {}  # instruments with an adopted order
        to_cancel = self._accounts_to_cancel(targets)
        for t in targets:
            if t.cancel_orders and t.account_id in to_cancel:
                is_adopted = (t.account_id, t.instrument_id.lower()) in adopted
                (keeping if is_adopted else by_account).setdefault(t.account_id, []).append(t)
        chunks = [
            batch[start : start + CANCEL_CHUNK]
            for batch in by_account.values()
            for start in range(0, len(batch), CANCEL_CHUNK)
        ]
        return [
            *(self._cancel_chunk(chunk, stopping) for chunk in chunks),
            *(self._cancel_others(batch, stopping) for batch in keeping.values()),
            *(
                self._cancel_each(a, orders, stopping, instruments=len({t for t, _ in orders}))
                for a, orders in own_to_cancel.items()
            ),
        ]

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
            and not self._recognises(o, by_iid[(o.instrument_id or "").lower()])
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
