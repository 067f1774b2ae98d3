"""The close stage's bookkeeping: each target's outcome journaled, counted and told to the watcher
as the target settles (`Bookkeeper.record`, called by the fan-out for what its workers settle and
for what following settles, drained from `Follower.settled`); then the run's end recorded in the
journal (`close_the_books`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import date, datetime

from worker.closing.stop import FirstReason
from worker.errors import JournalError
from worker.inputs.settings import Settings
from worker.journal.retention import retain
from worker.journal.store import Journal
from worker.observe import events
from worker.output.exit_codes import ExitCode, exit_code
from worker.results import TargetResult
from worker.run.ended import Ended
from worker.run.request import Watcher


class Bookkeeper:
    """Records each settled target once: its outcome queued in the journal (it rides along with
    the fan-out's commits, so the run's end commits only the last few), counted, and told to the
    watcher. `stopped_by` keeps the first reason the run stops, from inside the close stage."""

    def __init__(
        self, journal: Journal, run_id: str, watcher: Watcher, stopping: asyncio.Event
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.recorded = 0  # outcomes queued as their targets settled
        self.stopped_by = FirstReason()
        self.stopping = stopping
        self._watcher = watcher

    def record(self, result: TargetResult) -> None:
        """A target settled: its outcome journaled now, and told. (A journal that fails here
        fails the next commit too, which reports it.) A fault in what the watcher shows stops
        the run, not following."""
        with contextlib.suppress(JournalError):
            self.journal.outcome(self.run_id, result, result.quantity)
        self.recorded += 1
        try:
            self._watcher.advance(result)
        except Exception as bug:
            events.internal_error(bug)
            self.stop(f"internal error: {type(bug).__name__}: {bug}")

    async def drain(self, settled: AsyncIterator[TargetResult]) -> None:
        """Record each result following settles, as it comes, until following is over."""
        async for result in settled:
            self.record(result)

    def waiting(self, orders: int, close_at: datetime, wait_s: float) -> None:
        """--at-close: what still rests once the fan-out is over, and until when."""
        events.waiting_for_fills(orders=orders, until=close_at, wait_s=wait_s)
        try:
            self._watcher.waiting_for_fills(orders, close_at, wait_s)
        except Exception as bug:  # what a terminal shows never stops following
            events.internal_error(bug)

    def stop(self, why: str) -> None:
        """The run stops from inside: the first reason kept and said, no new close started."""
        self.stopped_by(why)
        self.stopping.set()


def close_the_books(
    books: Bookkeeper,
    settings: Settings,
    ended: Ended,
    closed: list[TargetResult],
    *,
    finished_at: datetime,
    today: date,
) -> Ended:
    """The run's end in the journal, once the closes are over (`closed`: the close stage's
    results; `ended`: the run's). A stop cuts targets off without a record: then every outcome
    is queued again (an upsert each, rather than keeping which were: ~8 MB for 100,000
    targets). The run is finished with its exit code, and retention runs once it went well."""
    journal, run_id = books.journal, books.run_id
    try:
        if books.stopping.is_set() or ended.aborted or books.recorded != len(closed):
            for result in closed:
                journal.outcome(run_id, result, result.quantity)
        if books.stopping.is_set():
            ended = ended.unless_aborted("stop requested")
        code = exit_code(
            ended.results, aborted=ended.aborted, fail_on_not_held=settings.fail_on_not_held
        )
        journal.finish_run(run_id, finished_at, code)
        if code is ExitCode.OK:  # retention, by the server's date (worker.journal.retention)
            retain(journal, settings.journal_keep_days, today)
    except JournalError as err:  # the closes were sent; the report still says what happened
        ended = ended.unless_aborted(str(err))
    return ended
