"""close_position: DELETE .../positions/{id}; the server sizes the close and picks its side.

Not idempotent: after an unknown outcome the closer looks before any re-send, and an order is the
worker's by evidence (`worker.closing.evidence`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from worker.api.client import TradingApi
from worker.api.models import Order
from worker.api.reads import Reader
from worker.closing.adopt import Adopted
from worker.closing.evidence import Finding, look
from worker.closing.modes.sender import Sent
from worker.closing.target import Target
from worker.results import TargetResult


class ClosePositionSender:
    """close_position: the default mode; the server sizes the close and picks its side."""

    idempotent = False

    def __init__(
        self, api: TradingApi, reader: Reader, preexisting: Mapping[int, frozenset[str]]
    ) -> None:
        self._api = api
        self._reader = reader
        self._preexisting = preexisting

    def client_id(self, target: Target, result: TargetResult) -> tuple[str, int] | None:
        return None

    async def before_fan_out(self, targets: Sequence[Target], stopping: asyncio.Event) -> None:
        return None  # cancel_orders rides on each close itself

    async def prepare(self, target: Target) -> None:
        return None

    async def send(
        self, target: Target, client_id: str | None, position: Decimal, unless: asyncio.Event
    ) -> Sent:
        reply = await self._api.close_position(
            target.account_id,
            target.instrument_id,
            cancel_orders=target.cancel_orders,
            unless=unless,
        )
        return Sent(reply.data, reply.request_id)

    async def look(
        self, target: Target, result: TargetResult, since: datetime, reference: Decimal
    ) -> Finding:
        return await look(
            self._reader,
            target,
            since,
            reference=reference,
            preexisting=self._preexisting_of(target.account_id),
        )

    def recognises(self, order: Order, target: Target) -> bool:
        return order.id not in (self._preexisting_of(target.account_id) or ())

    def adopted(self, target: Target) -> Adopted | None:
        return None  # no client ids: an earlier run's close is found by a look (evidence)

    def first_size(self, target: Target, position: Decimal) -> Decimal:
        return position  # the server sizes a close for the position as it stands

    def at_market(self, target: Target) -> None:
        return None  # every close is a market order

    def wave_at(self, target: Target) -> float | None:
        return None  # no waves: the protected style needs submit_orders

    def _preexisting_of(self, account_id: int) -> Collection[str] | None:
        return self._preexisting.get(account_id)
