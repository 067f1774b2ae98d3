"""Following's read: what one round reads for an account, per CHUNK of its instruments: one
orders listing (every order on the instruments, any status, created from the round's floor on),
then, only for the instruments where no order works (while one does, nothing is decided from the
position, and under a rate limit a read costs as much as an order), one listing by status of the
orders that can still fill there (of any age: the floor rests on the order system's stamps, and
an order stamped before it must not work unseen where a position is decided from), one positions
read and one read of their fills in the account's ledger. An order behind such a fill that the
listing did not show (a listing behind the ledger) is read by its id, all of the round's at once.
It reads only; what a read means is `closing.follow_decide`'s.

Per account and round that is, per CHUNK instruments: one orders read, and at most one listing
by status, one positions read and one executions read (each a request, or more pages for an
account with more than a page of orders), and nothing else unless the ledger shows a fill of an
order no listing did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from worker.api.client import IDS_PER_REQUEST
from worker.api.models import Execution, Order
from worker.closing import books
from worker.closing.followed import Followed, FollowSettings
from worker.closing.send import CloseContext

CHUNK = IDS_PER_REQUEST
# At least this much before the earliest stamp the orders listing must show, with
# RECONCILE_LOOKBACK 0: a stamp written to the microsecond may compare a hair later at the
# server than the order it names.
MIN_MARGIN = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Read:
    """One poll of an account, keyed by lower-cased instrument id."""

    positions: dict[str, Decimal]
    positioned: set[str]  # the instruments (as followed) whose positions were read
    orders: dict[str, list[Order]]
    fills: dict[str, list[Execution]] | None  # None: the server lists no executions
    request_id: str  # the orders listing's

    def position(self, instrument_id: str) -> Decimal | None:
        """The instrument's position; None: not read (an order on it is working)."""
        if instrument_id not in self.positioned:
            return None
        return self.positions.get(instrument_id.lower(), Decimal(0))

    def orders_of(self, instrument_id: str) -> list[Order]:
        return self.orders.get(instrument_id.lower(), [])

    def fills_of(self, instrument_id: str) -> list[Execution] | None:
        return None if self.fills is None else self.fills.get(instrument_id.lower())


