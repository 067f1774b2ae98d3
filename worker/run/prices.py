"""Arrival prices: each planned instrument's quote read before the first close, and the guards
applied to it. Reads only; what a guard decides is `worker.closing.guards`'s.

Snapshots are read by instrument UUID, `SNAPSHOT_BATCH` to a request (the spec names no maximum;
100 UUIDs keep the URL under 4 KB), each through the reader's pacer and retries: N instruments
cost ceil(N / 100) requests. A batch that fails leaves its instruments without an arrival price
(`quotes_unavailable`), and the run goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

from worker.api.client import SNAPSHOT_BATCH
from worker.api.models import MarketDataSnapshot
from worker.api.reads import Reader
from worker.closing import target as life
from worker.closing.guards import Guards, held_because
from worker.closing.target import Target
from worker.errors import ApiError, Unauthorized
from worker.inputs.settings import Settings
from worker.observe import events
from worker.results import Arrival, TargetResult


@dataclasses.dataclass(slots=True)
class Quotes:
    """What the snapshots said: the arrival quote by instrument UUID (lower case; None: the
    server has no quote for it), for the instruments whose snapshot was answered."""

    by_instrument: dict[str, Arrival | None]


def guards_of(settings: Settings) -> Guards:
    return Guards(
        require_quote=settings.require_quote,
        max_quote_age_s=settings.max_quote_age_s,
        max_spread_bps=settings.max_spread_bps,
        max_notional=settings.max_notional,
        protected=settings.close_style == "protected",
    )


async def read_quotes(
    reader: Reader, instrument_ids: Sequence[str], server_now: Callable[[], datetime]
) -> Quotes:
    """The arrival quote of each instrument; those whose batch failed are left out."""
    unique = list(dict.fromkeys(i.lower() for i in instrument_ids))
    batches = [unique[i : i + SNAPSHOT_BATCH] for i in range(0, len(unique), SNAPSHOT_BATCH)]
    quotes = Quotes({})

    async def one(batch: list[str]) -> None:
        try:
            reply = await reader.snapshots(batch)
        except Unauthorized:
            raise
        except ApiError as err:
            events.quotes_unavailable(instruments=len(batch), error=str(err))
            return
        now = server_now()
        answered = {s.instrument_id.lower(): s for s in reply.data}
        for iid in batch:
            snapshot = answered.get(iid)
            quotes.by_instrument[iid] = None if snapshot is None else _arrival(snapshot, now)

    await asyncio.gather(*(one(b) for b in batches))
    return quotes


def _arrival(snapshot: MarketDataSnapshot, now: datetime) -> Arrival | None:
    q = snapshot.last_quote
    if q is None or (q.bid is None and q.ask is None):
        return None
    midpoint = q.midpoint
    if midpoint is None and q.bid is not None and q.ask is not None:
        midpoint = (q.bid + q.ask) / 2
    age = None if q.timestamp is None else max(0.0, (now - q.timestamp).total_seconds())
    return Arrival(q.bid, q.ask, midpoint, age)


def priced(targets: Sequence[Target], quotes: Quotes) -> list[Target]:
    """The targets, each with its instrument's arrival quote (None when there is none)."""
    return [t.with_arrival(quotes.by_instrument.get(t.instrument_id.lower())) for t in targets]


def apply_guards(
    targets: Sequence[Target], quotes: Quotes, guards: Guards, *, force: bool
) -> tuple[list[Target], list[TargetResult]]:
    """The targets to send, and those a guard holds back (settled `guarded`). With `force`
    every target is sent, and each one a guard would have held says so."""
    send: list[Target] = []
    held: list[TargetResult] = []
    for t in targets:
        why = held_because(t, guards, quote_read=t.instrument_id.lower() in quotes.by_instrument)
        if why is None:
            send.append(t)
        elif force:
            events.guard_overridden(account_id=t.account_id, instrument=t.instrument, why=why)
            send.append(t)
        else:
            result = t.result()
            life.guarded(result, why)
            held.append(result)
    return send, held
