"""Following's acts: a residue close for what a read left open (sent here, through the same
journaled step as every close: `closing.send`), and the settlement of a followed target as flat,
not flat, or its failure kept. Every outcome is set by `closing.target` and put, once, on the
follower's queue of settled results (`Follower.settled`), which the close stage drains."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from worker.api.models import Order
from worker.closing import target as life
from worker.closing.followed import Followed
from worker.closing.send import CloseContext, send_one_close
from worker.closing.stop import CutOff, FirstReason, Grace
from worker.closing.target import Target
from worker.errors import ApiError, JournalError, NotSent, OutcomeUnknown, RateLimited, Unauthorized
from worker.observe import events
from worker.results import TargetResult

# A residue close: send one close for `target`'s position as just read (signed) now. Raises
# `ApiError`; None if nothing was sent.
SendClose = Callable[[Target, TargetResult, Decimal], Awaitable[list[Order] | None]]


async def send_residue(
    ctx: CloseContext, target: Target, result: TargetResult, position: Decimal
) -> list[Order] | None:
    """A residue close for `position` (signed, as just read): at market, or, while the
    target's IOC waves last (PROTECTED_VIA=ioc_waves), its next wave."""
    if ctx.sender.wave_at(target) is None:
        ctx.sender.at_market(target)  # protected: a limit's rest (escalated) goes at market
    since = ctx.server_now() - ctx.lookback
    return await send_one_close(ctx, target, result, since, position)


@dataclass(frozen=True)
class Handback:
    """What following hands the run: each result as it settles (None once `finish` has settled
    every one), and whom to tell why, when following stops the run (the credentials rejected)."""

    settled: asyncio.Queue[TargetResult | None]
    stopped_by: FirstReason | None = None


class Acts:
    """What following does to a target: a residue close, or its settlement. `pending` is the
    follower's targets per account; a settled target leaves it for `settled`."""

    def __init__(
        self,
        ctx: CloseContext,
        pending: dict[int, dict[str, Followed]],
        *,
        send_close: SendClose,
        grace: Grace,
        clock: Callable[[], float],
        handback: Handback,
    ) -> None:
        self._ctx = ctx
        self._pending = pending
        self._send_close = send_close
        self._grace = grace
        self._clock = clock
        self._settled = handback.settled
        self._stopped_by = handback.stopped_by

    async def residue(self, followed: Followed, position: Decimal) -> None:
        """Send a residue close for `position` (signed, as read); a failure is logged, and
        `_unsent` settles whether it counts."""
        target, result = followed.target, followed.result
        residue = life.residue_begun(result)
        events.residue_close(
            account_id=target.account_id,
            instrument=target.instrument,
            remaining_quantity=str(position),
            residue=residue,
        )
        try:
            sent = await self._grace.within(self._send_close(target, result, position))
        except Unauthorized:
            raise
        except (CutOff, JournalError, ApiError) as err:
            self._unsent(followed, position, residue, err)
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

    def _unsent(
        self,
        followed: Followed,
        position: Decimal,
        residue: int,
        err: CutOff | JournalError | ApiError,
    ) -> None:
        """A residue close that failed: whether it counts, and what is decided meanwhile."""
        target, result = followed.target, followed.result

        def failed(outcome: str, request_id: str | None = None) -> None:
            events.residue_close_failed(
                account_id=target.account_id,
                instrument=target.instrument,
                residue=residue,
                outcome=outcome,
                error=str(err),
                request_id=request_id,
            )

        if isinstance(err, CutOff):
            # A stop came and its grace ran out with the reply still pending: the close may
            # yet be applied (its intent is journaled; the next run looks before sending).
            life.residue_unknown(result)
            failed("unknown")
        elif isinstance(err, OutcomeUnknown):
            # It may yet appear: nothing more is decided for the target until its order is
            # found, or a look after a slow server had time to apply shows it created none.
            followed.quiet_until = self._clock() + self._ctx.policy.settle_s
            followed.unresolved, followed.unresolved_residue = position, True
            failed("unknown", err.request_id)
        elif isinstance(err, JournalError):
            life.residue_uncounted(result)  # its intent is not on disk, so it was not sent
            failed("not_sent")
            if self._stopped_by is not None:
                self._stopped_by(str(err))
            self._ctx.stopping.set()  # no close may be sent without its intent
        else:
            if isinstance(err, NotSent | RateLimited):
                life.residue_uncounted(result)  # provably changed nothing: it does not count
            failed("not_sent" if isinstance(err, NotSent) else "refused", err.request_id)
            events.close_retry(
                account_id=target.account_id,
                instrument=target.instrument,
                attempt=result.attempts,
                reason=f"residue close: {err}",
                wait_s=0.0,
                request_id=err.request_id,
            )

    def flat(self, followed: Followed, *, by_unfound_close: bool = False) -> None:
        self._done(followed)
        life.flat(followed.result, by_unfound_close=by_unfound_close)
        self._report(followed.result)

    def not_flat(self, followed: Followed, why: str) -> None:
        self._done(followed)
        life.not_flat(followed.result, why, watched=followed.watch_only)
        self._report(followed.result)

    def leave_failed(self, followed: Followed) -> None:
        """A watched target keeps the failure the closer gave it, now with what was read."""
        self._done(followed)
        self._report(followed.result)

    def after_last_read(self, pending: dict[str, Followed], read: list[str]) -> None:
        """The last read before a stop settles: what it read is settled as not flat, but for
        one whose read was behind (it gets one more, in grace)."""
        for followed in [pending[iid] for iid in read if iid in pending]:
            if followed.undecided and not followed.last_read:
                followed.last_read = True
                continue
            self.not_flat(followed, "the run stopped before the position read flat")

    def cut_off(self, pending: dict[str, Followed], read: list[str]) -> None:
        """A stop's grace ended during the read: what was being read is settled now."""
        for followed in [pending[iid] for iid in read if iid in pending]:
            if followed.watch_only:
                self.leave_failed(followed)
            else:
                self.not_flat(followed, "the run stopped before the position read flat")

    def unread(
        self, pending: dict[str, Followed], read: list[str], err: ApiError, *, final: bool
    ) -> None:
        """The read failed: a watched target keeps its failure (no better than the closer's
        look), and the last read settles what it was reading."""
        for iid in read:
            if iid in pending and pending[iid].watch_only:
                self.leave_failed(pending[iid])
            elif iid in pending and final:
                self.not_flat(pending[iid], f"the last read failed: {err}")

    def expire(
        self, pending: dict[str, Followed], why: str, *, now: float, stopped: bool, timeout_s: float
    ) -> None:
        """Settle every target whose time is up (`stopped`: every one) as not flat."""
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
                    else f"still open after {timeout_s:g} s (FLAT_TIMEOUT)"
                )
                self.not_flat(followed, reason)

    def _done(self, followed: Followed) -> None:
        """No longer followed; the orders its close cancelled (cancel_orders) are named."""
        self._pending[followed.target.account_id].pop(followed.target.instrument_id, None)
        life.canceled_by_close(followed.target, followed.result, followed.others_ended)

    def _report(self, result: TargetResult) -> None:
        """The result is final: on the queue of settled results, as a value."""
        self._settled.put_nowait(result)
