"""The run's journal as an `async with`: locked inside, closed and unlocked on every path."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker.errors import JournalRefused
from worker.journal.open import HeldJournal


async def test_the_lock_is_let_go_when_the_body_raises(settings_for: Any) -> None:
    settings = settings_for(base_url="http://127.0.0.1:1/", api_key="k.s", lock_wait=0)
    stop = asyncio.Event()
    held = HeldJournal(settings, stop, dry_run=False)
    with pytest.raises(RuntimeError, match="the body failed"):
        async with held as journal:
            assert journal is not None
            raise RuntimeError("the body failed")
    assert held.close_error is None
    async with HeldJournal(settings, stop, dry_run=False) as again:  # not held: opens at once
        assert again is not None


async def test_a_second_run_is_refused_while_one_holds_it(settings_for: Any) -> None:
    settings = settings_for(base_url="http://127.0.0.1:1/", api_key="k.s", lock_wait=0)
    stop = asyncio.Event()
    held = HeldJournal(settings, stop, dry_run=False)
    async with held as journal:
        assert journal is not None
        with pytest.raises(JournalRefused):
            async with HeldJournal(settings, stop, dry_run=False):
                pytest.fail("a second run opened a held journal")
    assert held.close_error is None
    async with HeldJournal(settings, stop, dry_run=False) as again:  # let go at the end
        assert again is not None


async def test_a_dry_run_holds_no_journal(settings_for: Any) -> None:
    settings = settings_for(base_url="http://127.0.0.1:1/", api_key="k.s", lock_wait=0)
    stop = asyncio.Event()
    async with HeldJournal(settings, stop, dry_run=True) as journal:
        assert journal is None
        async with HeldJournal(settings, stop, dry_run=False) as real:  # no lock taken
            assert real is not None
