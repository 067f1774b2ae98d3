"""CLOSE_STYLE=protected: re-price each protected LIMIT order within a request budget, and
escalate it at its deadline, whatever the number of positions.

The first close of a protected target is a LIMIT order COLLAR_BPS past its arrival quote
(`worker.closing.modes`). From then on one loop, never waiting on a request itself:

    at DEADLINE_S after the first send, begun early enough that the escalations' requests at
    RATE_LIMIT end by then (half of DEADLINE_S early at most; --at-close: early enough that
    every rest is accepted before the MOC cutoff)
        the target's later closes go at market (`Sender.at_market`), and its working limits
        are cancelled, an account's together (`worker.closing.escalate`: by instrument where
        only the job's orders work there, by id otherwise); a cancel still read working a
        while after its answer is sent again. Nothing is sent here: following
        (`worker.closing.follow`) sends the rest as its residue close, and only once it reads
        the limit final and the position explained by its fills, under the next generation's
        client id, journaled first; the rests one poll finds go out batched. So no position
        ever has two working orders of the job, and what a partial fill left is what goes.
    every REPRICE_S, one round at a time (a round still running is not doubled)
        the limits whose re-price came, within a request budget that leaves the escalations
        due meanwhile what they need (`worker.closing.reprice`).

The pace serves cancels and order entry before replaces, and replaces before reads
(`worker.api.pace`). Only reads of the results here: outcomes are following's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from worker.api.client import TradingApi
from worker.api.policy import REAL_TIME, TimeSource
from worker.api.reads import Reader
from worker.closing.collar import Collar
from worker.closing.escalate import CHASE_S, Escalator, Limit
from worker.closing.modes import Sender
from worker.closing.reprice import Protected, Repricer, working_limits
from worker.closing.schedule import ESCALATION_SLACK_S, escalation_requests, seconds_at
from worker.closing.target import Target
from worker.results import TargetResult

LOOP_S = 0.25  # the loop's longest sleep: deadlines and lingering cancels are looked at this often
GROUP_S = 1.0  # an account's limits due within this of one that is due escalate with it


@dataclass(frozen=True)
class ProtectRun:
    """The run's parts the protected loop works with: the API its cancels and replaces go
    through, the reader, the close mode (`at_market`), the stop request, the server's clock (the
    MOC cutoff is the server's time), and the time its loop is measured and paused by."""

    api: TradingApi
    reader: Reader
    sender: Sender
    stopping: asyncio.Event
    server_now: Callable[[], datetime]
    timing: TimeSource = REAL_TIME


@dataclass(frozen=True)
class EscalationBudget:
    """The pace the schedule is held to: RATE_LIMIT and BATCH_SIZE (what escalating costs in
    requests, `worker.closing.schedule`), the slack beside those requests (round trips,
    following's pause), how long a cancel may still read working before it is sent again, and
    --at-close the MOC cutoff every rest must beat."""

    rate_limit: float = 0.0
    batch_size: int = 100
    slack_s: float = ESCALATION_SLACK_S
    chase_s: float = CHASE_S
    moc_cutoff: datetime | None = None


