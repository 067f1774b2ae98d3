"""Follow every sent close until its position reads zero at the server, or FLAT_TIMEOUT passes.

One task per account polls the working orders on its open instruments (by status, any age), the
job's own orders by id, and the positions of the instruments where no order works (while one
does, nothing is decided from the position, and under a rate limit a read costs as much as an
order), with those instruments' fills from the account's ledger; a positions read is acted on
only when the ledger says it is the position now (`closing.books`; a listing behind it is read
again, and a fill of an order no listing showed is read by its id).
`closing.evidence.follow_step` decides per target: flat, wait, or a residue close through the
same journaled step as every close; it never sends while stopping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from worker.api.models import WORKING_STATUSES, Execution, Order
from worker.closing import books, ledger
from worker.closing import target as life
from worker.closing.books import Books
from worker.closing.evidence import Step, follow_step
from worker.closing.send import CloseContext
from worker.closing.stop import CutOff, before
from worker.closing.target import Next, Target
from worker.errors import (
    ApiError,
    JournalError,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    Unauthorized,
)
from worker.observe import events
from worker.results import Fate, TargetResult

# A residue close: send one close for `target`'s position as just read (signed) now. Raises
# `ApiError`; None if nothing was sent.
SendClose = Callable[[Target, TargetResult, Decimal], Awaitable[list[Order] | None]]
T = TypeVar("T")
CHUNK = 100  # instrument_ids per listing: ~3.7 kB of query string
# The fan-out's end cuts a pause under way: the run's end waits on that poll. A fill it finds
# still on its way is read again this much later (then pauses double while nothing settles).
SETTLE_S = 0.05
MIN_TIME = datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Followed:
    target: Target
    result: TargetResult
    deadline: float  # monotonic
    quiet_until: float = 0.0  # no residue close before this (after an unknown outcome)
    # A target that failed with its last close's fate unknown: followed to report what the
    # server did (flat: closed); read open with nothing working, it gets a residue close like
    # any other; its failure stands if it never reads flat.
    watch_only: bool = False
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
    books: Books | None = None  # its fills as the account's ledger shows them


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


class Follower:
    def __init__(
        self,
        ctx: CloseContext,
        settings: FollowSettings,
        *,
        since: datetime,
        send_close: SendClose,
        on_result: Callable[[TargetResult], None] | None = None,
        on_abort: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ctx = ctx
        self._settings = settings
        self._since = since
        self._send_close = send_close
        self._on_result = on_result
        self._on_abort = on_abort
        self._clock = clock
        self._sleep = sleep
        self._pending: dict[int, dict[str, _Followed]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._pokes: dict[int, asyncio.Event] = {}  # read this account now (`poke`)
        self._stop_deadline: float | None = None
        self._last_look = asyncio.Event()  # stopping, and the fan-out is over: one more read
        self._all_sent = asyncio.Event()  # the fan-out is over
        self._ledger = True  # False: the server lists no executions (decided from orders)
        # Per account, a time up to which its positions listing was proven to hold every fill.
        self._holds: dict[int, datetime] = {}

    def follow(self, target: Target, result: TargetResult, step: Next = Next.FOLLOW) -> None:
        """Hand over a target that was sent a close (or found one); its result has no outcome.

        `Next.WATCH`: it already failed (its last close's fate unknown), and is only watched.
        """
        pending = self._pending.setdefault(target.account_id, {})
        watch_only = step is Next.WATCH
        followed = _Followed(
            target,
            result,
            self._clock() + self._settings.timeout_s,
            watch_only=watch_only,
            position_ref=target.quantity,
            # An earlier run's orders (found by a look, a 409 on the first send, or adopted)
            # filled so far before the plan read the position: those fills are in it. A
            # takeover knows what they had filled at that read (`Target.prior_fills`).
            fills_ref=job_fills(result, prior_only=True)
            if target.prior_fills is None
            else target.prior_fills,
            books=Books.of(target, result),
        )
        # Others' orders on the instrument that could still fill before the fan-out: their
        # fills from then on move the position too (counted, cancel_orders off).
        for o in self._ctx.working_before.get(target.account_id, []):
            if (o.instrument_id or "").lower() == target.instrument_id.lower():
                followed.others_ref[o.id] = followed.others_now[o.id] = _signed_fill(o)
        self._anchor(followed)
        if watch_only or (result.fate is Fate.UNKNOWN and not result.orders):
            # Its last close may have landed unseen: find it, or prove it did nothing, first.
            followed.unresolved = followed.position_ref or target.quantity
            followed.quiet_until = self._clock() + self._ctx.policy.settle_s
        pending[target.instrument_id] = followed
        task = self._tasks.get(target.account_id)
        if task is None or task.done():
            self._tasks[target.account_id] = asyncio.create_task(
                self._follow_account(target.account_id)
            )

    def all_sent(self) -> None:
        """The fan-out is over: a pause under way ends now."""
        self._all_sent.set()

    def working_orders(self) -> int:
        """The orders of the targets still followed that were working when last read."""
        return sum(
            1
            for pending in self._pending.values()
            for followed in pending.values()
            if not followed.watch_only
            for order in followed.result.orders
            if order.status in WORKING_STATUSES
        )

    def poke(self, account_id: int) -> None:
        """Read the account now, not after the pause under way (protected: its limits were
        cancelled, and their rests wait on that read)."""
        self._pokes.setdefault(account_id, asyncio.Event()).set()

    def others_working(self, account_id: int, instrument_id: str) -> bool:
        """Whether another's order may work on the instrument, as the last working-orders read
        (or the orders snapshot before the fan-out) showed: a cancel by instrument would take
        it too. True when the target is not followed (nothing read)."""
        followed = self._pending.get(account_id, {}).get(instrument_id)
        if followed is None:
            return True
        return any(i not in followed.others_done for i in followed.others_now)

    def last_look(self) -> None:
        """The run is stopping and nothing is in flight: read once more, then settle."""
        self._last_look.set()

    def abandon(self) -> None:
        """End following now (the run itself failed); `finish` then settles what is left."""
        for task in self._tasks.values():
            task.cancel()

    async def finish(self) -> None:
        """Wait until every followed target has an outcome. Cancelling ends following at once."""
        try:
            while any(not t.done() for t in self._tasks.values()):
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            for account_id, task in self._tasks.items():
                bug = None if task.cancelled() else task.exception()
                if isinstance(bug, Unauthorized):
                    if self._on_abort is not None:
                        self._on_abort(f"credentials rejected mid-run: {bug}")
                elif bug is not None:
                    events.internal_error(bug)
                    if self._on_abort is not None:
                        self._on_abort(f"internal error: {type(bug).__name__}: {bug}")
                for followed in list(self._pending.get(account_id, {}).values()):
                    self._not_flat(followed, "following was cut off before the position read flat")

    async def _follow_account(self, account_id: int) -> None:
        pending = self._pending[account_id]
        pause = self._settings.first_pause_s
        poked = self._pokes.setdefault(account_id, asyncio.Event())
        ended = False  # the fan-out was over when the last read began
        while pending:
            # The fan-out's end cuts a pause short, or, if it came during the last read (or
            # before this follower's first), skips the next: the run's end waits on this read.
            cut = not ended and self._all_sent.is_set() and not self._last_look.is_set()
            if not cut and not self._last_look.is_set():
                longest = max(pause, self._resting_pause(pending))
                wait = min(longest, max(0.0, self._next_deadline(pending) - self._clock()))
                cut = not await self._pause(wait, poked) and not self._last_look.is_set()
            was_poked = poked.is_set()
            poked.clear()
            ended = self._all_sent.is_set()
            final = self._last_look.is_set()
            before = len(pending)
            read = list(pending)  # targets handed over during the read wait for the next one
            try:
                positions, positioned, orders, fills, request_id = await self._within_grace(
                    self._read(account_id, read, final=final)
                )
            except CutOff:
                for followed in [pending[iid] for iid in read if iid in pending]:
                    if followed.watch_only:
                        self._leave_failed(followed)
                    else:
                        self._not_flat(followed, "the run stopped before the position read flat")
                self._expire(pending, "")
                continue
            except Unauthorized:
                raise
            except ApiError as err:
                for iid in read:
                    if iid in pending and pending[iid].watch_only:
                        self._leave_failed(pending[iid])  # no better than the closer's look
                    elif iid in pending and final:
                        self._not_flat(pending[iid], f"the last read failed: {err}")
                self._expire(pending, f"the account could not be read: {err}")
                continue
            # Decided together: the residues one poll finds (a protected deadline's rests)
            # then reach the batcher at once and go out in as few POSTs as can be.
            decided = await asyncio.gather(
                *(
                    self._decide(
                        pending[iid],
                        positions.get(iid.lower(), Decimal(0)) if iid in positioned else None,
                        orders.get(iid.lower(), []),
                        request_id,
                        fills.get(iid.lower()) if fills is not None else None,
                    )
                    for iid in read
                ),
                return_exceptions=True,
            )
            for outcome in decided:
                if isinstance(outcome, BaseException):
                    raise outcome
            if final:
                for followed in [pending[iid] for iid in read if iid in pending]:
                    if followed.undecided and not followed.last_read:
                        followed.last_read = True  # its read was behind: one more, in grace
                        continue
                    self._not_flat(followed, "the run stopped before the position read flat")
            self._expire(pending, "")
            # Pauses grow while nothing settles (slow fills); a poll that settled some, or
            # found new targets handed over meanwhile, is followed promptly by the next one.
            # Read at once after the fan-out, the last fills get one more read SETTLE_S on.
            settled = len(pending) < before or len(pending) > len(read)
            if settled or was_poked:
                pause = self._settings.first_pause_s
            elif cut:
                pause = min(SETTLE_S, self._settings.first_pause_s)
            else:
                pause = min(pause * 2, self._settings.max_pause_s)

    def _resting_pause(self, pending: dict[str, _Followed]) -> float:
        """`resting_pause_s` while every pending target rests on a working LIMIT order of the
        job (protected, before its escalation), else 0."""
        resting = self._settings.resting_pause_s
        if resting is None or self._ctx.stopping.is_set():
            return 0.0
        for followed in pending.values():
            if followed.watch_only or followed.unresolved is not None:
                return 0.0
            orders = followed.result.orders
            if not any(o.status in WORKING_STATUSES and o.order_type == "LIMIT" for o in orders):
                return 0.0
        return resting

    async def _pause(self, seconds: float, poked: asyncio.Event) -> bool:
        """Sleep between polls; False when the last look or the fan-out's end cut it short (a
        poke ends it too, and the poll goes as after a full pause)."""
        told = [self._last_look]
        if not self._all_sent.is_set():  # (once over, it cuts nothing more)
            told.append(self._all_sent)
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        waits = [asyncio.ensure_future(event.wait()) for event in (*told, poked)]
        try:
            await asyncio.wait({sleeping, *waits}, return_when=asyncio.FIRST_COMPLETED)
            return not any(event.is_set() for event in told)
        finally:
            sleeping.cancel()
            for wait in waits:
                wait.cancel()

    async def _read(
        self, account_id: int, instrument_ids: Sequence[str], *, final: bool = False
    ) -> tuple[
        dict[str, Decimal], set[str], dict[str, list[Order]], dict[str, list[Execution]] | None, str
    ]:
        """Positions and orders of these instruments, the instruments whose positions were read,
        their fills from the ledger's window on (None: the server lists none), and the orders
        listing's request_id.

        Under a rate limit a read costs as much as an order, so positions are read only for
        the instruments that need them (`_needs_position`): while an order on an instrument is
        working, nothing is decided from its position.

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
        fills: dict[str, list[Execution]] | None = {} if self._ledger else None
        reader = self._ctx.reader
        pending = self._pending.get(account_id, {})
        for start in range(0, len(instrument_ids), CHUNK):
            chunk = instrument_ids[start : start + CHUNK]
            # Orders first: an order read as done had filled before the positions were read,
            # so a position read open beside it is truly open (the other way round, a fill
            # between the reads looks like a residue that is not there).
            followed = [pending[iid] for iid in chunk if iid in pending]
            listed_orders, request_ids = await reader.working_orders(account_id, chunk)
            request_id = request_ids[-1]
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
                self._ledger = read_fills is not None
                fills = None if read_fills is None else {**fills, **read_fills}
        return positions, positioned, orders, fills, request_id

    def _needs_position(self, followed: _Followed, orders: Sequence[Order], final: bool) -> bool:
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

    def _ids_to_read(self, followed: Iterable[_Followed]) -> list[str]:
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

    async def _decide(
        self,
        followed: _Followed,
        position: Decimal | None,
        orders: list[Order],
        request_id: str,
        executions: list[Execution] | None = None,
    ) -> None:
        """Take in what one poll read for the target; `position` None: not read (an order on
        the instrument is working, so it waits whatever the position). `executions`: the
        instrument's fills from the ledger's window on (None: not read)."""
        target, result = followed.target, followed.result
        followed.read_once = True
        listed = {o.id for o in result.orders}  # an earlier run's close, found, stays listed
        if executions is not None and followed.books is not None:
            known = {o.id for o in result.orders} | {o.id for o in orders}
            orders = [
                *orders,
                *await followed.books.unknown_orders(
                    self._ctx.reader,
                    target.account_id,
                    known,
                    executions,
                    lambda o: self._is_job_order(followed, o),
                ),
            ]
        shown = {o.id for o in orders}
        known_before = len(result.orders)
        for order in orders:
            # The run's orders: by evidence (close_position), by client id (submit_orders).
            if order.id in listed:
                life.note_order(result, order, own=False)  # its status, refreshed
            elif self._is_job_order(followed, order):
                # Found late: listed, journaled and logged like every order of the run.
                life.record_orders(
                    self._ctx.journal,
                    self._ctx.run_id,
                    target,
                    result,
                    [order],
                    request_id,
                    reconciled=True,
                )
            else:
                self._note_other(followed, order)
        self._anchor(followed)
        life.position_read(result, position)
        if len(result.orders) > known_before and followed.unresolved is not None:
            followed.unresolved = None  # the close whose reply was lost is found
        if position is None:
            return
        followed.undecided = True
        # An order of the job's that no listing shows, though not read final: the listings
        # are behind it (a lag), not the truth. Nothing is decided on them.
        if any(o.status in WORKING_STATUSES and o.id not in shown for o in result.orders):
            return
        if any(i not in shown and i not in followed.others_done for i in followed.others_now):
            return  # an order counted in the expected position was not read: read again
        now = self._clock()
        working = any(o.working for o in orders)
        if followed.unresolved is None and not self._agrees(followed, position, executions):
            # A lagging positions listing, or a fill the job cannot explain: a residue sized
            # from it could flip the position. Read again (at the deadline once more, then
            # not_flat with what was read).
            return
        if followed.unresolved is not None:
            if working or now < followed.quiet_until:
                return
            if position == 0:
                if not followed.last_chance:
                    followed.last_chance = True  # one more read may still list its order
                    return
                followed.undecided = False
                self._flat(followed, by_unfound_close=True)
                return
            if position != followed.unresolved:
                return  # moved, and no order of the job's found to say why: read again
            self._nothing_created(followed)  # provably did nothing: it does not count
        followed.undecided = False
        stopping = self._ctx.stopping.is_set()
        step = follow_step(
            position,
            orders,
            residue_sent=result.residue_closes,
            max_residue=self._settings.max_residue,
            may_send=not stopping and now >= followed.quiet_until,
        )
        if step is Step.FLAT:
            self._flat(followed)
        elif step is Step.RESIDUE:
            await self._residue(followed, position)

    def _is_job_order(self, followed: _Followed, order: Order) -> bool:
        sender, priors = self._ctx.sender, self._ctx.priors
        return books.is_job_order(sender, priors, followed.target, followed.result, order)

    def _agrees(
        self, followed: _Followed, position: Decimal, executions: Sequence[Execution] | None
    ) -> bool:
        """Whether the read is the position now: by the ledger when it was read (`Books`),
        else by the fills of the orders known."""
        if executions is None or followed.books is None:
            return self._explained(followed, position)
        own = {o.id for o in followed.result.orders}
        account, iid = followed.target.account_id, followed.target.instrument_id
        verdict = followed.books.current(position, executions, iid, own, self._holds.get(account))
        if verdict.holds_until is not None:
            self._holds[account] = max(verdict.holds_until, self._holds.get(account, MIN_TIME))
        return verdict.reading is ledger.Reading.CURRENT

    def _explained(self, followed: _Followed, position: Decimal) -> bool:
        """Whether the read is what the fills known predict. An earlier run's order found
        already filled may have filled before the plan's read or after it (the two are not
        ordered by anything the worker can read): either prediction is taken."""
        expected = self._expected(followed)
        return position in (expected, expected + followed.fills_ref)

    def _expected(self, followed: _Followed) -> Decimal:
        """The position the reference and every fill known since predict."""
        others = sum(
            (
                now - followed.others_ref.get(i, Decimal(0))
                for i, now in followed.others_now.items()
            ),
            Decimal(0),
        )
        return followed.position_ref + job_fills(followed.result) - followed.fills_ref + others

    def _anchor(self, followed: _Followed) -> None:
        """close_position: the server sized the run's first close for the position as it stood
        then, a better reference than the plan's read (others may have traded in between). From
        there only the fills that came after it count."""
        if followed.anchored or self._ctx.sender.idempotent:
            return
        first = next((o for o in followed.result.orders if not o.prior), None)
        if first is None:
            return
        followed.anchored = True
        quantity = Decimal(first.quantity)
        followed.position_ref = quantity if first.side.startswith("SELL") else -quantity
        followed.fills_ref = job_fills(followed.result, prior_only=True)
        followed.others_ref.update(followed.others_now)

    def _note_other(self, followed: _Followed, order: Order) -> None:
        """Another's order on the instrument: counted from the fills it had when first seen
        (earlier fills are in the reference, or the reads will not agree), read by id until
        final. One first seen final has nothing left to move."""
        if order.id not in followed.others_now:
            if not order.working:
                return
            followed.others_ref[order.id] = _signed_fill(order)
        followed.others_now[order.id] = _signed_fill(order)
        if not order.working and order.id not in followed.others_done:
            followed.others_done.add(order.id)
            followed.others_ended.append(order)

    def _nothing_created(self, followed: _Followed) -> None:
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

    async def _residue(self, followed: _Followed, position: Decimal) -> None:
        target, result = followed.target, followed.result
        residue = life.residue_begun(result)
        events.residue_close(
            account_id=target.account_id,
            instrument=target.instrument,
            remaining_quantity=str(position),
            residue=residue,
        )

        def failed(outcome: str, err: BaseException, request_id: str | None = None) -> None:
            events.residue_close_failed(
                account_id=target.account_id,
                instrument=target.instrument,
                residue=residue,
                outcome=outcome,
                error=str(err),
                request_id=request_id,
            )

        try:
            sent = await self._within_grace(self._send_close(target, result, position))
        except CutOff as err:
            # A stop came and its grace ran out with the reply still pending: the close may
            # yet be applied (its intent is journaled; the next run looks before sending).
            life.residue_unknown(result)
            failed("unknown", err)
            return
        except Unauthorized:
            raise
        except OutcomeUnknown as err:
            # It may yet appear: nothing more is decided for the target until its order is
            # found, or a look after a slow server had time to apply shows it created none.
            followed.quiet_until = self._clock() + self._ctx.policy.settle_s
            followed.unresolved, followed.unresolved_residue = position, True
            failed("unknown", err, err.request_id)
            return
        except JournalError as err:
            life.residue_uncounted(result)  # its intent is not on disk, so it was not sent
            failed("not_sent", err)
            if self._on_abort is not None:
                self._on_abort(str(err))
            self._ctx.stopping.set()  # no close may be sent without its intent
            return
        except ApiError as err:
            if isinstance(err, NotSent | RateLimited):
                life.residue_uncounted(result)  # provably changed nothing: it does not count
            failed("not_sent" if isinstance(err, NotSent) else "refused", err, err.request_id)
            events.close_retry(
                account_id=target.account_id,
                instrument=target.instrument,
                attempt=result.attempts,
                reason=f"residue close: {err}",
                wait_s=0.0,
                request_id=err.request_id,
            )
            return
        if sent is None:
            life.residue_uncounted(result)
            return
        # The residue's order is the job's: its fills, the reply's included, move the expected
        # position as they come (the reference stays where it was).
        events.residue_close_sent(
            account_id=target.account_id,
            instrument=target.instrument,
            residue=residue,
            orders=[o.id for o in sent],
            request_id=result.request_ids[-1] if result.request_ids else None,
        )

    async def _within_grace(self, call: Awaitable[T]) -> T:
        """The call's result; `CutOff` when a stop's grace ends first. As the fan-out's closes,
        a residue close or a read in flight (retried up to MAX_ATTEMPTS times REQUEST_TIMEOUT)
        is not waited for past STOP_GRACE."""
        return await before(call, self._grace_after_stop())

    async def _grace_after_stop(self) -> None:
        await self._ctx.stopping.wait()
        if self._stop_deadline is None:
            self._stop_deadline = self._clock() + self._settings.grace_s
        await self._sleep(max(0.0, self._stop_deadline - self._clock()))

    def _done(self, followed: _Followed) -> None:
        """No longer followed; the orders its close cancelled (cancel_orders) are named."""
        self._pending[followed.target.account_id].pop(followed.target.instrument_id, None)
        life.canceled_by_close(followed.target, followed.result, followed.others_ended)

    def _leave_failed(self, followed: _Followed) -> None:
        """A watched target keeps the failure the closer gave it, now with what was read."""
        self._done(followed)
        self._report(followed.result)

    def _flat(self, followed: _Followed, *, by_unfound_close: bool = False) -> None:
        self._done(followed)
        life.flat(followed.result, by_unfound_close=by_unfound_close)
        self._report(followed.result)

    def _report(self, result: TargetResult) -> None:
        """Tell the caller a result is final. A fault there stops the run, not following."""
        if self._on_result is None:
            return
        try:
            self._on_result(result)
        except Exception as bug:
            events.internal_error(bug)
            if self._on_abort is not None:
                self._on_abort(f"internal error: {type(bug).__name__}: {bug}")
            self._ctx.stopping.set()

    def _next_deadline(self, pending: dict[str, _Followed]) -> float:
        soonest = min(f.deadline for f in pending.values())
        if self._ctx.stopping.is_set():
            if self._stop_deadline is None:
                self._stop_deadline = self._clock() + self._settings.grace_s
            soonest = min(soonest, self._stop_deadline)
        return soonest

    def _expire(self, pending: dict[str, _Followed], why: str) -> None:
        """Settle every target whose time is up as not flat."""
        if not pending:
            return
        now = self._clock()
        stopped = self._ctx.stopping.is_set() and now >= self._next_deadline(pending)
        for followed in list(pending.values()):
            if stopped or now >= followed.deadline:
                if (followed.undecided or not followed.read_once) and not followed.last_read:
                    # Its last read was behind (a listing lagging), or it was handed over while
                    # a slow read was under way: one more before not flat.
                    followed.last_read = True
                    continue
                reason = why or (
                    "the run stopped before the position read flat"
                    if stopped
                    else f"still open after {self._settings.timeout_s:g} s (FLAT_TIMEOUT)"
                )
                self._not_flat(followed, reason)

    def _not_flat(self, followed: _Followed, why: str) -> None:
        self._done(followed)
        life.not_flat(followed.result, why, watched=followed.watch_only)
        self._report(followed.result)


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


def _signed_fill(order: Order) -> Decimal:
    return order.filled_quantity * (-1 if order.side.startswith("SELL") else 1)


def _fresher(known: Order | None, other: Order) -> Order:
    """Of two listings of one order, the one further along (final, or more filled)."""
    if known is None:
        return other
    if known.working and not other.working:
        return other
    if other.working == known.working and other.filled_quantity > known.filled_quantity:
        return other
    return known