class AccountReads:
    """Reads an account for following; remembers whether the server lists executions, and the
    earliest order each account's reads have shown (the floor of its orders listing)."""

    def __init__(
        self,
        ctx: CloseContext,
        settings: FollowSettings,
        *,
        since: datetime,
        clock: Callable[[], float],
    ) -> None:
        self._ctx = ctx
        self._settings = settings
        self._since = since
        self._clock = clock
        self._earliest: dict[int, datetime] = {}
        self.ledger = True  # False: the server lists no executions (decided from orders)

    async def read(
        self,
        account_id: int,
        pending: Mapping[str, Followed],
        instrument_ids: Sequence[str],
        *,
        final: bool = False,
    ) -> Read:
        """Positions and orders of these instruments, the instruments whose positions were read,
        their fills from the ledger's window on (None: the server lists none), and the orders
        listing's request_id.

        Orders come from one listing per CHUNK instruments, any status, created from the floor
        on (`_floor`); and the orders behind fills it did not show, by id."""
        positions: dict[str, Decimal] = {}
        positioned: set[str] = set()
        request_id = ""
        orders: dict[str, list[Order]] = {}
        fills: dict[str, list[Execution]] | None = {} if self.ledger else None
        reader = self._ctx.reader
        for start in range(0, len(instrument_ids), CHUNK):
            chunk = instrument_ids[start : start + CHUNK]
            request_id, bounded = await self._read_orders(account_id, pending, chunk, orders)
            needed = self._needed(pending, chunk, orders, final)
            if needed and bounded:
                # The listing's floor rests on the order system's stamps; an order stamped
                # before it, made later, is not in it. Before a position is decided from
                # (flat, or a residue), nothing may work there unseen: one listing by status.
                await self._working(account_id, needed, orders)
                needed = self._needed(pending, needed, orders, final)
            if not needed:
                continue
            listed, _ = await reader.positions(account_id, needed)
            positioned.update(needed)
            for p in listed:
                iid = p.instrument_id.lower()
                positions[iid] = positions.get(iid, Decimal(0)) + p.quantity
            if fills is not None:
                # After the positions: every fill a positions read can hold is in it (unless
                # the executions listing lags too: then the read is unexplained, read again).
                # None: no executions listing (404); decided from the orders from then on.
                read_fills = await books.read_fills(reader, account_id, needed, self._since)
                self.ledger = read_fills is not None
                if read_fills is None:
                    fills = None
                else:
                    fills.update(read_fills)
                    await self._ledger_orders(account_id, pending, needed, read_fills, orders)
        return Read(positions, positioned, orders, fills, request_id)

    async def _read_orders(
        self,
        account_id: int,
        pending: Mapping[str, Followed],
        chunk: Sequence[str],
        orders: dict[str, list[Order]],
    ) -> tuple[str, bool]:
        """One chunk's orders, merged by id into `orders`; the listing's request_id, and
        whether it was bounded in time.

        Orders first: an order read as done had filled before the positions were read, so a
        position read open beside it is truly open (the other way round, a fill between the
        reads looks like a residue that is not there)."""
        floor = self._floor(account_id, pending, chunk)
        listed, request_ids = await self._ctx.reader.orders(account_id, chunk, floor)
        self._merge(account_id, listed, orders)
        return request_ids[-1], floor is not None

    def _needed(
        self,
        pending: Mapping[str, Followed],
        instrument_ids: Sequence[str],
        orders: Mapping[str, Sequence[Order]],
        final: bool,
    ) -> list[str]:
        """The instruments whose positions (and fills) the round reads."""
        return [
            iid
            for iid in instrument_ids
            if iid not in pending
            or self._needs_position(pending[iid], orders.get(iid.lower(), []), final)
        ]

    async def _working(
        self, account_id: int, instrument_ids: Sequence[str], orders: dict[str, list[Order]]
    ) -> None:
        """The orders that can still fill on these instruments, of any age (by status, never
        bounded by time), merged into `orders`: one the time-bounded listing did not show (its
        stamp earlier than the floor) is seen, and lowers the floor of the rounds after."""
        listed, _ = await self._ctx.reader.working_orders(account_id, instrument_ids)
        for o in listed:
            same = orders.setdefault((o.instrument_id or "").lower(), [])
            shown = next((k for k, known in enumerate(same) if known.id == o.id), None)
            if shown is not None:
                same[shown] = _fresher(same[shown], o)
                continue
            same.append(o)
            if account_id not in self._earliest or o.created_at < self._earliest[account_id]:
                self._earliest[account_id] = o.created_at

    def _floor(
        self, account_id: int, pending: Mapping[str, Followed], chunk: Sequence[str]
    ) -> datetime | None:
        """From when the chunk's orders listing must reach back (None: no bound) to show every
        order a decision needs: the earliest stamp of the job's orders (its earlier runs' too),
        of every order that could fill at the orders snapshot before the fan-out (any age), of
        every order an earlier read showed, and the ledger's window start; then RECONCILE_LOOKBACK
        more (how far apart the stamps of orders made in turn may be). An order made later is
        stamped later by the order system's clock, whatever the server's clock says. Unbounded
        when no snapshot of the account was read (an older order may still work unseen), or
        while a close whose reply was lost is not found (its order is known by nothing yet)."""
        if account_id not in self._ctx.read_accounts:
            return None
        if any(pending[iid].unresolved is not None for iid in chunk if iid in pending):
            return None
        stamps = [self._since]
        stamps.extend(o.created_at for o in self._ctx.working_before.get(account_id, []))
        stamps.extend(
            o.created_at
            for f in pending.values()
            for o in f.result.orders
            if o.created_at is not None
        )
        if account_id in self._earliest:
            stamps.append(self._earliest[account_id])
        return min(stamps) - max(self._ctx.lookback, MIN_MARGIN)

    def _merge(
        self, account_id: int, listed: Iterable[Order], orders: dict[str, list[Order]]
    ) -> None:
        """Listed orders into `orders` by instrument (the further along of two listings of one
        order), and into the account's floor."""
        merged: dict[str, Order] = {}
        for o in listed:
            merged[o.id] = _fresher(merged.get(o.id), o)
            if account_id not in self._earliest or o.created_at < self._earliest[account_id]:
                self._earliest[account_id] = o.created_at
        for o in merged.values():
            # UUIDs are case-insensitive: a listing may spell one unlike the plan did.
            orders.setdefault((o.instrument_id or "").lower(), []).append(o)

    async def _ledger_orders(
        self,
        account_id: int,
        pending: Mapping[str, Followed],
        instrument_ids: Sequence[str],
        fills: Mapping[str, Sequence[Execution]],
        orders: dict[str, list[Order]],
    ) -> None:
        """The orders behind fills the ledger shows that neither the listing nor the job knows
        (a close applied late, or another's fill, the listing behind the ledger), each read by
        its id, current while listings lag; all of the round's at once, before any decision.
        An order found to be another's is not read again."""
        wanted: dict[str, Followed] = {}
        for iid in instrument_ids:
            followed = pending.get(iid)
            executions = fills.get(iid.lower())
            if followed is None or not executions:
                continue
            known = {o.id for o in followed.result.orders}
            known.update(o.id for o in orders.get(iid.lower(), []))
            for order_id in followed.books.unknown(known, executions):
                wanted.setdefault(order_id, followed)
        if not wanted:
            return
        ids = sorted(wanted)
        replies = await asyncio.gather(
            *(self._ctx.reader.order(account_id, i) for i in ids), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        for order_id, reply in zip(ids, replies, strict=True):
            if reply is None or isinstance(reply, BaseException):
                continue
            followed, order = wanted[order_id], reply.data
            sender, priors = self._ctx.sender, self._ctx.priors
            if not books.is_job_order(sender, priors, followed.target, followed.result, order):
                followed.books.others.add(order_id)
            if account_id not in self._earliest or order.created_at < self._earliest[account_id]:
                self._earliest[account_id] = order.created_at
            orders.setdefault(followed.target.instrument_id.lower(), []).append(order)

    def _needs_position(self, followed: Followed, orders: Sequence[Order], final: bool) -> bool:
        """Whether a round must read the target's position: when no order on the instrument is
        working (flat, a residue, or a lagging listing is decided from it); when a close's
        outcome is unknown or the target is only watched (the position is the proof); and on
        the last read before a stop or FLAT_TIMEOUT settles it, so its report carries what the
        position read."""
        if final or followed.watch_only or followed.unresolved is not None:
            return True
        if self._ctx.stopping.is_set():
            return True
        if self._clock() >= followed.deadline - self._settings.max_pause_s:
            return True
        return not any(o.working for o in orders)


def _fresher(known: Order | None, other: Order) -> Order:
    """Of two listings of one order, the one further along (final, or more filled)."""
    if known is None:
        return other
    if known.working and not other.working:
        return other
    if other.working == known.working and other.filled_quantity > known.filled_quantity:
        return other
    return known
