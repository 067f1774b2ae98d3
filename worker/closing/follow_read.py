"""Following's read: what one poll reads for an account. The working orders on its open
instruments (by status, any age), the job's own orders by id, and the positions of the
instruments where no order works (while one does, nothing is decided from the position, and
under a rate limit a read costs as much as an order), with those instruments' fills from the
account's ledger. It reads only; what a read means is `closing.follow_decide`'s."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from worker.api.client import IDS_PER_REQUEST
from worker.api.models import WORKING_STATUSES, Execution, Order
from worker.closing import books
from worker.closing.followed import Followed, FollowSettings
from worker.closing.send import CloseContext

CHUNK = IDS_PER_REQUEST


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
    """Reads an account for following; remembers whether the server lists executions."""

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

        Orders come from up to three listings, merged by id: every order that can still fill, of
        any age (by status); the job's own orders and the others' orders counted in the expected
        position not read final there, by their ids (and the client id a close whose reply was
        lost went under); and, while such a close is not found, every order on the instruments
        (no time bound).
        """
        positions: dict[str, Decimal] = {}
        positioned: set[str] = set()
        request_id = ""
        orders: dict[str, list[Order]] = {}
        fills: dict[str, list[Execution]] | None = {} if self.ledger else None
        reader = self._ctx.reader
        for start in range(0, len(instrument_ids), CHUNK):
            chunk = instrument_ids[start : start + CHUNK]
            request_id = await self._read_orders(account_id, pending, chunk, orders)
            needed = [
                iid
                for iid in chunk
                if iid not in pending
                or self._needs_position(pending[iid], orders.get(iid.lower(), []), final)
            ]
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
                fills = None if read_fills is None else {**fills, **read_fills}
        return Read(positions, positioned, orders, fills, request_id)

    async def _read_orders(
        self,
        account_id: int,
        pending: Mapping[str, Followed],
        chunk: Sequence[str],
        orders: dict[str, list[Order]],
    ) -> str:
        """One chunk's orders, merged by id into `orders`; the working listing's request_id.

        Orders first: an order read as done had filled before the positions were read, so a
        position read open beside it is truly open (the other way round, a fill between the
        reads looks like a residue that is not there)."""
        reader = self._ctx.reader
        followed = [pending[iid] for iid in chunk if iid in pending]
        listed_orders, request_ids = await reader.working_orders(account_id, chunk)
        if any(f.unresolved is not None for f in followed):
            # A close whose reply was lost may have filled already: the instruments' final
            # orders too. Not bounded by time (order timestamps may run behind the server's
            # clock): which are the job's is told by identity (`recognises`).
            recent, _ = await reader.orders(account_id, chunk, None)
            listed_orders = [*listed_orders, *recent]
        seen = {o.id for o in listed_orders}
        wanted = [i for i in self._ids_to_read(followed) if i not in seen]
        for first in range(0, len(wanted), CHUNK):
            by_id, _ = await reader.orders_by_id(account_id, wanted[first : first + CHUNK])
            listed_orders = [*listed_orders, *by_id]
        merged: dict[str, Order] = {}
        for o in listed_orders:
            merged[o.id] = _fresher(merged.get(o.id), o)
        for o in merged.values():
            # UUIDs are case-insensitive: a listing may spell one unlike the plan did.
            orders.setdefault((o.instrument_id or "").lower(), []).append(o)
        return request_ids[-1]

    def _needs_position(self, followed: Followed, orders: Sequence[Order], final: bool) -> bool:
        """Whether a poll must read the target's position: when no order on the instrument is
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

    def _ids_to_read(self, followed: Iterable[Followed]) -> list[str]:
        """The job's orders not yet read final, and the client id a lost reply went under."""
        ids: list[str] = []
        for f in followed:
            ids.extend(o.id for o in f.result.orders if o.status in WORKING_STATUSES)
            # Others' orders counted in the expected position: their fills, to the last one.
            ids.extend(i for i in f.others_now if i not in f.others_done)
            if f.unresolved is not None:
                named = self._ctx.sender.client_id(f.target, f.result)
                if named is not None:
                    ids.append(named[0])
        return list(dict.fromkeys(ids))


def _fresher(known: Order | None, other: Order) -> Order:
    """Of two listings of one order, the one further along (final, or more filled)."""
    if known is None:
        return other
    if known.working and not other.working:
        return other
    if other.working == known.working and other.filled_quantity > known.filled_quantity:
        return other
    return known
