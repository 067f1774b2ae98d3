"""Intents recorded ahead of the fan-out: each target's first close journaled a block at a time.

No close is sent before its intent is committed (`worker.journal.store`). Committed as each close
reaches the wire, that is a commit every few closes, in the journal's thread, competing with the
fan-out for the CPU. Here a block of targets' first intents is committed in one go before the
workers reach it, the next block's commit overlapping this block's sends, so
`Journal.intent` finds them already on disk. Re-sends and residue closes record theirs as before.

What it costs in safety: nothing. A crash leaves intents for up to two blocks of closes that
were never sent; the next run looks before closing those positions, as it does for every intent
(a look that finds no close and an open position sends one). A run that ends in order
withdraws the intents it never used (`Journal.finish_run`). An intent recorded ahead is used
only within AHEAD_FRESH_S of its commit and while the journal works: a host that lost its
journal (with PostgreSQL, its session and the lock) sends nothing it could not commit now, so a
standby that took over and waited out the requests in flight finds every close it must see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from worker.closing.send import CloseContext, next_intent
from worker.closing.target import Target
from worker.output.results import TargetResult


class IntentsAhead:
    def __init__(
        self,
        ctx: CloseContext,
        targets: Sequence[Target],
        results: Sequence[TargetResult],
        block: int,
    ) -> None:
        self._ctx = ctx
        self._targets = targets
        self._results = results
        self._block = max(1, block)
        self._commits: dict[int, asyncio.Future[None]] = {}

    async def ready(self, i: int) -> None:
        """Return once target `i`'s first intent is committed; start the next block's commit.

        Raises `JournalError` if its block could not be committed: then it must not be sent.
        """
        k = i // self._block
        self._start(k)
        self._start(k + 1)
        commit = self._commits[k]
        if not commit.done():  # (shielded: a cancelled worker must not cancel its block)
            await asyncio.shield(commit)
        commit.result()

    def _start(self, k: int) -> None:
        lo = k * self._block
        if k in self._commits or lo >= len(self._targets):
            return
        since = self._ctx.server_now() - self._ctx.lookback
        intents = [
            next_intent(self._ctx, target, result, since)
            for target, result in zip(
                self._targets[lo : lo + self._block],
                self._results[lo : lo + self._block],
                strict=True,
            )
        ]
        commit = asyncio.ensure_future(self._ctx.journal.intents_ahead(self._ctx.run_id, intents))
        # Its failure reaches every worker that waits for it; one nobody reached is not a bug.
        commit.add_done_callback(lambda c: c.cancelled() or c.exception())
        self._commits[k] = commit
