"""`liquidator cancel`: cancel the working orders on the targets' instruments, after a yes.

The orders are those `liquidator status` lists (`worker.run.server_view`): the job's own included,
since the operator asks to get rid of what is open. Each is cancelled by its id (a cancel sent
twice is harmless, so it is retried as a read), then read back until it reads final (by id,
one by one where the listing lags): an order may still fill while its cancel is pending, and
that is said (`order_canceled` with its status); one still working when the wait ends is named
(`cancel_failed`, "still working").

Exit 0: every listed order ended not working (nothing listed counts). 1: an order could not be
cancelled or still worked when the wait (FLAT_TIMEOUT) ended, or an account could not be read.
2: no terminal to confirm on and no --yes, targets `run` would refuse (an unknown `exclude`
entry or named instrument), or a run holds the journal's lock and --force was not given
(nothing sent). 3: the operator declined, a stop (SIGTERM, SIGINT) came, or the key
was refused.

A run that holds the journal's lock (the same state directory, or the same JOURNAL_URL and API;
found with the flags and settings `run` uses: --state-dir, --journal-url, STATE_DIR, ...)
may have orders resting at the server, market-on-close orders waiting for the close among them:
cancelling them would undo that run's flatten while it believes them working. So `cancel`
takes the journal's lock for as long as it cancels, and refuses, naming the holder, when a run
holds it; `--force` cancels all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.api.client import IDS_PER_REQUEST, TradingApi
from worker.api.models import Order
from worker.api.reads import Reader
from worker.cli.status import emit
from worker.errors import ApiError, JournalRefused, NotFound, Unauthorized
from worker.inputs.settings import Settings
from worker.inputs.targets import TargetSpec
from worker.journal.keys import LOCK_SCOPE
from worker.journal.lock import FileLock
from worker.journal.open import LOCK_FILE
from worker.observe import events
from worker.output.exit_codes import ExitCode
from worker.run.server_view import AccountView, connected, order_by_id, read_view
from worker.run.stops import stop_aware_sleep

if TYPE_CHECKING:
    from worker.cli.terminal import Terminal

IDS_PER_READ = IDS_PER_REQUEST


@dataclass(frozen=True, slots=True)
class CancelFlags:
    """What `cancel`'s flags ask: no question (--yes), nothing cancelled (--dry-run), and
    cancelling while a run holds the journal's lock (--force)."""

    yes: bool
    dry_run: bool
    force: bool = False


async def cancel(
    settings: Settings,
    specs: Sequence[TargetSpec],
    stop: asyncio.Event,
    terminal: Terminal | None,
    flags: CancelFlags,
) -> int:
    if flags.dry_run or flags.force:
        return await _cancel(settings, specs, stop, terminal, flags)
    try:
        async with _no_run_holds_the_journal(settings):
            return await _cancel(settings, specs, stop, terminal, flags)
    except JournalRefused as err:
        events.run_aborted(f"{err}; nothing was cancelled")
        return int(ExitCode.INVALID)


@contextlib.asynccontextmanager
async def _no_run_holds_the_journal(settings: Settings) -> AsyncIterator[None]:
    """Hold the journal's lock while cancelling, so no run is flattening meanwhile; raise
    `JournalRefused` naming the holder when a run holds it. A state directory that does not
    exist holds no journal, and is not created."""
    holder = "a run holds"
    refusal = (
        "; cancelling now would cancel that run's own working orders (market-on-close orders"
        " included). Let it finish or stop it, or pass --force to cancel all the same"
    )
    if settings.journal_url is not None:
        from worker.journal.postgres import PgJournal  # psycopg only for a PostgreSQL journal

        try:
            journal = await PgJournal.open(
                settings.journal_url.get_secret_value(),
                scope=LOCK_SCOPE,
                lock_wait=0,
                timeout_s=settings.journal_timeout,
            )
        except JournalRefused as err:
            raise JournalRefused(f"{holder} the journal: {err}{refusal}") from None
        try:
            yield
        finally:
            journal.close()
        return
    directory = settings.journal_dir
    if not directory.is_dir():
        yield
        return
    lock = FileLock(directory / LOCK_FILE)
    try:
        if not lock.try_acquire():
            raise JournalRefused(f"{holder} the journal in {directory} ({lock.holder()}){refusal}")
        yield
    finally:
        lock.release()


async def _cancel(
    settings: Settings,
    specs: Sequence[TargetSpec],
    stop: asyncio.Event,
    terminal: Terminal | None,
    flags: CancelFlags,
) -> int:
    yes, dry_run = flags.yes, flags.dry_run
    async with connected(settings, stop) as (api, reader):
        try:
            views = await read_view(settings, api, reader, specs)
            listed = sum(len(v.orders) for v in views)
            if terminal is not None:
                _show(terminal, views, dry_run)
            elif dry_run:
                emit(views)
            if dry_run or not listed:
                return _code(views, failed=False)
            if terminal is not None and not yes:
                question = f"Cancel {listed} working order(s)? Type 'yes' to proceed: "
                if not await _answer(terminal.ask_yes(question), stop):
                    events.run_aborted("the operator declined: nothing was cancelled")
                    return int(ExitCode.ABORTED)
            if stop.is_set():
                events.run_aborted("stop requested: nothing was cancelled")
                return int(ExitCode.ABORTED)
            done = await asyncio.gather(*(_cancel_account(api, reader, v) for v in views))
            left = [o for pending in done for o in pending]
            failed = await _until_done(settings, api, reader, views, left, stop)
        except Unauthorized as err:
            events.run_aborted(f"credentials rejected: {err}")
            return int(ExitCode.ABORTED)
    if stop.is_set():
        events.run_aborted("stop requested")
        return int(ExitCode.ABORTED)
    if terminal is not None:
        cancelled = listed - failed
        terminal.console.print(f"{cancelled} of {listed} working order(s) no longer work.")
    return _code(views, failed=failed > 0)


