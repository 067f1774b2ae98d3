"""The account's ledger (its executions) as the truth of a position: pure decisions, no requests.

A target is reconciled from a known point: the plan's positions read `start`, and every fill on
the instrument the executions listing shows from the ledger's window start on, oldest first. The
plan's read may or may not already hold the fills before the job's first own fill (a positions
listing may lag), so the position now is `start` plus the fills from some index `j` on, for a `j`
no later than that first own fill. A positions read is
- current: it is one of those values, and no earlier state of the ledger explains it too;
- stale: it is the position as of an earlier fill (a listing behind the ledger): read again;
- unexplained: neither (a fill the executions listing does not show yet): read the ledger again.

Every fill is someone's: the job's own orders (by id or client id, `worker.closing.modes`), a
late-applied close (`is_late_close`), or another participant's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum

from worker.api.models import Execution, Order


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution as the ledger counts it: which one, whose order, signed as it moves the
    position (a buy is plus)."""

    id: str
    order_id: str
    signed: Decimal
    at: datetime | None = None  # its transaction time (the server's clock)


class Reading(Enum):
    CURRENT = "current"
    STALE = "stale"
    UNEXPLAINED = "unexplained"


@dataclass(frozen=True, slots=True)
class Seen:
    """What earlier positions reads proved, as fill ids (a listing does not go back in time):
    where the plan's read may end in the ledger (`plan`, None: anywhere; a None in it: before
    the first fill), and the last fill every later read holds (`floor`, None: none yet)."""

    plan: frozenset[str | None] | None = None
    floor: str | None = None


@dataclass(frozen=True, slots=True)
class Judgement:
    reading: Reading
    seen: Seen
    # The time of the last fill the read is proven to hold: the account's positions listing
    # (one snapshot of the account) holds every fill up to then, on any instrument.
    holds_until: datetime | None = None


def signed(execution: Execution) -> Decimal:
    """A fill's effect on the position: a buy adds, a sale (short or not) takes away."""
    return -execution.quantity if execution.side.startswith("SELL") else execution.quantity


def fills_of(executions: Iterable[Execution], instrument_id: str) -> list[Fill]:
    """The instrument's fills, oldest first (a listing is newest first), one per execution."""
    iid = instrument_id.lower()
    # A fill of side OTHER moves the position by an amount no one can say: left out, so the
    # reads it moved stay unexplained.
    mine = [
        e
        for e in executions
        if (e.instrument_id or "").lower() == iid and e.side in ("BUY", "SELL", "SELL_SHORT")
    ]
    mine.reverse()  # oldest first; the sort is stable, so equal times keep that order
    mine.sort(key=lambda e: e.transaction_time)
    return [Fill(e.id, e.order_id, signed(e), e.transaction_time) for e in mine]


def first_own(fills: Sequence[Fill], own_ids: Collection[str]) -> int:
    """The index of the first fill of the job's (len: none yet): none the plan's read can hold
    (an earlier run's orders count only past what it holds: `held_by_plan`), so neither can it
    hold anything after it."""
    return next((i for i, f in enumerate(fills) if f.order_id in own_ids), len(fills))


def judge(
    read: Decimal,
    start: Decimal,
    fills: Sequence[Fill],
    own_ids: Collection[str],
    seen: Seen = Seen(),
    holds_until: datetime | None = None,
) -> Judgement:
    """Whether a positions read is the position now, as the ledger has it (module docstring).

    A read is a pair (the fills the plan's read held, the fills this read holds): current when
    every pair that explains it holds all the fills; stale when one holds fewer (which it is
    cannot be told: it is read again). What earlier reads proved narrows the pairs; should
    nothing then explain the read, it is unexplained, unless it is the position now under every
    reading at all (then those proofs were coincidences, and are dropped). `holds_until`: an
    earlier read of the account's positions held every fill up to then, so this one does too.
    """
    n = len(fills)
    latest = min(first_own(fills, own_ids), n)
    sums = [Decimal(0)]
    for fill in fills:
        sums.append(sums[-1] + fill.signed)
    bounds: list[str | None] = [None, *(f.id for f in fills)]  # bounds[k]: the k-th fill's id

    def pairs(plan: frozenset[str | None] | None, low: int) -> list[tuple[int, int]]:
        return [
            (j, m)
            for j in range(latest + 1)
            if plan is None or bounds[j] in plan
            for m in range(max(j, low), n + 1)
            if start + sums[m] - sums[j] == read
        ]

    low = bounds.index(seen.floor) if seen.floor in bounds else 0
    if holds_until is not None:
        low = max(low, sum(1 for f in fills if f.at is not None and f.at <= holds_until))
    found = pairs(seen.plan, low)
    if not found:
        # Nothing that earlier reads allow explains it: a fill the ledger does not list yet
        # (read again), unless every reading at all makes it the position now (then the
        # earlier proofs were coincidences).
        found = pairs(None, 0)
        if not found or any(m < n for _, m in found):
            return Judgement(Reading.UNEXPLAINED, seen)
    held = min(m for _, m in found)
    proved = Seen(frozenset(bounds[j] for j, _ in found), bounds[held])
    current = all(m == n for _, m in found)
    until = fills[held - 1].at if held else None
    return Judgement(Reading.CURRENT if current else Reading.STALE, proved, until)


def held_by_plan(fills: Sequence[Fill], orders: Collection[str], held: Decimal) -> list[Fill]:
    """The fills less those the plan's read holds: of the job's earlier orders (`orders`), the
    oldest fills, `held` in all (what they had filled at the plan's read). The runs that sent
    them followed them; what they fill from then on counts like any fill."""
    left = abs(held)
    kept = []
    for fill in fills:
        if left <= 0 or fill.order_id not in orders:
            kept.append(fill)
            continue
        size = abs(fill.signed)
        if size > left:  # the rest of this execution came after
            rest = (size - left) * (1 if fill.signed > 0 else -1)
            kept.append(Fill(fill.id, fill.order_id, rest, fill.at))
        left -= size
    return kept


def safe_size(position: Decimal, fills: Sequence[Fill]) -> Decimal:
    """The most a first order may close when the plan read `position` and the ledger shows these
    fills since its window began: whichever of them the read does not hold yet, the order never
    takes the position past zero. 0: some reading leaves nothing on the plan's side (send
    nothing; following decides from a confirmed read)."""
    if position == 0:
        return position
    total = sum((f.signed for f in fills), Decimal(0))
    side = 1 if position > 0 else -1
    smallest = position
    for fill in fills:  # the position if the read held the fills up to this one, and no more
        now = position + total
        if now * side <= 0:
            return Decimal(0)
        if abs(now) < abs(smallest):
            smallest = now
        total -= fill.signed
    return smallest


# The sides a close may take: the server sizes a close, and picks its side, as the position
# stands when it is applied, so one applied late may be on either (another's fill may have
# flipped the position meanwhile).
CLOSING_SIDES = frozenset({"BUY", "SELL"})


def is_late_close(
    order: Order, *, sides: Collection[str] = CLOSING_SIDES, unanswered: bool
) -> bool:
    """close_position: an order the job does not know is its close applied late only if a close
    of the job's went unanswered, it is a market order, and it is on one of `sides` (any side
    a close may take, unless the caller knows better). (Not in the orders snapshot before the
    fan-out is the sender's check.)"""
    return unanswered and order.order_type == "MARKET" and order.side in sides
