"""What is open at the server for the targets: positions and working orders, read, never changed.

`liquidator status` shows it and `liquidator cancel` acts on its orders. Targets mean what they
mean for `run`, checked the same way (`worker.run.plan`): an `exclude` entry or a named
instrument the API does not know refuses the command (exit 2), since its scope would not be the
one the file meant. An order is the job's own (`own`) when its client id is one today's job
derives (`worker.closing.client_ids`), or its id is one today's job recorded (close_position).
The listing may lag order entry, so the ids the journal holds for today's job
(`worker.journal.job_ids`) that it does not show are looked up one by one, as a rerun's
adoption does. Nothing here sends a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from worker.api.client import TradingApi, open_session
from worker.api.models import Order
from worker.api.pace import Pacer
from worker.api.policy import RetryPolicy
from worker.api.reads import Reader
from worker.closing.adopt import working_by_client_id
from worker.closing.client_ids import client_order_id
from worker.closing.target import Target
from worker.errors import ApiError, InputError, Unauthorized
from worker.inputs.settings import Settings
from worker.inputs.targets import TargetSpec, accounts_of
from worker.journal.job_ids import JobIds, job_ids
from worker.journal.keys import job_key, trading_day
from worker.results import Outcome
from worker.run.plan import make_plan
from worker.run.stops import stop_aware_sleep


@dataclass
class AccountView:
    account_id: int
    positions: list[Target] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)  # working, on the targets' instruments
    own: set[str] = field(default_factory=set)  # ids of the orders that are the job's
    error: str | None = None  # the account could not be read
    failed: set[str] = field(default_factory=set)  # `cancel`: orders not cancelled


@contextlib.asynccontextmanager
async def connected(
    settings: Settings, stop: asyncio.Event
) -> AsyncIterator[tuple[TradingApi, Reader]]:
    """An API session and a reader with the run's retry policy and pace."""
    assert settings.api_key is not None, "the CLI refuses to go on without a key"
    policy = RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_initial_s=settings.retry_backoff,
        backoff_max_s=settings.retry_backoff_max,
        sleep=stop_aware_sleep(stop),
    )
    key = settings.api_key.get_secret_value()
    async with open_session(settings.concurrency, settings.request_timeout, key) as session:
        api = TradingApi(
            session, settings.base_url, Pacer(settings.concurrency, settings.rate_limit)
        )
        yield api, Reader(api, policy)


async def read_view(
    settings: Settings, api: TradingApi, reader: Reader, specs: Sequence[TargetSpec]
) -> list[AccountView]:
    """Each target account's open positions and working orders, in the order first named.

    Raises `InputError` when `run` would refuse the targets or fail a named instrument as
    unknown, `Unauthorized` when the key is refused.
    """
    clock = await reader.clock()
    job = job_key(trading_day(clock.data).isoformat())
    plan = await make_plan(reader, specs)
    if plan.refusals or plan.unknown:
        raise InputError("; ".join(plan.refusals + plan.unknown) + "; correct the targets")
    sent = _sent_by_the_job(settings, job)
    views = {a: AccountView(a) for a in accounts_of(specs)}
    named: dict[int, set[str]] = {a: set() for a in views}
    for t in plan.targets:
        views[t.account_id].positions.append(t)
        named[t.account_id].add(t.instrument_id.lower())
    for r in plan.settled:
        if r.outcome is Outcome.FAILED and r.instrument == "*":
            views[r.account_id].error = r.error
        elif r.instrument_id is not None:
            named[r.account_id].add(r.instrument_id.lower())

    async def orders_of(view: AccountView) -> None:
        if view.error is not None:
            return
        try:
            listed, _ = await reader.orders(view.account_id, (), None)
        except Unauthorized:
            raise
        except ApiError as err:
            view.error = f"orders could not be read: {err}"
            return
        whole = [s for s in specs if s.account_id == view.account_id and s.instrument is None]
        scope = _Scope(view.account_id, named[view.account_id], whole)
        # close_position's orders carry no client id of the job's: the journal's ids say so.
        recorded = {o for a, _, o in sent.order_ids if a == view.account_id}
        try:
            listed += await _unlisted(api, reader, scope, listed, sent)
        except Unauthorized:
            raise
        except ApiError as err:
            view.error = f"the job's orders could not be looked up: {err}"
            return
        for o in listed:
            if o.working and scope.covers(o):
                view.orders.append(o)
                iid = o.instrument_id or ""
                stem = client_order_id(job, view.account_id, iid, 0)[:-1]
                if (iid and o.client_order_id.startswith(stem)) or o.id in recorded:
                    view.own.add(o.id)

    await asyncio.gather(*(orders_of(v) for v in views.values()))
    return list(views.values())


def _sent_by_the_job(settings: Settings, job: str) -> JobIds:
    """The ids today's job recorded sending; none, said on stderr, when the journal cannot be
    read (the listing alone then shows the job's orders, as late as it lags)."""
    try:
        return job_ids(settings, job)
    except Exception as exc:
        print(
            f"liquidator: the journal could not be read ({type(exc).__name__}: {exc}); the"
            " job's own orders are those the orders listing shows",
            file=sys.stderr,
        )
        return JobIds()


@dataclass(frozen=True)
class _Scope:
    """What of one account the view shows: the instruments named (in lower case), and the
    targets that name the whole account (with their exclusions)."""

    account_id: int
    named: set[str]
    whole: Sequence[TargetSpec]

    def wanted(self, account_id: int, instrument_id: str) -> bool:
        """Whether an order the job recorded on this position is in the view."""
        return account_id == self.account_id and (
            bool(self.whole) or instrument_id.lower() in self.named
        )

    def covers(self, order: Order) -> bool:
        """Whether a listed order is on a position the view shows."""
        iid = (order.instrument_id or "").lower()
        if iid in self.named:
            return True
        names = {iid, (order.symbol or "").lower()}
        return any(not names & {e.lower() for e in spec.exclude} for spec in self.whole)


async def _unlisted(
    api: TradingApi, reader: Reader, scope: _Scope, listed: Sequence[Order], sent: JobIds
) -> list[Order]:
    """The job's orders on the account the listing did not show, looked up by their ids."""
    account_id, wanted = scope.account_id, scope.wanted

    shown = {o.client_order_id for o in listed} | {o.id for o in listed}
    client_ids = [c for a, i, c in sent.client_ids if wanted(a, i) and c not in shown]
    found = [o for o, _ in await working_by_client_id(reader, api, account_id, client_ids)]
    shown |= {o.id for o in found}
    order_ids = [o for a, i, o in sent.order_ids if wanted(a, i) and o not in shown]
    by_id = await asyncio.gather(*(order_by_id(reader, account_id, o) for o in order_ids))
    return found + [o for o in by_id if o is not None and o.working]


async def order_by_id(reader: Reader, account_id: int, order_id: str) -> Order | None:
    """One order by its id, current however the listing lags; None: the server has none."""
    reply = await reader.order(account_id, order_id)
    return None if reply is None else reply.data
