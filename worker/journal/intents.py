"""An intent: the record of a close about to be sent, committed before it goes out; and the
first attempts' intents recorded ahead of their sends, in one commit (`Journal.intents_ahead`).

A send finds its intent recorded ahead and committed moments ago, and needs no commit of its
own; one recorded ahead and never used is withdrawn when the run finishes in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# An intent recorded ahead is used only this soon after its commit; later, the send commits its
# own. A host that lost its journal (its PostgreSQL session, and with it the lock) therefore
# sends nothing it could not commit now, beyond this margin: a standby that took over waits
# REQUEST_TIMEOUT + RECONCILE_DELAY before it looks, and that wait must cover every send.
AHEAD_FRESH_S = 0.25


@dataclass(frozen=True, slots=True)
class Intent:
    """A close about to be sent: the record a rerun finds (see `Prior`)."""

    account_id: int
    instrument_id: str
    attempt: int
    since: datetime  # the earliest moment its order could carry
    client_id: str | None = None  # submit_orders: the id it goes under
    generation: int = 0

    @property
    def slot(self) -> tuple[int, str, int]:
        """Its place in the attempts table, within one run."""
        return (self.account_id, self.instrument_id, self.attempt)

    @property
    def named(self) -> tuple[Any, ...]:
        """What else a send must match to use an intent recorded ahead: its client id."""
        return () if self.client_id is None else (self.client_id, self.generation)

    def row(self, run_id: str, since_text: str | None = None) -> tuple[Any, ...]:
        row = (run_id, *self.slot, since_text or self.since.isoformat())
        return (*row, *self.named)


class RecordedAhead:
    """Intents recorded ahead and not yet used, by slot: the row's client id part (what the
    send must match to use it) and when its commit returned (None: not yet)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[tuple[int, str, int], tuple[tuple[Any, ...], float | None]] = {}

    def use(self, intent: Intent) -> bool:
        """Whether `intent` may use the one recorded ahead in its slot (taken either way): the
        same close, committed no longer than AHEAD_FRESH_S ago. The caller also asks that the
        journal is still working."""
        ahead = self._slots.pop(intent.slot, None) if self._slots else None
        if ahead is None:
            return False
        named, committed_at = ahead
        fresh = committed_at is not None and time.monotonic() - committed_at <= AHEAD_FRESH_S
        return fresh and named == intent.named

    def expect(self, intents: Iterable[Intent]) -> None:
        """These are being recorded ahead: their commit has not returned yet."""
        for i in intents:
            self._slots[i.slot] = (i.named, None)

    def committed(self, intents: Iterable[Intent], at: float) -> None:
        """Their commit returned at `at` (monotonic)."""
        for i in intents:
            if i.slot in self._slots:  # (not used meanwhile by an intent that committed its own)
                self._slots[i.slot] = (i.named, at)

    def unused(self) -> list[tuple[int, str, int]]:
        """The slots recorded ahead and never used, forgotten here."""
        slots = list(self._slots)
        self._slots.clear()
        return slots