def _show(terminal: Terminal, views: Sequence[AccountView], dry_run: bool) -> None:
    from worker.cli.tables import orders_table

    for view in views:
        if view.error is not None:
            terminal.console.print(f"[bold red]Account {view.account_id}: {view.error}[/]")
        elif view.orders:
            title = f"Account {view.account_id}: {len(view.orders)} working order(s) to cancel"
            terminal.console.print(orders_table(title, view))
        else:
            terminal.console.print(f"Account {view.account_id}: no working order to cancel")
    if dry_run:
        terminal.console.print("Dry run: nothing was cancelled.")


async def _answer(question: Awaitable[bool], stop: asyncio.Event) -> bool:
    asking = asyncio.ensure_future(question)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({asking, stopped}, return_when=asyncio.FIRST_COMPLETED)
        return asking.done() and bool(asking.result())
    finally:
        asking.cancel()
        stopped.cancel()


async def _cancel_account(
    api: TradingApi, reader: Reader, view: AccountView
) -> list[tuple[AccountView, Order]]:
    """Ask to cancel each of the account's orders; those whose cancel the server took."""
    taken: list[tuple[AccountView, Order]] = []
    for o in view.orders:
        own = o.id in view.own
        try:
            reply = await reader.retried(
                f"cancel order {o.id} of account {view.account_id}",
                functools.partial(api.cancel_open_order, view.account_id, o.id),
            )
        except NotFound:  # no longer open: the wait reads how it ended
            taken.append((view, o))
            continue
        except Unauthorized:
            raise
        except ApiError as err:
            view.failed.add(o.id)
            events.cancel_failed(o, own=own, error=str(err), request_id=err.request_id)
            continue
        events.order_cancel_requested(reply.data, own=own, request_id=reply.request_id)
        taken.append((view, o))
    return taken


async def _until_done(
    settings: Settings,
    api: TradingApi,
    reader: Reader,
    views: Sequence[AccountView],
    pending: list[tuple[AccountView, Order]],
    stop: asyncio.Event,
) -> int:
    """Read the cancelled orders until none works; how many failed (refused or still working)."""
    sleep = stop_aware_sleep(stop)
    started = time.monotonic()
    pause = settings.follow_pause
    while pending:
        still: list[tuple[AccountView, Order]] = []
        for view in views:
            mine = [o for v, o in pending if v is view]
            for start in range(0, len(mine), IDS_PER_READ):
                chunk = mine[start : start + IDS_PER_READ]
                still += [(view, o) for o in await _still_working(api, reader, view, chunk)]
        pending = still
        if not pending or stop.is_set() or time.monotonic() - started >= settings.flat_timeout:
            break
        await sleep(pause)
        pause = min(pause * 2, settings.follow_pause_max)
    for view, o in pending:
        view.failed.add(o.id)
        events.cancel_failed(
            o,
            own=o.id in view.own,
            error=f"still working {time.monotonic() - started:.3g} s after its cancel",
            request_id=None,
        )
    return sum(len(v.failed) for v in views)


async def _still_working(
    api: TradingApi, reader: Reader, view: AccountView, chunk: Sequence[Order]
) -> list[Order]:
    """One read of these cancelled orders (IDS_PER_READ at most): those that ended are
    `order_canceled`; the others, and all of them when the read fails, are returned."""
    ids = [o.id for o in chunk]
    try:
        reply = await reader.retried(
            f"orders of account {view.account_id}",
            functools.partial(api.get_orders, view.account_id, order_ids=ids),
        )
    except Unauthorized:
        raise
    except ApiError:
        return list(chunk)
    read = {o.id: o for o in reply.data}
    # A listing that lags order entry leaves young orders out: read each by its id.
    unlisted = [o.id for o in chunk if o.id not in read]
    for now in await asyncio.gather(
        *(order_by_id(reader, view.account_id, i) for i in unlisted),
        return_exceptions=True,
    ):
        if isinstance(now, Unauthorized):
            raise now
        if isinstance(now, Order):
            read[now.id] = now
    still: list[Order] = []
    for o in chunk:
        now = read.get(o.id, o)
        if o.id in read and not now.working:
            events.order_canceled(now, own=o.id in view.own, request_id=reply.request_id)
        else:
            still.append(o)
    return still


def _code(views: Sequence[AccountView], *, failed: bool) -> int:
    return int(ExitCode.FAILED if failed or any(v.error for v in views) else ExitCode.OK)
