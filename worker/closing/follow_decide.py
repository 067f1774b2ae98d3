"""Following's decision: take in what one poll read for one target and say what to do, as a
value (`Decision`): flat, a residue close for the position as read, or wait. Taking in the read
records the job's orders found late (journaled like every order of the run) and counts others'
orders on the instrument; it never sends and never settles a target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from worker.api.models import WORKING_STATUSES, Execution, Order
from worker.closing import books, ledger
from worker.closing import target as life
from worker.closing.evidence import Step, follow_step
from worker.closing.followed import Followed, FollowSettings, job_fills, signed_fill
from worker.closing.modes import Sender
from worker.closing.send import CloseContext
from worker.observe import events

MIN_TIME = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do for one target after one poll. `RESIDUE`: close `position` (as read)."""

    step: Step = Step.WAIT
    position: Decimal = Decimal(0)
    by_unfound_close: bool = False  # FLAT: proven by the position, its close's order unfound


WAIT = Decision()


class Decider:
    """Decides per target; remembers, per account, up to when its positions listing was proven
    to hold every fill (`closing.ledger`)."""

    def __init__(
        self, ctx: CloseContext, settings: FollowSettings, clock: Callable[[], float]
    ) -> None:
        self._ctx = ctx
        self._settings = settings
        self._clock = clock
        self._holds: dict[int, datetime] = {}

    async def decide(
        self,
        followed: Followed,
        position: Decimal | None,
        orders: list[Order],
        request_id: str,
        executions: list[Execution] | None = None,
    ) -> Decision:
        """Take in what one round read for the target; `position` None: not read (an order on
        the instrument is working, so it waits whatever the position). `orders`: the
        instrument's orders, those behind its fills that no listing showed too (read by id).
        `executions`: the instrument's fills from the ledger's window on (None: not read)."""
        self._intake(followed, position, orders, request_id)
        if position is None:
            return WAIT
        followed.undecided = True
        if self._listings_behind(followed, orders):
            return WAIT
        now = self._clock()
        if followed.unresolved is not None:
            waiting = self._unresolved(followed, position, orders, executions, now)
            if waiting is not None:
                return waiting
        elif not self._agrees(followed, position, executions):
            # A lagging positions listing, or a fill the job cannot explain: a residue sized
            # from it could flip the position. Read again (at the deadline once more, then
            # not_flat with what was read).
            return WAIT
        followed.undecided = False
        step = follow_step(
            position,
            orders,
            residue_sent=followed.result.residue_closes,
            max_residue=self._settings.max_residue + followed.first_unsent,
            may_send=not self._ctx.stopping.is_set()
            and now >= followed.quiet_until
            and now >= (self._ctx.sender.wave_at(followed.target) or now),
        )
        return Decision(step, position)

    def _intake(
        self, followed: Followed, position: Decimal | None, orders: list[Order], request_id: str
    ) -> None:
        """The round's orders and position into the target's result; a close whose reply was
        lost is resolved once an order of the job's not known before is found."""
        result = followed.result
        followed.read_once = True
        listed = {o.id for o in result.orders}  # an earlier run's close, found, stays listed
        known_before = len(result.orders)
        self._take_in(followed, orders, listed, request_id)
        anchor(followed, self._ctx.sender)
        life.position_read(result, position)
        if len(result.orders) > known_before and followed.unresolved is not None:
            followed.unresolved = None  # the close whose reply was lost is found

    @staticmethod
    def _listings_behind(followed: Followed, orders: list[Order]) -> bool:
        """Whether the listings are behind what the job knows, so nothing is decided on them."""
        shown = {o.id for o in orders}
        # An order of the job's that no listing shows, though not read final: the listings
        # are behind it (a lag), not the truth.
        if any(o.status in WORKING_STATUSES and o.id not in shown for o in followed.result.orders):
            return True
        # An order counted in the expected position was not read: read again.
        return any(i not in shown and i not in followed.others_done for i in followed.others_now)

    def _unresolved(
        self,
        followed: Followed,
        position: Decimal,
        orders: list[Order],
        executions: list[Execution] | None,
        now: float,
    ) -> Decision | None:
        """With a close's outcome unknown: what to wait for, flat by an unfound close, or None
        when the position shows the close provably did nothing (it no longer counts)."""
        if any(o.working for o in orders) or now < followed.quiet_until:
            return WAIT
        if position == 0:
            if executions is not None and not self._agrees(followed, position, executions):
                # The ledger does not show what flattened it yet: the close's own fill,
                # whose order is read by id once the executions listing shows it.
                return WAIT
            if not followed.last_chance:
                followed.last_chance = True  # one more read may still list its order
                return WAIT
            followed.undecided = False
            return Decision(Step.FLAT, by_unfound_close=True)
        if position != followed.unresolved:
            return WAIT  # moved, and no order of the job's found to say why: read again
        nothing_created(followed)  # provably did nothing: it does not count
        return None

    def _take_in(
        self, followed: Followed, orders: Sequence[Order], listed: set[str], request_id: str
    ) -> None:
        """The run's orders (by evidence with close_position, by client id with submit_orders):
        those `listed` before the read refreshed, those found late recorded; others' counted."""
        target, result = followed.target, followed.result
        for order in orders:
            if order.id in listed:
                life.note_order(result, order, own=False)  # its status, refreshed
            elif self._is_job_order(followed, order):
                # Found late: listed, journaled and logged like every order of the run. An
                # earlier run's found already done may have filled before the plan's read: the
                # books are told. (One still working is followed like the run's own: its fills
                # from when it is found count.)
                sender, priors = self._ctx.sender, self._ctx.priors
                prior = not order.working and books.of_earlier_run(sender, priors, target, result)
                life.record_orders(
                    self._ctx.journal,
                    self._ctx.run_id,
                    target,
                    result,
                    life.CloseOrders([order], request_id, prior),
                    reconciled=True,
                )
                if prior:
                    followed.books.found_earlier(order)
            else:
                note_other(followed, order)

    def _is_job_order(self, followed: Followed, order: Order) -> bool:
        sender, priors = self._ctx.sender, self._ctx.priors
        return books.is_job_order(sender, priors, followed.target, followed.result, order)

    def _agrees(
        self, followed: Followed, position: Decimal, executions: Sequence[Execution] | None
    ) -> bool:
        """Whether the read is the position now: by the ledger when it was read (`Books`),
        else by the fills of the orders known."""
        if executions is None:
            return explained(followed, position)
        own = {o.id for o in followed.result.orders}
        account, iid = followed.target.account_id, followed.target.instrument_id
        verdict = followed.books.current(position, executions, iid, own, self._holds.get(account))
        if verdict.holds_until is not None:
            self._holds[account] = max(verdict.holds_until, self._holds.get(account, MIN_TIME))
        return verdict.reading is ledger.Reading.CURRENT


