"""The account's ledger (its executions) as the truth of a position: pure decisions, no requests.

A target is reconciled from a known point: the plan's positions read `start`, and every fill on
the instrument the executions listing shows from the ledger's window start on, oldest first. The
plan's read may or may not already hold the fills before the job's first own fill (a positions
listing may lag), so the position now is `start` plus the fills from some index `j` on, for a `j`
no later than that first own fill. A positions read is
- current: it is one of those values, and no earlier state of the ledger explains it;
- stale: it is the position as of an earlier fill (a listing behind the ledger): read again;
- unexplained: neither (a fill the executions listing does not show yet): read the ledger again.

Every fill is someone's: the job's own orders (by id or client id, `worker.closing.modes`), a
late-applied close (`is_late_close`), or another participant's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
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


class Reading(Enum):
    CURRENT = "current"
    STALE = "stale"
    UNEXPLAINED = "unexplained"


@dataclass(frozen=True, slots=True)
class Judgement:
    reading: Reading
    # The last fill every later positions read must hold (a listing does not go back in time);
    # None: none proven yet.
    floor: str | None


def signed(execution: Execution) -> Decimal:
    """A fill's effect on the position: a buy adds, a sale (short or not) takes away."""
    return -execution.quantity if execution.side.startswith("SELL") else execution.quantity


def fills_of(executions: Iterable[Execution], instrument_id: str) -> list[Fill]:
    """The instrument's fills, oldest first (a listing is newest first), one per execution."""
    iid = instrument_id.lower()
    mine = [e for e in executions if (e.instrument_id or "").lower() == iid]
    mine.sort(key=lambda e: e.transaction_time)  # stable: equal times keep the listing's order
    return [Fill(e.id, e.order_id, signed(e)) for e in mine]


def first_own(fills: Sequence[Fill], own_ids: Collection[str]) -> int:
    """The index of the first fill of an order the job made after its plan (len: none yet):
    the plan's read cannot hold it, nor anything after it."""
    return next((i for i, f in enumerate(fills) if f.order_id in own_ids), len(fills))


def judge(
    read: Decimal,
    start: Decimal,
    fills: Sequence[Fill],
    own_ids: Collection[str],
    floor: str | None = None,
) -> Judgement:
    """Whether a positions read is the position now, as the ledger has it (module docstring).

    A read that matches an earlier state of the ledger as well as the current one waits: which
    it is cannot be told (the floor then rules out what earlier reads already passed).
    """
    n = len(fills)
    sums = [Decimal(0)]
    for fill in fills:
        sums.append(sums[-1] + fill.signed)
    latest = min(first_own(fills, own_ids), n)
    low = next((i + 1 for i, f in enumerate(fills) if f.id == floor), 0)
    stale = [
        m
        for j in range(latest + 1)
        for m in range(max(j, low), n)
        if start + sums[m] - sums[j] == read
    ]
    if stale:
        return Judgement(Reading.STALE, _floor(fills, min(stale), floor))
    if any(start + sums[n] - sums[j] == read for j in range(latest + 1)):
        return Judgement(Reading.CURRENT, _floor(fills, n, floor))
    return Judgement(Reading.UNEXPLAINED, floor)


def _floor(fills: Sequence[Fill], held: int, floor: str | None) -> str | None:
    """The id of the last of the first `held` fills (None: none), never below `floor`."""
    if held == 0:
        return floor
    low = next((i + 1 for i, f in enumerate(fills) if f.id == floor), 0)
    return fills[max(held, low) - 1].id


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


def is_late_close(order: Order, *, sides: Collection[str], unanswered: bool) -> bool:
    """close_position: an order the job does not know is its close applied late only if a close
    of the job's went unanswered, it is a market order, and it is on a side the job closed on.
    (Not in the orders snapshot before the fan-out is the sender's check.)"""
    return unanswered and order.order_type == "MARKET" and order.side in sides
