"""What every close mode offers (`Sender`), and what a send returns (`Sent`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from worker.api.models import Order
from worker.closing.adopt import Adopted
from worker.closing.evidence import Finding
from worker.closing.target import Target
from worker.results import TargetResult

Key = tuple[int, str]  # (account_id, instrument_id)


@dataclass(frozen=True, slots=True)
class Sent:
    orders: list[Order]
    request_id: str
    # The orders were found, not created: the submission's client id was taken (409) by an
    # earlier send of the same close, which landed.
    found: bool = False


class Sender(Protocol):
    # True: sending the same close again cannot create a second order (a client id).
    idempotent: bool

    def client_id(self, target: Target, result: TargetResult) -> tuple[str, int] | None:
        """The id (and its generation) the next send of this target goes under; None: no id."""
        ...

    async def before_fan_out(self, targets: Sequence[Target], stopping: asyncio.Event) -> None:
        """Once, before any close is sent (submit_orders: cancel resting orders, in batches)."""
        ...

    async def prepare(self, target: Target) -> None:
        """Before a target's first send: raises `ApiError` if it must not be sent."""
        ...

    async def send(
        self,
        target: Target,
        client_id: str | None,
        position: Decimal,
        unless: asyncio.Event,
    ) -> Sent:
        """Send one close of `position` (signed, as last read). Raises `ApiError`."""
        ...

    async def look(
        self, target: Target, result: TargetResult, since: datetime, reference: Decimal
    ) -> Finding:
        """What the last unanswered send did. Raises `ApiError` when it cannot be read."""
        ...

    def recognises(self, order: Order, target: Target) -> bool:
        """`order`, listed on the target's instrument, belongs to this run's closes."""
        ...

    def adopted(self, target: Target) -> Adopted | None:
        """The job's own orders an earlier run left working for `target`: followed, not sent."""
        ...

    def first_size(self, target: Target, position: Decimal) -> Decimal:
        """What a target's first close may be sized for, planned for `position` (signed)."""
        ...

    def at_market(self, target: Target) -> None:
        """From now on `target`'s closes go at market (CLOSE_STYLE=protected: its limit is
        over, the rest is escalated or a residue)."""
        ...

    def wave_at(self, target: Target) -> float | None:
        """PROTECTED_VIA=ioc_waves: when (monotonic) `target`'s next close, its next wave or
        its market wave, may go; None: not in waves (any close may go when due, at market)."""
        ...