def explained(followed: Followed, position: Decimal) -> bool:
    """Whether the read is what the fills known predict. An earlier run's order found
    already filled may have filled before the plan's read or after it (the two are not
    ordered by anything the worker can read): either prediction is taken."""
    predicted = expected(followed)
    return position in (predicted, predicted + followed.fills_ref)


def expected(followed: Followed) -> Decimal:
    """The position the reference and every fill known since predict."""
    others = sum(
        (now - followed.others_ref.get(i, Decimal(0)) for i, now in followed.others_now.items()),
        Decimal(0),
    )
    return followed.position_ref + job_fills(followed.result) - followed.fills_ref + others


def anchor(followed: Followed, sender: Sender) -> None:
    """close_position: the server sized the run's first close for the position as it stood
    then, a better reference than the plan's read (others may have traded in between). From
    there only the fills that came after it count."""
    if followed.anchored or sender.idempotent:
        return
    first = next((o for o in followed.result.orders if not o.prior), None)
    if first is None:
        return
    followed.anchored = True
    quantity = Decimal(first.quantity)
    followed.position_ref = quantity if first.side.startswith("SELL") else -quantity
    followed.fills_ref = job_fills(followed.result, prior_only=True)
    followed.others_ref.update(followed.others_now)


def note_other(followed: Followed, order: Order) -> None:
    """Another's order on the instrument: counted from the fills it had when first seen
    (earlier fills are in the reference, or the reads will not agree), read by id until
    final. One first seen final has nothing left to move."""
    if order.id not in followed.others_now:
        if not order.working:
            return
        followed.others_ref[order.id] = signed_fill(order)
    followed.others_now[order.id] = signed_fill(order)
    if not order.working and order.id not in followed.others_done:
        followed.others_done.add(order.id)
        followed.others_ended.append(order)


def nothing_created(followed: Followed) -> None:
    """The close whose outcome was unknown created no order: it changed nothing."""
    target, result = followed.target, followed.result
    followed.unresolved = None
    if followed.unresolved_residue:
        followed.unresolved_residue = False
        life.residue_uncounted(result)
    events.residue_close_failed(
        account_id=target.account_id,
        instrument=target.instrument,
        residue=result.residue_closes + 1,
        outcome="nothing_created",
        error="no order of the close was found, nothing works and the position is unchanged",
        request_id=result.request_ids[-1] if result.request_ids else None,
    )
