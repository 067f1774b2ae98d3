"""What following holds for one target between polls (`Followed`), following's settings, the
signed fills the expected position is counted from, and how long an account's targets may go
unread while they rest on the job's LIMIT or wait for an IOC wave. No reads, no sends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from worker.api.models import WORKING_STATUSES, Order
from worker.closing.books import Books
from worker.closing.modes import Sender
from worker.closing.target import Target
from worker.results import TargetResult


@dataclass(slots=True)
class Followed:
    target: Target
    result: TargetResult
    deadline: float  # monotonic
    books: Books  # its fills as the account's ledger shows them
    quiet_until: float = 0.0  # no residue close before this (after an unknown outcome)
    # A target that failed with its last close's fate unknown: followed to report what the
    # server did (flat: closed); read open with nothing working, it gets a residue close like
    # any other; its failure stands if it never reads flat.
    watch_only: bool = False
    # Handed over with no close of this run sent (withheld for orders that could still fill,
    # or adopted): following's first close is the target's first close, not a residue's, so
    # MAX_RESIDUE_CLOSES counts from the one after it.
    first_unsent: bool = False
    # What the position must read: `position_ref` (the plan's read; with close_position, the
    # position the server sized the first close for) plus the signed fills of the job's orders
    # since `fills_ref`, plus those of others' orders on the instrument since `others_ref`. A
    # read that is anything else is a lagging listing or a fill nobody can explain: nothing is
    # decided on it (a residue sized from it could flip the position); it is read again.
    position_ref: Decimal = Decimal(0)
    fills_ref: Decimal = Decimal(0)
    # Others' orders on the instrument, by id: their signed fills when first known (the
    # reference), and as last read. Each is read by id until a listing shows it final.
    others_ref: dict[str, Decimal] = field(default_factory=dict)
    others_now: dict[str, Decimal] = field(default_factory=dict)
    others_done: set[str] = field(default_factory=set)
    others_ended: list[Order] = field(default_factory=list)  # ... as read final
    anchored: bool = False  # the reference is the run's first close as the server sized it
    # A close sent with its outcome unknown and its order not yet found: the position it was
    # sent for. Nothing is decided for the target until its order is found, or a look after
    # quiet_until shows nothing was created.
    unresolved: Decimal | None = None
    unresolved_residue: bool = False  # ... and it was a residue close (it counts until then)
    # The last read left the target undecided (a listing stale): at its deadline it is read once
    # more before it is called not flat.
    undecided: bool = False
    last_chance: bool = False
    last_read: bool = False  # the one more read at the deadline has been granted
    read_once: bool = False  # a poll has read it (one handed over during a read has not)


@dataclass(frozen=True)
class FollowSettings:
    timeout_s: float = 120.0
    first_pause_s: float = 0.2
    max_pause_s: float = 2.0
    max_residue: int = 2
    grace_s: float = 8.0  # after a stop request, how long following may still read
    # Protected: while every target of an account has its LIMIT working, nothing is decided
    # from a read and the escalation pokes the account, so reads come at most this often.
    resting_pause_s: float | None = None


def job_fills(result: TargetResult, *, prior_only: bool = False) -> Decimal:
    """What the job's orders have filled, signed as it moves the position (a sell is minus);
    `prior_only`: only the orders created before this run sent anything for the target."""
    return sum(
        (
            Decimal(o.filled_quantity) * (-1 if o.side.startswith("SELL") else 1)
            for o in result.orders
            if o.prior or not prior_only
        ),
        Decimal(0),
    )


def signed_fill(order: Order) -> Decimal:
    return order.filled_quantity * (-1 if order.side.startswith("SELL") else 1)


def resting_pause(pending: Iterable[Followed], resting_pause_s: float | None) -> float:
    """`resting_pause_s` while every pending target rests on a working LIMIT order of the
    job (protected, before its escalation), else 0."""
    if resting_pause_s is None:
        return 0.0
    for followed in pending:
        if followed.watch_only or followed.unresolved is not None:
            return 0.0
        orders = followed.result.orders
        if not any(o.status in WORKING_STATUSES and o.order_type == "LIMIT" for o in orders):
            return 0.0
    return resting_pause_s


def wave_pause(pending: Iterable[Followed], sender: Sender, now: float) -> float:
    """IOC waves (PROTECTED_VIA=ioc_waves): while every pending target waits for its next
    wave, until the first of them (an IOC ends as it meets the book: nothing to read
    before), else 0. So an account is read once a wave, just before the wave is sized."""
    soonest: float | None = None
    for followed in pending:
        if followed.watch_only or followed.unresolved is not None:
            return 0.0
        at = sender.wave_at(followed.target)
        if at is None:
            return 0.0
        soonest = at if soonest is None else min(soonest, at)
    return 0.0 if soonest is None else max(0.0, soonest - now)
