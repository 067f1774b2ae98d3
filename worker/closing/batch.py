"""Batched order entry (submit_orders): each account's closing orders in as few POSTs as can be.

Each target still sends its own close (`worker.closing.send`: intent committed, then the send)
and gets its own answer or error, so its retries and looks are exactly those of a lone order.
Here the sends of one account that arrive within WINDOW_S of each other go out together, at most
`size` orders a request, every order under its own client id. The spec says nothing about a
batch's limits or atomicity, so every answer is read for what it proves:

    2xx, every order listed         each target gets its order (REJECTED: it fails, with why)
    2xx, orders left out            look them up by client id; the ones not there are sent once
                                    more under the same ids; left out again: failed, "not
                                    created by the server"
    413, or 400 "too many"          split to the size the server takes, remembered for the run
                                    and every account (a batch larger than any accepted yet
                                    goes out alone, so one refusal teaches every account)
    400/422 naming one order        that order fails with the server's message; the rest go on
    400/422 naming none             bisected: the first half sent; accepted, the refused order
                                    is in the second half, which is halved again; refused, the
                                    second half goes as any batch. An order left alone of a
                                    refused batch whose other orders were all accepted fails
                                    with the refusal: log2(size) + 1 POSTs, not 2 log2(size)
    409                             the batch's ids are looked up: the orders found are the
                                    targets' (found); only the others are sent again, same ids
    anything else (unknown outcome, 429, refused send)
                                    every target of the batch gets the error: its own retry
                                    sends the same id again, so what landed is refused 409 and
                                    found, never doubled
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence

from worker.api.client import IDS_PER_REQUEST, NewOrder, Reply, TimeInForce, TradingApi
from worker.api.models import Order
from worker.api.reads import Reader
from worker.closing.batch_answer import (
    NOT_CREATED,
    Submitted,
    Waiting,
    answer_listed,
    named_in,
    size_limit,
)
from worker.errors import Conflict, Forbidden, NotFound, OutcomeUnknown, Rejected, Unauthorized
from worker.observe import events

# A send waits this long for others of its account before its batch goes: the fan-out hands an
# account's first closes over together (one journal commit), so they arrive within a few ms.
WINDOW_S = 0.02
MAX_BATCH = 1000  # BATCH_SIZE's ceiling
LOOKUP_CHUNK = IDS_PER_REQUEST


class Batcher:
    """Collects each account's orders for WINDOW_S (or until a batch is full) and sends them."""

    def __init__(
        self,
        api: TradingApi,
        reader: Reader,
        *,
        size: int,
        time_in_force: TimeInForce,
        window_s: float = WINDOW_S,
    ) -> None:
        self._api = api
        self._reader = reader
        self._size = max(1, min(size, MAX_BATCH))  # lowered for the run by a 413
        self._proven = 0  # the largest batch the server has accepted (2xx) this run
        self._probe = asyncio.Lock()  # held by the POST of a batch larger than _proven
        self._tif: TimeInForce = time_in_force
        self._window_s = window_s
        self._queues: dict[int, list[Waiting]] = {}
        self._full: dict[int, asyncio.Event] = {}
        self._collectors: dict[int, asyncio.Task[None]] = {}
        self._sending: set[asyncio.Task[bool]] = set()
        self._unless: asyncio.Event | None = None

    @property
    def size(self) -> int:
        return self._size

    async def submit(
        self, account_id: int, order: NewOrder, what: str, unless: asyncio.Event
    ) -> Submitted:
        """This order's answer, sent with whatever else the account has to send now.

        Raises the `ApiError` that decides this order (its own refusal, or the batch's error).
        """
        self._unless = unless
        waiting = Waiting(order, what)
        queue = self._queues.setdefault(account_id, [])
        queue.append(waiting)
        if len(queue) >= self._size:
            self._full.setdefault(account_id, asyncio.Event()).set()
        collector = self._collectors.get(account_id)
        if collector is None or collector.done():
            self._collectors[account_id] = asyncio.create_task(self._collect(account_id))
        try:
            return await waiting.answer
        except asyncio.CancelledError:
            if waiting in queue:  # not sent yet: it never will be
                queue.remove(waiting)
            raise

    async def _collect(self, account_id: int) -> None:
        """Send the account's queue, a batch at a time, until it is empty."""
        queue = self._queues[account_id]
        full = self._full.setdefault(account_id, asyncio.Event())
        while queue:
            if len(queue) < self._size:
                with contextlib.suppress(TimeoutError):  # the window ended before it was full
                    await asyncio.wait_for(full.wait(), self._window_s)
            full.clear()
            batch = queue[: self._size]
            del queue[: self._size]
            task = asyncio.create_task(self._send(account_id, batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, account_id: int, batch: list[Waiting], *, again: bool = False) -> bool:
        """One POST of `batch`, and what its answer means for each order in it. True when the
        server accepted the batch whole (2xx), whatever it said of each order.

        `again`: these orders were left out of an earlier reply and not found: the last chance.
        """
        try:
            return await self._post(account_id, batch, again=again)
        except BaseException as err:  # a fault of ours must not leave a target unanswered
            for waiting in batch:
                waiting.fail(err)
            if not isinstance(err, Exception):
                raise
            return False

    async def _post(self, account_id: int, batch: list[Waiting], *, again: bool) -> bool:
        try:
            reply = await self._submit(account_id, batch)
        except Conflict as err:
            await self._after_conflict(account_id, batch, err)
            return False
        except (Unauthorized, Forbidden, NotFound):
            raise
        except Rejected as err:
            if err.status in (400, 413, 422):
                await self._after_refusal(account_id, batch, err)
                return False
            raise
        if reply is None:  # larger than the size learned meanwhile
            await self._send_split(account_id, batch, self._size)
            return False
        self._proven = max(self._proven, len(batch))
        events.batch_submitted(
            account_id=account_id,
            orders=len(batch),
            listed=len(reply.data),
            request_id=reply.request_id,
        )
        left_out = answer_listed(batch, reply)
        if left_out:
            await self._after_left_out(account_id, left_out, again=again)
        return True

    async def _submit(self, account_id: int, batch: list[Waiting]) -> Reply[list[Order]] | None:
        """The POST, or None when the batch is larger than the size the server takes. A batch
        larger than any accepted yet waits for the one such batch in flight: every account's
        first batches would otherwise all be refused as too large at once."""
        if len(batch) > self._size:
            return None
        if len(batch) <= self._proven:
            return await self._post_now(account_id, batch)
        async with self._probe:
            if len(batch) > self._size:
                return None
            return await self._post_now(account_id, batch)

    async def _post_now(self, account_id: int, batch: list[Waiting]) -> Reply[list[Order]]:
        return await self._api.submit_orders(
            account_id, [w.order for w in batch], time_in_force=self._tif, unless=self._unless
        )

    async def _after_left_out(
        self, account_id: int, left_out: list[Waiting], *, again: bool
    ) -> None:
        """Orders missing from a 2xx reply: created or not, only a lookup by id can tell."""
        found = await self._lookup(account_id, left_out)
        rest = [w for w in left_out if w.order.client_id not in found]
        for waiting in left_out:
            if waiting.order.client_id in found:
                order, request_id = found[waiting.order.client_id]
                waiting.give(Submitted(order, request_id))
        if not rest:
            return
        if again:
            for waiting in rest:
                why = f"{waiting.what}: order {waiting.order.client_id} {NOT_CREATED}"
                waiting.fail(Rejected(why))
            return
        await self._send(account_id, rest, again=True)

    async def _after_conflict(self, account_id: int, batch: list[Waiting], err: Conflict) -> None:
        """409: some client id is taken. The ones found are answered; the others sent again."""
        found = await self._lookup(account_id, batch)
        rest = []
        for waiting in batch:
            hit = found.get(waiting.order.client_id)
            if hit is None:
                rest.append(waiting)
            else:
                waiting.give(Submitted(hit[0], hit[1], found=True))
        if len(rest) == len(batch):  # none found: the 409 is not about any of them we can see
            for waiting in rest:
                waiting.fail(
                    OutcomeUnknown(
                        f"{waiting.what}: client id {waiting.order.client_id} refused as taken"
                        " (409) in a batch, and no order with it was found",
                        status=409,
                        request_id=err.request_id,
                    )
                )
            return
        if rest:
            await self._send(account_id, rest)

    async def _after_refusal(self, account_id: int, batch: list[Waiting], err: Rejected) -> None:
        """400/413/422 on the whole batch: too large, or refused because of one order."""
        limit = size_limit(err, len(batch))
        if limit is not None and len(batch) > 1:
            if limit < self._size:
                events.batch_size_lowered(size=limit, was=self._size, request_id=err.request_id)
                self._size = limit
            await self._send_split(account_id, batch, max(1, min(limit, len(batch) // 2 or 1)))
            return
        named = named_in(err, batch)
        if named is not None:
            named.fail(err)
            rest = [w for w in batch if w is not named]
            if rest:
                await self._send(account_id, rest)
            return
        await self._bisect(account_id, batch, err)

    async def _bisect(self, account_id: int, batch: list[Waiting], err: Rejected) -> None:
        """`batch` was refused whole for an order it does not name: find that order."""
        if len(batch) == 1:
            batch[0].fail(err)  # alone, or the rest of its refused batch was all accepted
            return
        half = len(batch) // 2
        first, second = batch[:half], batch[half:]
        if await self._send(account_id, first):
            await self._bisect(account_id, second, err)  # the refused order is in here
        else:
            await self._send(account_id, second)  # the first half held one; this, unknown

    async def _send_split(self, account_id: int, batch: list[Waiting], size: int) -> None:
        parts = [batch[i : i + size] for i in range(0, len(batch), size)]
        await asyncio.gather(*(self._send(account_id, part) for part in parts))

    async def _lookup(
        self, account_id: int, batch: Sequence[Waiting]
    ) -> dict[str, tuple[Order, str]]:
        """The orders that exist under these client ids (retried as reads), LOOKUP_CHUNK ids a
        request: ~3.7 kB of query string."""
        ids = [w.order.client_id for w in batch]
        found: dict[str, tuple[Order, str]] = {}
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start : start + LOOKUP_CHUNK]
            reply = await self._reader.retried(
                f"orders of account {account_id} by client id",
                functools.partial(self._api.orders_by_client_id, account_id, chunk),
            )
            found.update((o.client_order_id, (o, reply.request_id)) for o in reply.data)
        return found
