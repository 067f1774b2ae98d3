"""What the stages of a run share: the run's identity, its request and stop (`Started`), and once
its session is open, its connection (`RunScope`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from worker.api.client import TradingApi
from worker.api.policy import RetryPolicy
from worker.api.reads import Reader
from worker.inputs.settings import Settings
from worker.observe.counters import RunCounters
from worker.run.request import RunRequest


@dataclass(frozen=True, slots=True)
class Started:
    """A run as it begins: what it was asked, its stop, its id and start, its own counters."""

    settings: Settings
    request: RunRequest
    stop: asyncio.Event
    run_id: str
    started_at: datetime
    counters: RunCounters


@dataclass(frozen=True, slots=True)
class RunScope(Started):
    """A run with its session open: the API, its reads, the retry policy they share."""

    api: TradingApi
    reader: Reader
    policy: RetryPolicy

    @classmethod
    def of(cls, started: Started, api: TradingApi, reader: Reader, policy: RetryPolicy) -> RunScope:
        s = started
        return cls(
            s.settings, s.request, s.stop, s.run_id, s.started_at, s.counters, api, reader, policy
        )
