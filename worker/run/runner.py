"""One run, as its stages: preflight, plan, confirm, journal, fan-out and follow, finish.

`run` opens the journal and the session around the stages (`worker.run.session`), which run in
order (`worker.run.stages`), and writes the report (`worker.run.finish`). The orchestrator owns
the pacer, the stop event and the run's counters; a stop request is an event, never an exception
thrown into a stage.
"""

from __future__ import annotations

import asyncio
import uuid

from worker.inputs.settings import Settings
from worker.observe import events
from worker.observe.counters import RunCounters
from worker.output.exit_codes import ExitCode as ExitCode  # re-exported; its home is exit_codes
from worker.output.metrics import unwritable as metrics_unwritable
from worker.run.ended import RunResult as RunResult  # re-exported: what `run` returns
from worker.run.finish import finish
from worker.run.request import RunRequest as RunRequest  # re-exported: what `run` is asked
from worker.run.request import Watcher as Watcher
from worker.run.scope import Started
from worker.run.session import journaled
from worker.run.stops import stop_aware_sleep as stop_aware_sleep  # re-exported for cli/


async def run(settings: Settings, request: RunRequest, stop: asyncio.Event) -> RunResult:
    run_id, started_at = uuid.uuid4().hex, request.wall_clock()
    events.bind_run(run_id)
    events.run_started(
        base_url=settings.base_url,
        dry_run=request.dry_run,
        concurrency=settings.concurrency,
        rate_limit=settings.rate_limit,
    )
    if settings.metrics_file is not None and not request.dry_run:
        why = metrics_unwritable(settings.metrics_file)
        if why is not None:  # a warning only: observability never stops a flatten
            events.metrics_unavailable(path=str(settings.metrics_file), error=why)
    counters = RunCounters()  # the run's own: bumped where things happen, read here
    started = Started(settings, request, stop, run_id, started_at, counters)
    return finish(started, await journaled(started))