class Protector:
    """Re-prices and escalates the protected targets handed over (`watch`). `others_working`
    and `poke` are following's: whether others' orders work on an instrument, and read an
    account now."""

    def __init__(
        self,
        run: ProtectRun,
        collar: Collar,
        budget: EscalationBudget,
        *,
        others_working: Callable[[int, str], bool],
        poke: Callable[[int], None] | None = None,
    ) -> None:
        clock = run.timing.clock
        self._sender = run.sender
        self._collar = collar
        self._stopping = run.stopping
        self._rate = budget.rate_limit
        self._batch_size = budget.batch_size
        self._slack_s = budget.slack_s
        self._clock = clock
        self._sleep = run.timing.sleep
        self._poke = poke
        self._repricer = Repricer(
            run.api, collar, rate_limit=budget.rate_limit, stopping=run.stopping
        )
        self._escalator = Escalator(
            run.api, run.reader, others_working=others_working, clock=clock, chase_s=budget.chase_s
        )
        self._watched: dict[tuple[int, str], Protected] = {}
        self._cutoff: float | None = None  # monotonic: the MOC cutoff
        if budget.moc_cutoff is not None:
            self._cutoff = clock() + (budget.moc_cutoff - run.server_now()).total_seconds()
        self._cancelling: set[str] = set()  # limits whose cancel is in flight
        self._round: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._all_sent = asyncio.Event()
        self._more = asyncio.Event()  # a target was handed over

    def watch(self, target: Target, result: TargetResult) -> None:
        """A protected target whose first close was sent (or found, or adopted)."""
        key = (target.account_id, target.instrument_id.lower())
        if key not in self._watched:
            now = self._clock()
            deadline = now + self._collar.deadline_s
            self._watched[key] = Protected(
                target, result, now, deadline, now + self._collar.reprice_s
            )
            self._more.set()

    def all_sent(self) -> None:
        """The fan-out is over: once every watched target has its outcome, `run` ends."""
        self._all_sent.set()
        self._more.set()

    async def run(self) -> None:
        """Until every watched target has an outcome and the fan-out is over, or a stop."""
        try:
            while not self._stopping.is_set():
                self._raise_failures()
                self._drop_settled()
                if not self._watched:
                    if self._all_sent.is_set():
                        return
                    self._more.clear()
                    await self._more.wait()
                    continue
                now = self._clock()
                # Once a pass (it counts every limit), before this pass marks any escalated:
                # the lead and reserve then err by the limits escalating now, toward earlier.
                escalation_s = self._escalation_s()
                self._escalate(now, escalation_s)
                if self._round is None or self._round.done():
                    due = [
                        p
                        for p in self._watched.values()
                        if p.escalated is None and p.next_reprice <= now
                    ]
                    if due:
                        work = self._repricer.round(due, now, self._reserved(now, escalation_s))
                        self._round = self._spawn(work)
                await self._sleep(self._wait(now, escalation_s))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        return task

    def _raise_failures(self) -> None:
        """A fault of a round or a cancel (credentials, the journal's lock) stops the loop."""
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # checked just above

    def _wait(self, now: float, escalation_s: float) -> float:
        """Until the next escalation or re-price, LOOP_S at most (lingering cancels)."""
        nearest = LOOP_S
        lead = self._lead(escalation_s)
        # While a round runs, its targets' next re-price waits for it (LOOP_S at most).
        rounds = self._round is None or self._round.done()
        for p in self._watched.values():
            if p.escalated is None:
                nearest = min(nearest, p.deadline - lead - now)
                if rounds:
                    nearest = min(nearest, p.next_reprice - now)
        moc = self._moc_at(escalation_s)
        if moc is not None:
            nearest = min(nearest, moc - now)
        return max(0.005, nearest)

    def _drop_settled(self) -> None:
        for key in [k for k, p in self._watched.items() if p.result.outcome is not None]:
            del self._watched[key]

    def _escalation_s(self) -> float:
        """How long escalating every limit not yet escalated takes at RATE_LIMIT."""
        counts: dict[int, int] = {}
        for p in self._watched.values():
            if p.escalated is None:
                counts[p.target.account_id] = counts.get(p.target.account_id, 0) + 1
        return seconds_at(escalation_requests(counts.values(), self._batch_size), self._rate)

    def _moc_at(self, escalation_s: float) -> float | None:
        """--at-close: when escalation must begin so that every rest is accepted before the
        cutoff: the requests escalating what still rests take at RATE_LIMIT, and the slack
        (round trips, following's pause), one REPRICE_S at least."""
        if self._cutoff is None:
            return None
        return self._cutoff - max(self._collar.reprice_s, escalation_s + self._slack_s)

    def _lead(self, escalation_s: float) -> float:
        """How long before its deadline a limit is escalated: the time the escalations' requests
        take at RATE_LIMIT (the rests then go at about the deadline, not that much after it),
        half of DEADLINE_S at most."""
        return min(escalation_s, self._collar.deadline_s / 2)

    def _escalate(self, now: float, escalation_s: float) -> None:
        """Mark what reached its deadline, and send the cancels that are due, per account."""
        moc = self._moc_at(escalation_s)
        lead = self._lead(escalation_s)
        by_account: dict[int, list[Limit]] = {}
        # An account's limits escalate together when their deadlines are near (they went out
        # in one batch): one cancel for all of them, and their rests in one batch.
        due = {
            p.target.account_id
            for p in self._watched.values()
            if p.escalated is None and now >= p.deadline - lead
        }
        for p in self._watched.values():
            if p.escalated is None:
                if moc is not None and now >= moc:
                    p.escalated = "moc_cutoff"
                elif now >= p.deadline - lead - (GROUP_S if p.target.account_id in due else 0):
                    p.escalated = "deadline"
                else:
                    continue
                self._sender.at_market(p.target)  # before any cancel: the rest goes at market
            for order in working_limits(p.result):
                limit = p.limits.get(order.id)
                if limit is None:
                    limit = p.limits[order.id] = Limit(p.target, order, p.escalated, p.prices)
                if order.id in self._cancelling or not self._escalator.due(
                    limit, order.status, now
                ):
                    continue
                by_account.setdefault(p.target.account_id, []).append(limit)
        for account_id, limits in by_account.items():
            self._cancelling.update(x.order.id for x in limits)
            self._spawn(self._cancel(account_id, limits))

    async def _cancel(self, account_id: int, limits: list[Limit]) -> None:
        try:
            await self._escalator.cancel(account_id, limits)
        finally:
            self._cancelling.difference_update(x.order.id for x in limits)
        if self._poke is not None:
            self._poke(account_id)  # following reads them final now, and sends the rests

    def _reserved(self, now: float, escalation_s: float) -> int:
        """Requests the escalations due within the next round need."""
        moc = self._moc_at(escalation_s)
        until = now + self._collar.reprice_s + self._lead(escalation_s)
        counts: dict[int, int] = {}
        for p in self._watched.values():
            if p.escalated is None and (p.deadline <= until or (moc is not None and moc <= until)):
                counts[p.target.account_id] = counts.get(p.target.account_id, 0) + 1
        return escalation_requests(counts.values(), self._batch_size)
