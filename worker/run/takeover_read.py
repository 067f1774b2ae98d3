"""The takeover's reads: the job's earlier orders at the server, by the ids the journal holds,
and the positions they leave, confirmed at one point (`worker.run.takeover` decides from them).

Orders, positions, orders again, until both order reads agree on what filled: the positions
read between them is then what those fills left. Nothing here sends an order or a cancel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from worker.api.client import IDS_PER_REQUEST
from worker.api.models import Order, Position
from worker.api.reads import Reader
from worker.closing.client_ids import client_order_id
from worker.closing.followed import signed_fill
from worker.errors import ApiError, Unauthorized
from worker.inputs.targets import TargetSpec
from worker.observe import events
from worker.run.journal_entry import Journaled

Key = tuple[int, str]  # (account_id, instrument_id in lower case)
IDS_PER_READ = IDS_PER_REQUEST
CONFIRM_ROUNDS = 5  # orders, positions, orders: again while a fill lands between the reads


@dataclass(slots=True)
class Earlier:
    """One position's orders of earlier runs of the job, as last read, and that read."""

    orders: list[Order]
    request_id: str

    @property
    def instrument_type(self) -> str | None:
        """The instrument's type as the orders give it (None: none says)."""
        return next((o.instrument_type for o in self.orders if o.instrument_type), None)

    @property
    def fills(self) -> Decimal:
        """What they filled, signed as it moves the position (a sell is minus)."""
        return sum(map(signed_fill, self.orders), Decimal(0))


def wanted_ids(journaled: Journaled, specs: Sequence[TargetSpec]) -> dict[int, dict[str, Key]]:
    """Per account the specs name, the ids to look the job's earlier orders up by (client ids
    of every generation recorded, order ids journaled), each with its position. A position an
    earlier run reported flat, in a run that ended with exit 0, is left out: that run's report
    lists its orders."""
    accounts = {s.account_id for s in specs}
    wanted: dict[int, dict[str, Key]] = {}
    for key, prior in journaled.priors.items():
        if key in journaled.reported:
            continue
        if key[0] in accounts and prior.generation is not None:
            for generation in range(prior.generation + 1):
                cid = client_order_id(journaled.job, key[0], key[1], generation)
                wanted.setdefault(key[0], {})[cid] = key
    for key, order_ids in journaled.order_ids.items():
        if key[0] in accounts and key not in journaled.reported:
            for order_id in order_ids:
                wanted.setdefault(key[0], {})[order_id] = key
    return wanted


async def confirm(
    reader: Reader, account_id: int, ids: Mapping[str, Key]
) -> tuple[dict[Key, Earlier], dict[Key, Position]]:
    """Orders, positions, orders: until both order reads agree on what filled (at most
    CONFIRM_ROUNDS), so the positions read is what those fills left. An account that cannot
    be read keeps its plan as read (following reads what its orders do)."""
    try:
        return await _confirmed(reader, account_id, ids)
    except Unauthorized:
        raise
    except ApiError as err:
        events.adoption_skipped(
            account_id=account_id,
            reason=f"the job's earlier orders could not be read: {err}",
            request_id=err.request_id,
        )
        return {}, {}


async def _confirmed(
    reader: Reader, account_id: int, ids: Mapping[str, Key]
) -> tuple[dict[Key, Earlier], dict[Key, Position]]:
    before = await _earlier(reader, account_id, ids)
    if not before:
        return {}, {}
    positions: dict[Key, Position] = {}
    for _ in range(CONFIRM_ROUNDS):
        listed, _ = await reader.positions(account_id)
        positions = {(account_id, p.instrument_id.lower()): p for p in listed}
        # Only an order that could still fill can have moved: read again by its id.
        working = {o.id: k for k, e in before.items() for o in e.orders if o.working}
        if not working:
            break
        again = await _earlier(reader, account_id, working)
        moved = [k for k, e in again.items() if e.fills != _fills_of(before[k], e)]
        for key, e in again.items():
            before[key] = _merged(before[key], e)
        if not moved:
            break
    return before, positions


def _fills_of(known: Earlier, reread: Earlier) -> Decimal:
    """What the orders read again had filled when `known` was read."""
    ids = {o.id for o in reread.orders}
    return Earlier([o for o in known.orders if o.id in ids], "").fills


def _merged(known: Earlier, reread: Earlier) -> Earlier:
    """`known`, each order read again replaced by its new read."""
    fresh = {o.id: o for o in reread.orders}
    return Earlier([fresh.get(o.id, o) for o in known.orders], reread.request_id)


async def _earlier(reader: Reader, account_id: int, ids: Mapping[str, Key]) -> dict[Key, Earlier]:
    """The account's orders under these ids (client ids or order ids), by position."""
    found: dict[Key, Earlier] = {}
    names = list(ids)
    for start in range(0, len(names), IDS_PER_READ):
        listed, request_ids = await reader.orders_by_id(
            account_id, names[start : start + IDS_PER_READ]
        )
        for o in listed:
            # Only an id or client id the journal gave counts, on the position it was sent for.
            key = ids.get(o.client_order_id) if o.client_order_id in ids else ids.get(o.id)
            if key is None or (o.instrument_id and o.instrument_id.lower() != key[1]):
                continue
            earlier = found.setdefault(key, Earlier([], request_ids[-1] if request_ids else ""))
            if all(known.id != o.id for known in earlier.orders):
                earlier.orders.append(o)
    return found
