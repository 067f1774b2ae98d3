"""The journal's group commit: intents committed before their closes are sent, records queued and
flushed, every commit in the journal's own thread, one at a time, over a `Store`.

Every intent handed over within COMMIT_WINDOW_S of the first shares one commit, and none is
acknowledged before that commit returns; records (what happened) ride along in batches. A commit
that fails leaves the writer failed: it never acknowledges an intent after that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from worker.errors import JournalError
from worker.journal.backend import Batch, Row, Store
from worker.journal.schema import split_intents

COMMIT_WINDOW_S = 0.002  # 5,000 closes at 64 in flight: ~500 commits instead of ~1,750

Records = dict[str, list[Row]]  # statement -> rows queued for it, in order


class GroupCommit:
    """Intents and records waiting for a commit, and the thread that commits them."""

    def __init__(self, store: Store, *, record_batch: int) -> None:
        self.store = store
        self.record_batch = record_batch  # records kept before they ride along with intents
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="journal")
        self.closed = False
        self.failed: str | None = None  # why the journal stopped accepting commits
        self.taken = 0  # how many times queued records went to a commit
        self._attempts = store.upsert("attempts")
        self._client_ids = store.upsert("client_ids")
        self._intents: list[Row] = []
        self._records: Records = {}
        self._stamped: set[str] = set()  # runs whose queued records include their end
        self._next: asyncio.Future[None] | None = None  # the group collecting intents
        self._due = False  # that group's window is over
        self._writing = False  # a group is being committed in the thread

    def intent(self, row: Row) -> asyncio.Future[None]:
        """Add an intent row to the group collecting; its future is done once committed."""
        self._intents.append(row)
        return self._group()

    def block(self, rows: Sequence[Row]) -> asyncio.Future[None]:
        """Intent rows committed as a group of their own, at once: no window to wait for."""
        self._intents.extend(rows)
        group = self._group()
        self._window_over()
        return group

    def queue(self, sql: str, params: Row, *, stamps: str | None = None) -> None:
        """Keep a record for a later commit; `stamps`: the run whose clock it moves on."""
        rows = self._records.get(sql)
        if rows is None:
            self._records[sql] = [params]
        else:
            rows.append(params)
        if stamps is not None:
            self._stamped.add(stamps)

    def flush(self) -> None:
        """Commit every pending intent and record, after every group already handed to the
        thread (its one worker takes them in order).

        Not before one still queued there: a run's end withdraws the intents recorded ahead and
        never used, and written first, the withdrawal would find nothing and the block after it
        would stay on disk.
        """
        if self.closed:
            raise JournalError(f"the journal {self.store.name} is closed")
        intents, self._intents = self._intents, []
        records, stamped = self._take_records()
        self.thread.submit(self._commit, intents, records, stamped).result()

    def close(self) -> None:
        """Accept nothing more; wait for the commit under way."""
        self.closed = True
        self.thread.shutdown(wait=True)

    def _take_records(self) -> tuple[Records, set[str]]:
        records, self._records = self._records, {}
        stamped, self._stamped = self._stamped, set()
        self.taken += 1
        return records, stamped

    def _group(self) -> asyncio.Future[None]:
        """The group collecting intents, started if none is; it commits when its window ends."""
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            loop.call_later(COMMIT_WINDOW_S, self._window_over)
        return self._next

    def _window_over(self) -> None:
        self._due = True
        if not self._writing:
            self._start_group()

    def _start_group(self) -> None:
        group, self._next, self._due = self._next, None, False
        if group is None:
            return
        intents, self._intents = self._intents, []
        records: Records = {}
        stamped: set[str] = set()
        if sum(len(rows) for rows in self._records.values()) >= self.record_batch:
            records, stamped = self._take_records()
        if not intents and not records:  # a flush took them; it also said how it went
            _settle(group, JournalError(self.failed) if self.failed else None)
            return
        if self.closed:  # (the run is over: nothing of it may be sent any more)
            _settle(group, JournalError(f"the journal {self.store.name} is closed"))
            return
        self._writing = True
        work = asyncio.get_running_loop().run_in_executor(
            self.thread, self._commit, intents, records, stamped
        )
        work.add_done_callback(partial(self._group_written, group))

    def _group_written(self, group: asyncio.Future[None], work: asyncio.Future[None]) -> None:
        self._writing = False
        _settle(group, None if work.cancelled() else work.exception())
        if self._due:
            self._start_group()

    def _commit(self, intents: Sequence[Row], records: Records, stamped: set[str]) -> None:
        """One transaction, in the thread; rolled back if any statement fails.

        A failure loses what was pending, so the journal stays failed: every later commit
        (and every close waiting for one) raises, and no close is sent without its intent.
        """
        if self.failed is not None:
            raise JournalError(self.failed)
        if not intents and not records:
            return
        attempts, client_ids = split_intents(intents)
        batch: Batch = [(self._attempts, attempts), (self._client_ids, client_ids)]
        batch = [*batch, *records.items()]
        try:
            # The runs whose intents or end this commit writes: their `run_clock` moves on.
            self.store.write(batch, {row[0] for row in intents} | stamped)
        except Exception as exc:
            self.failed = f"the journal {self.store.name} failed a commit: {exc}"
            raise JournalError(self.failed) from None


def _settle(group: asyncio.Future[None], error: BaseException | None) -> None:
    if group.done():
        return
    if error is None:
        group.set_result(None)
    else:  # every close waiting on this group must hear its intent is not recorded
        group.set_exception(error)
        group.exception()  # read here too, in case every waiting close was cancelled
