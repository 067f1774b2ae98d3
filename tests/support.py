"""Helpers that build real servers on loopback for the tests, and small fakes for waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from structlog.typing import EventDict

from worker.api.client import TradingApi, open_session
from worker.api.pace import Pacer
from worker.closing.client_ids import SHAPE
from worker.inputs.targets import TargetSpec
from worker.observe import writer
from worker.run.runner import RunRequest, RunResult, run
from worker.simulator import Simulator


@contextlib.contextmanager
def events_emitted() -> Iterator[list[EventDict]]:
    """Every event emitted inside, at every level, as dicts with the bound contextvars
    (`run_id`, a target's `account_id` and `instrument`): structlog's `capture_logs` on
    structlog's defaults (a writer configured earlier, at its level, is put aside)."""
    writer.unconfigure()
    try:
        with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as entries:
            yield entries
    finally:
        writer.unconfigure()


API_KEY = "test-key.test-secret"


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yield its base URL."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def sim_behind(sim: Simulator, *middlewares: Any) -> AsyncIterator[str]:
    """Serve `sim` on loopback behind aiohttp `middlewares`: a gateway's fault the simulator has
    no setting for (a reply rewritten, a listing refused). Yield its base URL."""
    app = sim.app()
    app.middlewares.extend(middlewares)
    async with serving(app) as base_url:
        yield base_url


def sim_hook(sim: Simulator) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Run a function after each close the server applies (wraps the book's close)."""

    def register(fn: Callable[[], None]) -> Callable[[], None]:
        close = sim.book.close

        def closing(*args: Any, **kw: Any) -> Any:
            order = close(*args, **kw)
            fn()
            return order

        sim.book.close = closing  # type: ignore[method-assign]
        return fn

    return register


@contextlib.asynccontextmanager
async def api_for(
    base_url: str,
    *,
    concurrency: int = 4,
    rate_limit: float = 0,
    request_timeout: float = 2.0,
    api_key: str = API_KEY,
) -> AsyncIterator[TradingApi]:
    """A TradingApi on a plain ClientSession (not aiohttp's test client), as in production."""
    async with open_session(concurrency, request_timeout, api_key) as session:
        yield TradingApi(session, base_url, Pacer(concurrency, rate_limit))


def envelope(data: Any, **metadata: Any) -> web.Response:
    body = {"data": data, "error": None, "metadata": {"request_id": str(uuid.uuid4()), **metadata}}
    return web.json_response(body)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": status, "message": message}, "metadata": {"request_id": "rid-err"}}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def order(side: str = "SELL", quantity: str = "25", status: str = "PENDING_NEW") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "client_order_id": "close-1",
        "account_id": 19816,
        "venue": "XNMS",
        "side": side,
        "quantity": quantity,
        "order_type": "MARKET",
        "time_in_force": "DAY",
        "status": status,
        "filled_quantity": "0",
        "leaves_quantity": quantity,
        "created_at": "2025-10-03T14:01:15.000000000Z",
        "updated_at": "2025-10-03T14:01:15.000000000Z",
        "symbol": "GOOG",
        "instrument_id": "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa",
    }


@dataclass
class RecordedSleeps:
    """An injected sleep: records each wait and returns at once, so tests never wait."""

    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class FakeClock:
    """A clock the test moves, in epoch seconds: a simulator's or a pacer's `clock`. Its
    `sleep` moves it instead of waiting, so an injected wait takes no real time."""

    def __init__(self, at: datetime | float = 1000.0) -> None:
        self.now = at.timestamp() if isinstance(at, datetime) else at

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any LIQUIDATOR_ setting or systemd credential."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQUIDATOR_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run `python -m worker ARGS` without a terminal; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def read_screen(fd: int, screen: list[str], pattern: str, limit_s: float = 30) -> str:
    """Read a pseudo-terminal until `pattern` shows (colours stripped); never block forever."""
    deadline = time.monotonic() + limit_s
    while pattern not in (text := ANSI.sub("", "".join(screen))):
        assert time.monotonic() < deadline, f"never saw {pattern!r} in:\n{text[-3000:]}"
        ready, _, _ = await asyncio.to_thread(select.select, [fd], [], [], 0.2)
        if ready:
            try:
                screen.append(os.read(fd, 65536).decode(errors="replace"))
            except OSError:  # the child closed the terminal
                break
    return text


def seed_accounts(sim: Simulator, accounts: int, per_account: int) -> list[tuple[int, str]]:
    """Accounts 20001.. with `per_account` positions each (longs and shorts): (account, id)."""
    positions = []
    for n in range(accounts):
        account = 20001 + n
        sim.add_account(account)
        for k in range(per_account):
            quantity = str((k % 7 + 1) * 10 * (-1 if k % 5 == 0 else 1))
            positions.append((account, sim.add_position(account, f"A{n}P{k}", quantity)))
    return positions


async def until_closes_seen(sim: Simulator, count: int, limit_s: float = 20) -> None:
    deadline = time.monotonic() + limit_s
    while sim.stats.by_route["close"] < count:
        assert time.monotonic() < deadline, "the worker never got going"
        await asyncio.sleep(0.01)


async def finish(proc: asyncio.subprocess.Process, limit_s: float = 30) -> tuple[int, str]:
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def read_until_event(proc: asyncio.subprocess.Process, name: str) -> str:
    """The lines a process printed up to and including its first `name` event."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while f'"event":"{name}"' not in (lines[-1] if lines else ""):
        assert time.monotonic() < deadline, f"never saw {name}: {''.join(lines)}"
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line, f"ended before {name}: {''.join(lines)}"
        lines.append(line)
    return "".join(lines)


def event_lines(output: str, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [e for e in lines if e["event"] == name]


def stopped_cleanly(
    report: Path, sim: Simulator, keys: list[tuple[int, str]], *, why: str
) -> Counter[str]:
    """An aborted run's report: every target closed, not flat (its close still working) or
    skipped, and each close counted at the server is a sent result listing that order (nothing
    went out that the report does not show)."""
    doc = json.loads(report.read_text())
    assert why in doc["aborted"]
    outcomes = Counter(str(r["outcome"]) for r in doc["results"])
    sent = outcomes["closed"] + outcomes["not_flat"]
    assert sent + outcomes["skipped"] == len(keys)
    assert sum(len(sim.closing_orders(a, i)) for a, i in keys) == sent
    listed = {o["id"] for r in doc["results"] for o in r["orders"]}
    assert {o["id"] for a, i in keys for o in sim.closing_orders(a, i)} == listed
    return outcomes


def fill_after_the_plan(
    sim: Simulator, accounts: list[int], seconds: float = 2.0, *, new_fill_delay_s: float = 0.05
) -> None:
    """When the next run has listed its accounts (its plan): orders still working fill `seconds`
    later, and orders created from then on fill after `new_fill_delay_s`. Closes of an earlier
    run still in flight at the server keep the long delay until then, so the plan sees them
    working: the market wakes up while that run follows, never before it has looked."""

    def market_wakes_up() -> None:
        sim.fill_due_in(seconds)
        sim.config.fill_delay_s = new_fill_delay_s

    for account in accounts:
        sim.after_listing(account, market_wakes_up)


async def start_liquidator(
    sim: Simulator, state: Path, report: Path, *extra: str, base_url: str | None = None, **env: str
) -> asyncio.subprocess.Process:
    """`liquidator run --yes` as its own process on accounts 20001 and 20002 (`seed_accounts`),
    against `sim`, JSON events on stdout; `env` adds or overrides LIQUIDATOR_ settings."""
    settings = {
        "LIQUIDATOR_API_KEY": sim.config.api_key,
        "LIQUIDATOR_STATE_DIR": str(state),
        "LIQUIDATOR_LOG_FORMAT": "json",
        "LIQUIDATOR_RATE_LIMIT": "0",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "run", "--yes",
        "--base-url", base_url or sim.base_url,
        "--account", "20001", "--account", "20002",
        "--report", str(report),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **settings, **env},
    )  # fmt: skip


# Following to flat, fast: the market-condition tests (test_flat, test_attack).
FAST_FOLLOW = {"flat_timeout": 3.0, "follow_pause": 0.02, "follow_pause_max": 0.1}


# A position as the tests name it, and with the quantity it held when seeded.
Key = tuple[int, str]
Held = tuple[int, str, int]


def seed(sim: Simulator, account: int, sizes: list[int], *, prefix: str = "P") -> list[Key]:
    """`account` holding one position per size (negative: short): (account, instrument id)."""
    sim.add_account(account)
    return [
        (account, sim.add_position(account, f"{prefix}{k}", str(q))) for k, q in enumerate(sizes)
    ]


def seed_held(sim: Simulator, account: int, sizes: list[int], *, prefix: str = "S") -> list[Held]:
    """As `seed`, each with the quantity it held: (account, instrument id, quantity)."""
    return [
        (a, i, q) for (a, i), q in zip(seed(sim, account, sizes, prefix=prefix), sizes, strict=True)
    ]


async def liquidate(
    sim: Simulator,
    settings_for: Any,
    tmp_path: Path,
    specs: list[TargetSpec],
    **overrides: Any,
) -> tuple[RunResult, dict[str, Any]]:
    """One run in this process with FAST_FOLLOW (and `overrides`): its result and its report."""
    report = tmp_path / "report.json"
    result = await run(
        settings_for(sim, **{**FAST_FOLLOW, **overrides}),
        RunRequest(specs=specs, report_path=report),
        asyncio.Event(),
    )
    return result, json.loads(report.read_text())


def the_truth(
    sim: Simulator,
    doc: dict[str, Any] | None,
    keys: Sequence[Key | Held],
    *,
    fill_first: bool = False,
    one_order: bool = False,
    flat: bool = False,
    client_ids: bool = False,
    all_in: bool = True,
) -> None:
    """The one server-truth check: what "Done when" asks, counted at the server.

    Always: no position flipped. With held quantities (`seed_held`): what filled is exactly
    what was held (nothing sold twice). With the report (`doc`): each target's outcome agrees
    with the server (closed or already flat: flat; else not_flat with what is still held),
    every closing order at the server is in the report, and extra_orders is true exactly when
    more than one closing order filled. Options: `fill_first` fills what still works before
    counting; `one_order`: one closing order per position, ever, none a duplicate; `flat`:
    every position flat (and, with the report, closed); `client_ids`: each order under its
    own well-formed client id; `all_in` False: a rerun's report holds only what was still
    open when it planned."""
    if fill_first:
        sim.fill_all()
    if one_order:
        assert sim.duplicate_closes() == []
        counts = [len(sim.closing_orders(key[0], key[1])) for key in keys]
        assert counts == [1] * len(keys), counts
    by_key = {(r["account_id"], r["instrument_id"]): r for r in doc["results"]} if doc else {}
    for key in keys:
        account, iid = key[0], key[1]
        held = sim.position_quantity(account, iid)
        server_orders = {o["id"]: o for o in sim.closing_orders(account, iid)}
        if flat:
            assert held == 0, by_key.get((account, iid))
        for quantity in key[2:]:
            filled = sum(Decimal(o["filled_quantity"]) for o in server_orders.values())
            assert filled == abs(quantity), list(server_orders.values())
        if client_ids:
            ids = [o["client_order_id"] for o in server_orders.values()]
            assert len(ids) == len(set(ids)), ids
            assert all(SHAPE.match(i) for i in ids), ids
        if doc is None or (not all_in and (account, iid) not in by_key):
            continue
        result = by_key[(account, iid)]
        if flat:
            assert result["outcome"] == "closed", result
        if result["outcome"] in ("closed", "already_flat"):
            assert held == 0, f"{result['outcome']} while {held} is open: {result}"
        else:
            assert result["outcome"] == "not_flat", result
            assert result["remaining_quantity"] == str(held)
        listed = {o["id"] for o in result["orders"]}
        assert set(server_orders) <= listed, "a closing order the report does not show"
        filled_orders = sum(o["status"] == "FILLED" for o in server_orders.values())
        assert result["extra_orders"] is (filled_orders > 1)
    assert sim.flipped_positions() == []
    if doc is not None:
        assert doc["summary"]["extra_orders"] == sum(r["extra_orders"] for r in doc["results"])


def end_journal_sessions(pg_url: str) -> None:
    """The database ends every session that holds a journal lock (pg_terminate_backend)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(b"SELECT pg_terminate_backend(backend_pid) FROM journal_holders")


def journal_lock_holders(pg_url: str) -> list[int]:
    """The backend pids holding an advisory lock named in journal_holders, as the server says."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as admin:
        rows = admin.execute(
            b"SELECT h.backend_pid FROM journal_holders h JOIN pg_locks l ON l.pid = h.backend_pid"
            b" WHERE l.locktype = 'advisory' AND l.granted"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


async def until_lock_taken_by_another(pg_url: str, lost: int, limit_s: float = 20) -> float:
    """Wait until a session other than `lost` holds the journal lock; when (monotonic)."""
    deadline = time.monotonic() + limit_s
    while True:
        holders = await asyncio.to_thread(journal_lock_holders, pg_url)
        if any(pid != lost for pid in holders):
            return time.monotonic()
        assert time.monotonic() < deadline, "the standby never took the lock"
        await asyncio.sleep(0.01)
