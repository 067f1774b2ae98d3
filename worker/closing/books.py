"""A followed target's books: the fills the account's ledger shows on its instrument, whose each
one is, and whether a positions read is the position now.

`worker.closing.ledger` decides; this reads what it decides from (the executions listing), names
the orders behind fills no listing showed (following's round reads them by id), and keeps what
earlier reads proved. It never sends anything.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from worker.api.models import Execution, Order
from worker.api.reads import Reader
from worker.closing import ledger
from worker.closing.target import Target
from worker.errors import NotFound
from worker.results import TargetResult


class Recognises(Protocol):
    """What books need of the sender (`worker.closing.modes.Sender`)."""

    idempotent: bool

    def recognises(self, order: Order, target: Target) -> bool: ...


@dataclass(slots=True)
class Books:
    start: Decimal  # the plan's read of the position: the known point
    # The job's earlier orders (found or adopted), and what they had filled (signed) at the
    # plan's read: `confirmed` by a takeover's read at one point (`Target.prior_fills`), else
    # what they had filled when handed over (a read after the plan's).
    earlier: frozenset[str] = frozenset()
    held: Decimal = Decimal(0)
    confirmed: bool = False
    seen: ledger.Seen = field(default_factory=ledger.Seen)  # what earlier reads proved
    others: set[str] = field(default_factory=set)  # orders behind its fills that are others'

    @classmethod
    def of(cls, target: Target, result: TargetResult) -> Books:
        earlier = frozenset(o.id for o in result.orders if o.prior)
        if target.prior_fills is not None:
            return cls(target.quantity, earlier, target.prior_fills, confirmed=True)
        filled = sum((Decimal(o.filled_quantity) for o in result.orders if o.prior), Decimal(0))
        return cls(target.quantity, earlier, filled)

    def found_earlier(self, order: Order) -> None:
        """An earlier run's order of the job that following found (`of_earlier_run`): like
        those found before this run sent anything, taken to have filled at the plan's read what
        it had when first read, unconfirmed (so a read not current so is judged again with its
        fills possibly after the plan)."""
        if order.id in self.earlier:
            return
        self.earlier = self.earlier | {order.id}
        self.held = abs(self.held) + abs(Decimal(order.filled_quantity))
        self.confirmed = False

    def unknown(self, known: Collection[str], executions: Sequence[Execution]) -> set[str]:
        """The orders behind fills that no listing of this round showed and the job does not
        know (a close applied late, or another's fill between two rounds), less those an
        earlier read found to be another's: what the round reads by id."""
        return {e.order_id for e in executions} - set(known) - self.others

    def current(
        self,
        read: Decimal,
        executions: Sequence[Execution],
        instrument_id: str,
        own_ids: Collection[str],
        holds_until: datetime | None = None,
    ) -> ledger.Judgement:
        """Whether the read is the position now as the ledger has it (`ledger.judge`); what
        the read proves is kept for the next one.

        An earlier run's orders are taken to have filled at the plan's read what they had when
        this run first read them, a read after the plan's (unless a takeover confirmed it): so
        should the read not be current so, it is judged again with those fills possibly after
        the plan, and their orders not the job's; current then under every reading, it is too.
        """
        fills = ledger.fills_of(executions, instrument_id)
        held = ledger.held_by_plan(fills, self.earlier, self.held)
        verdict = ledger.judge(read, self.start, held, own_ids, self.seen, holds_until)
        if verdict.reading is not ledger.Reading.CURRENT and self.earlier and not self.confirmed:
            since_plan = set(own_ids) - self.earlier
            either = ledger.judge(read, self.start, fills, since_plan, self.seen, holds_until)
            if either.reading is ledger.Reading.CURRENT:
                verdict = either
        self.seen = verdict.seen
        return verdict


async def read_fills(
    reader: Reader, account_id: int, instrument_ids: Sequence[str], since: datetime
) -> dict[str, list[Execution]] | None:
    """The instruments' fills from `since` (the server's time), by instrument in lower case;
    None: the server lists no executions (404)."""
    try:
        listed, _ = await reader.executions(account_id, instrument_ids, since)
    except NotFound:
        return None
    fills: dict[str, list[Execution]] = {iid.lower(): [] for iid in instrument_ids}
    for e in listed:
        fills.setdefault((e.instrument_id or "").lower(), []).append(e)
    return fills


def is_job_order(
    sender: Recognises,
    priors: Mapping[tuple[int, str], object],
    target: Target,
    result: TargetResult,
    order: Order,
) -> bool:
    """An order the job does not list yet is its own: by client id (submit_orders); with
    close_position, a close applied late (`ledger.is_late_close`), never a desk's order."""
    if not sender.recognises(order, target):
        return False
    if sender.idempotent:
        return True
    prior = (target.account_id, target.instrument_id.lower()) in priors
    return ledger.is_late_close(order, unanswered=result.unanswered > 0 or prior)


def of_earlier_run(
    sender: Recognises,
    priors: Mapping[tuple[int, str], object],
    target: Target,
    result: TargetResult,
) -> bool:
    """close_position: an order of the job's that following finds is an earlier run's when an
    earlier run sent a close for the position and every close this run sent for it was answered
    with its order (so the order is none of this run's, and was made before this run's plan:
    a rerun waits out the earlier runs' requests). Its fills may be in the plan's read."""
    if sender.idempotent or result.unanswered > 0:
        return False
    return (target.account_id, target.instrument_id.lower()) in priors
