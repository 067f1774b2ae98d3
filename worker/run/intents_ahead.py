"""Intents recorded ahead of the fan-out: each target's first close journaled a block at a time.

A block's intents are committed in one go before the workers reach it, so `Journal.intent` finds
them on disk; re-sends and residue closes record their own. An intent recorded ahead is used only
within AHEAD_FRESH_S of its commit and while the journal works, and a run that ends in order
withdraws those it never used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from worker.closing.send import CloseContext, next_intent
from worker.closing.target import Target
from worker.results import TargetResult


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
