"""What is open at the server for the targets: positions and working orders, read, never changed.

`liquidator status` shows it and `liquidator cancel` acts on its orders; targets mean what they
mean for `run`, and an order is the job's own (`own`) when its client id is one today's job
derives (`worker.closing.client_ids`). Nothing here sends a change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from worker.api.client import TradingApi, open_session
from worker.api.models import Order
from worker.api.pace import Pacer
from worker.api.policy import RetryPolicy
from worker.api.reads import Reader
from worker.closing.client_ids import client_order_id
from worker.closing.target import Target
from worker.errors import ApiError, Unauthorized
from worker.inputs.settings import Settings
from worker.inputs.targets import TargetSpec, accounts_of
from worker.journal.keys import job_key
from worker.output.results import Outcome
from worker.run.plan import make_plan
from worker.run.runner import stop_aware_sleep

MARKET_TZ = ZoneInfo("America/New_York")  # a trading day, and so a job, is New York's


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
    settings: Settings, reader: Reader, specs: Sequence[TargetSpec]
) -> list[AccountView]:
    """Each target account's open positions and working orders, in the order first named.

    Raises `Unauthorized` when the key is refused.
    """
    clock = await reader.clock()
    job = job_key(clock.data.astimezone(MARKET_TZ).date().isoformat())
    plan = await make_plan(reader, specs)
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
        for o in listed:
            if o.working and _in_scope(o, named[view.account_id], whole):
                view.orders.append(o)
                iid = o.instrument_id or ""
                stem = client_order_id(job, view.account_id, iid, 0)[:-1]
                if iid and o.client_order_id.startswith(stem):
                    view.own.add(o.id)

    await asyncio.gather(*(orders_of(v) for v in views.values()))
    return list(views.values())


def _in_scope(order: Order, named: set[str], whole: Sequence[TargetSpec]) -> bool:
    iid = (order.instrument_id or "").lower()
    if iid in named:
        return True
    names = {iid, (order.symbol or "").lower()}
    return any(not names & {e.lower() for e in spec.exclude} for spec in whole)
