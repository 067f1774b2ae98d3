"""The simulator's HTTP face: the API's routes, envelope, auth, faults, and counts at the server.

Every request is counted once it has arrived whole, before anything else happens, so tests can
prove the worker's bounds from what the server saw. Faults are drawn from a seeded RNG.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from worker.simulator.accounts import AccountDesk
from worker.simulator.calendar import market_hours
from worker.simulator.config import Faults, RecordedRequest, SimConfig, SimStats
from worker.simulator.contracts import ContractDesk
from worker.simulator.executions import ExecutionDesk
from worker.simulator.orders import OrderDesk
from worker.simulator.replace import ReplaceDesk
from worker.simulator.replies import (
    Dropped,
    drop,
    envelope_for_unrouted,
    error,
    ok,
    quiet_when_the_client_goes,
)
from worker.simulator.snapshots import SnapshotDesk
from worker.simulator.state import Book, SimAccount, SimOrder, api_time

_STATUSES = {
    "PENDING_NEW", "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED",
    "PENDING_CANCEL", "PENDING_REPLACE", "REPLACED", "DONE_FOR_DAY", "STOPPED", "SUSPENDED",
    "CALCULATED", "OTHER",
}  # fmt: skip

Handler = Callable[[web.Request, SimAccount | None], Awaitable[web.Response]]


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.book = Book(self.config)
        self.stats = SimStats()
        self.requests: list[RecordedRequest] = []
        self.base_url = ""
        self._rng = random.Random(self.config.seed)
        self._rng_seed = self.config.seed
        self._window: deque[float] = deque()
        self._shutting_down = asyncio.Event()
        # The gateway's holds (`hold_until_resent`): which requests of a route it holds, and
        # those held now by method and path, each applied by the next request there.
        self._holds: dict[str, Callable[[str], bool]] = {}
        self._held: dict[str, _Held] = {}
        self.held_applied: list[str] = []  # the paths of held requests applied, in order
        self._after_listing: dict[int, list[Callable[[], object]]] = {}
        # Seeding goes straight to the book.
        self.add_account = self.book.add_account
        self.add_position = self.book.add_position
        self.add_resting_order = self.book.add_resting_order
        self.seed_book = self.book.seed_book
        self.desk = OrderDesk(self.book, self.config, self.stats)  # submit_orders and the cancels
        self.account_desk = AccountDesk(self.book, self.config, self._list_page)
        self.execution_desk = ExecutionDesk(self.book, self._list_page)
        self.market = self.book.market  # quotes and books: move, halt, resume, book
        self.replace_desk = ReplaceDesk(self.book, self.config)
        self.snapshot_desk = SnapshotDesk(self.book)
        self.contract_desk = ContractDesk(self.book, self._list_page)

    # Introspection: counts observed at the server.

    def instrument_id(self, account_id: int, symbol: str) -> str:
        iid = self.book.accounts[account_id].resolve(symbol)
        assert iid is not None, f"{symbol} is not held by {account_id}"
        return iid

    def position_quantity(self, account_id: int, instrument: str) -> Decimal:
        account = self.book.accounts[account_id]
        self.book.apply_fills(account)
        iid = account.resolve(instrument)
        position = account.positions.get(iid) if iid else None
        return position.quantity if position else Decimal(0)

    def closing_orders(self, account_id: int, instrument: str) -> list[dict[str, Any]]:
        account = self.book.accounts[account_id]
        self.book.apply_fills(account)
        iid = account.resolve(instrument) or instrument
        return [o.to_api() for o in account.orders_by_instrument.get(iid, []) if o.is_close]

    def orders_of(self, account_id: int) -> list[dict[str, Any]]:
        account = self.book.accounts[account_id]
        self.book.apply_fills(account)
        return [o.to_api() for o in account.orders]

    def cancel_order(self, account_id: int, order_id: str) -> None:
        """As if a trader cancelled it at the desk."""
        for order in self.book.accounts[account_id].orders:
            if order.id == order_id:
                order.status = "CANCELED"

    def duplicate_closes(self) -> list[tuple[int, str]]:
        return [
            (account.id, iid)
            for account in self.book.accounts.values()
            for iid, orders in account.orders_by_instrument.items()
            if sum(o.is_close for o in orders) > 1
        ]

    def most_working_closes(self) -> int:
        """The most closing orders that could still fill at once on any one position, as
        counted when each was booked (0: no closing order yet)."""
        return max(self.book.most_live_closes.values(), default=0)

    def flipped_positions(self) -> list[tuple[int, str]]:
        flipped = []
        for account in self.book.accounts.values():
            self.book.apply_fills(account)
            for p in account.positions.values():
                if p.quantity != 0 and (1 if p.quantity > 0 else -1) != p.seeded_sign:
                    flipped.append((account.id, p.instrument_id))
        return flipped

    def crossed_zero(self) -> list[tuple[int, str]]:
        """Positions a fill ever took past zero, even if a later one brought them back."""
        crossed: list[tuple[int, str]] = []
        for account in self.book.accounts.values():
            self.book.apply_fills(account)
            crossed.extend((account.id, p.instrument_id) for p in account.positions.values()
                           if p.crossed_zero)  # fmt: skip
        return crossed

    def fill_all(self) -> None:
        self.book.fill_all()

    def fill_due_in(self, seconds: float) -> None:
        """Every order still waiting to fill now fills `seconds` from now (the market woke up)."""
        self.book.fill_due_in(seconds)

    def after_listing(self, account_id: int, action: Callable[[], object]) -> None:
        """Run `action` once, right after the account's next whole-account positions listing
        (the plan's): another participant acting between the plan and the close."""
        self._after_listing.setdefault(account_id, []).append(action)

    def hold_until_resent(self, route: str, only: Callable[[str], bool]) -> None:
        """A gateway that holds the requests of `route` whose path `only` answers true for,
        with no reply, until the next request on the same method and path arrives: it applies
        the held one, then that one (the client gave up on the first and sent it again). A
        re-send of a held close thus lands while the held close's order still works, however
        late the client looked; no draw and no time decide it. Counted as `apply_late`."""
        self._holds[route] = only

    def after_submit(self, account_id: int, action: Callable[[], object]) -> None:
        """Run `action` once, right after the account's next order submission is booked (its
        reply already made): the market moving as an order lands."""
        self.desk.after_submit.setdefault(account_id, []).append(action)

    def add_participant_order(self, account_id: int, instrument: str, side: str, quantity: str,
                              **kw: Any) -> str:  # fmt: skip
        return self.book.add_participant_order(account_id, instrument, side, quantity, **kw)

    def filled_closes(self, account_id: int, instrument: str) -> list[dict[str, Any]]:
        return [
            o for o in self.closing_orders(account_id, instrument)
            if Decimal(o["filled_quantity"]) != 0
        ]  # fmt: skip

    # The HTTP app.

    def app(self) -> web.Application:
        app = web.Application(middlewares=[quiet_when_the_client_goes, envelope_for_unrouted])
        add = app.router
        accounts = "/v1/accounts/{account_id}"
        add.add_get("/v1/clock", self._route("clock", self._clock, account=False))
        add.add_get(
            "/v1/calendars/market-hours",
            self._route("market_hours", self._market_hours, account=False),
        )
        add.add_get(
            "/v1/instruments/options/contracts",
            self._route("contracts", self.contract_desk.contracts, account=False),
        )
        add.add_get(
            "/v1/instruments/{instrument_id}",
            self._route("instrument", self._instrument, account=False),
        )
        add.add_get(accounts, self._route("account", self.account_desk.account))
        add.add_get(f"{accounts}/positions", self._route("positions", self._positions))
        add.add_get(f"{accounts}/orders", self._route("orders", self._orders))
        add.add_delete(f"{accounts}/positions", self._route("close", self._close_all))
        add.add_delete(f"{accounts}/positions/{{instrument_id}}", self._route("close", self._close))
        add.add_post(f"{accounts}/orders", self._route("submit", self.desk.submit))
        add.add_delete(f"{accounts}/orders", self._route("cancel", self.desk.cancel_all))
        add.add_delete(
            f"{accounts}/orders/{{order_id}}", self._route("cancel", self.desk.cancel_one)
        )

        self._add_rehearsal_routes(add)
        self._add_price_routes(add)

        async def shutting_down(_: web.Application) -> None:
            self._shutting_down.set()  # ends hanging replies, so shutdown is prompt

        app.on_shutdown.append(shutting_down)
        return app

    def _add_rehearsal_routes(self, add: web.UrlDispatcher) -> None:
        """The reads the official SDK offers beside the worker's own: the account list,
        balances, executions, one order by id or client id."""
        accounts = "/v1/accounts/{account_id}"
        add.add_get(
            "/v1/accounts", self._route("accounts", self.account_desk.list_accounts, account=False)
        )
        add.add_get(f"{accounts}/balances", self._route("balances", self.account_desk.balances))
        add.add_get(
            f"{accounts}/executions",
            self._route("executions", self.execution_desk.list_executions),
        )
        add.add_get(f"{accounts}/orders/{{order_id}}", self._route("order", self.desk.get_one))

    def _add_price_routes(self, add: web.UrlDispatcher) -> None:
        """Quotes and re-pricing: get_snapshots and replace_order."""
        add.add_get(
            "/v1/market-data/snapshot",
            self._route("snapshot", self.snapshot_desk.snapshots, account=False),
        )
        add.add_patch(
            "/v1/accounts/{account_id}/orders/{order_id}",
            self._route("replace", self.replace_desk.replace),
        )

    def _list_page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        return self._page(request, items, positions_bugs=False)

    def _route(
        self, route: str, handler: Handler, *, account: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            stats = self.stats
            stats.requests += 1
            stats.by_route[route] += 1
            stats.arrivals.append(time.monotonic())
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            record = None
            if self.config.record:
                headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
                record = RecordedRequest(
                    request.method,
                    request.path,
                    route,
                    dict(request.query),
                    await request.read(),
                    headers,
                )
                self.requests.append(record)
            try:
                response = await self._serve(route, request, handler, account)
            finally:
                stats.in_flight -= 1
            stats.status_counts[0 if isinstance(response, Dropped) else response.status] += 1
            if record is not None:
                record.response_status = response.status
                record.response_body = response.body if isinstance(response.body, bytes) else b""
                record.response_content_type = response.content_type
            return response

        return endpoint

    async def _serve(
        self, route: str, request: web.Request, handler: Handler, needs_account: bool
    ) -> web.Response:
        faults = self.config.faults.get(route)
        if faults is not None and faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        if request.headers.get("Authorization") != f"Bearer {self.config.api_key}":
            return error(401, "Missing or invalid credentials")
        wait = self._over_rate_limit()
        if wait is not None:
            self.stats.faults_injected["rate_limited"] += 1
            return error(429, "Rate limit exceeded", retry_after=wait)
        account = None
        if needs_account:
            raw = request.match_info["account_id"]
            if not raw.isdigit():
                return error(400, f"invalid account_id {raw!r}")
            account_id = int(raw)
            if account_id in self.config.forbidden_accounts:
                return error(403, "The caller does not have permission to execute the operation")
            account = self.book.accounts.get(account_id)
            if account is None:
                return error(404, "Some requested entity was not found")
        key = f"{request.method} {request.path}"
        held = self._held.pop(key, None)
        if held is not None:  # the re-send of a held request: the held one is applied first,
            await request.read()  # in this task, with nothing awaited between the two
            await held.apply()
        else:
            only = self._holds.get(route)
            if only is not None and only(request.path):
                return await self._hold(key, request, handler, account)
        fault = faults.draw(self._roll()) if faults is not None else None
        if fault is None or faults is None:
            return await handler(request, account)
        self.stats.faults_injected[fault] += 1
        return await self._faulty(fault, faults, request, handler, account)

    async def _hold(
        self, key: str, request: web.Request, handler: Handler, account: SimAccount | None
    ) -> web.Response:
        """`hold_until_resent`: applied by the next request on `key` as it arrives (or when
        the simulator shuts down), before that one is; `held_applied` names it then. One whose
        body never arrives (the client gave up while sending it) is never applied."""
        self.stats.faults_injected["apply_late"] += 1
        # Held before anything is awaited, so no request on `key` can pass it unheld.
        held = _Held(request, handler, account)
        self._held[key] = held
        try:
            await request.read()  # the gateway holds the whole request, body included
            shutdown = asyncio.ensure_future(self._shutting_down.wait())
            waits: set[asyncio.Future[Any]] = {shutdown, held.done}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                shutdown.cancel()
            await held.apply()  # (shutting down; else the re-send applied it: nothing to do)
            response = await held.done
            self.held_applied.append(request.path)
            return response  # the client gave up long ago
        finally:
            if self._held.get(key) is held:
                del self._held[key]

    async def _faulty(
        self,
        fault: str,
        faults: Faults,
        request: web.Request,
        handler: Handler,
        account: SimAccount | None,
    ) -> web.Response:
        if fault == "429":
            return error(429, "Rate limit exceeded", retry_after=faults.retry_after_s)
        if fault == "503":
            return error(503, "Service temporarily unavailable", retry_after=faults.retry_after_s)
        if fault == "drop_before":
            return drop(request)
        if fault == "502_html":
            if self._roll() < 0.5:
                await handler(request, account)
            return web.Response(
                status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
            )  # fmt: skip
        if fault == "apply_late":
            await request.read()  # the gateway holds the whole request, body included
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._shutting_down.wait(), faults.apply_late_s)
            return await handler(request, account)  # the client gave up long ago
        response = await handler(request, account)  # the "after" faults: applied first
        if fault == "drop_after":
            return drop(request)
        if fault == "hang_after":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._shutting_down.wait(), faults.hang_s)
            return response
        if fault == "500_after":
            return error(500, "Internal server error")
        return web.Response(status=200, text="<html>ok</html>", content_type="text/html")

    def _roll(self) -> float:
        if self._rng_seed != self.config.seed:  # a test changed the seed after construction
            self._rng, self._rng_seed = random.Random(self.config.seed), self.config.seed
        return self._rng.random()

    def _over_rate_limit(self) -> float | None:
        """Seconds until the one-second window has room, when it has none."""
        limit = self.config.rate_limit
        if limit <= 0:
            return None
        now = time.monotonic()
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            return max(0.001, window[0] + 1.0 - now)
        window.append(now)
        return None

    # Handlers.

    async def _clock(self, request: web.Request, _: SimAccount | None) -> web.Response:
        return ok({"clock": api_time(self.config.clock())})

    async def _positions(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        positions = self.book.listed_positions(account)
        wanted = {w.lower() for w in _csv(request.query.get("instrument_ids"))}
        if wanted:  # UUIDs are case-insensitive
            positions = [p for p in positions if p["instrument_id"].lower() in wanted]
        response = self._page(request, positions, positions_bugs=True)
        if not wanted:
            for action in self._after_listing.pop(account.id, []):
                action()
        return response

    async def _instrument(self, request: web.Request, _: SimAccount | None) -> web.Response:
        found = self.book.instrument(request.match_info["instrument_id"])
        if found is None:
            return error(404, "Instrument not found")
        return ok(found)

    async def _orders(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        self.book.apply_fills(account)
        q = request.query
        orders: list[SimOrder] = self.book.listed_orders(account, account.orders)
        instruments = _csv(q.get("instrument_ids"))
        if instruments:
            ids = {account.resolve(i) or i for i in instruments}
            orders = [o for rid in ids for o in account.orders_by_instrument.get(rid, [])]
            orders = self.book.listed_orders(account, orders)
            orders.sort(key=lambda o: o.created_at)
        statuses = _csv(q.get("status"))
        if statuses - _STATUSES:
            return error(400, f"unknown status {sorted(statuses - _STATUSES)[0]!r}")
        if statuses:
            orders = [o for o in orders if o.status in statuses]
        order_ids = _csv(q.get("order_ids"))
        if order_ids:
            orders = [o for o in orders if o.id in order_ids or o.client_order_id in order_ids]
        if q.get("symbol"):
            orders = [o for o in orders if o.symbol == q["symbol"]]
        try:
            start = _epoch(q["from"]) if q.get("from") else None
            end = _epoch(q["to"]) if q.get("to") else None
        except ValueError as exc:
            return error(400, f"invalid date-time: {exc}")
        if start is not None:
            orders = [o for o in orders if o.created_at >= start]
        if end is not None:
            orders = [o for o in orders if o.created_at <= end]
        return self._page(request, [o.to_api() for o in orders], positions_bugs=False)

    async def _close(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        cancel = await _cancel_orders(request)
        if isinstance(cancel, web.Response):
            return cancel
        instrument = request.match_info["instrument_id"]
        if self.config.refuse_duplicate_closes and self.book.pending_close(account, instrument):
            return error(409, "A close of this position is already pending")
        order = self.book.close(account, instrument, cancel)
        if order is None:
            return error(404, "Position not found")
        return ok([order.to_api()])

    async def _close_all(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        cancel = await _cancel_orders(request)
        if isinstance(cancel, web.Response):
            return cancel
        orders = []
        for position in self.book.open_positions(account):
            order = self.book.close(account, position.instrument_id, cancel)
            if order is not None:
                orders.append(order.to_api())
        return ok(orders)

    async def _market_hours(self, request: web.Request, _: SimAccount | None) -> web.Response:
        raw_date = request.query.get("date")
        try:
            day = datetime.strptime(raw_date, "%Y-%m-%d").date() if raw_date else None
        except ValueError:
            return error(400, f"invalid date {raw_date!r}")
        return ok([market_hours(self.config, day)])

    def _page(
        self, request: web.Request, items: list[dict[str, Any]], *, positions_bugs: bool
    ) -> web.Response:
        q = request.query
        if q.get("page_token"):
            try:
                state = json.loads(base64.urlsafe_b64decode(q["page_token"]))
                offset, size = int(state["o"]), int(state["n"])
            except (ValueError, KeyError, TypeError):
                return error(400, "invalid page_token")
        else:
            raw = q.get("page_size", "1000")
            if not raw.isdigit() or not 1 <= int(raw) <= 1000:
                return error(400, "page_size must be between 1 and 1000")
            offset, size = 0, int(raw)
        total = len(items)
        page = items[offset : offset + size] if total else []
        following = offset + size
        if positions_bugs and self.config.page_never_ends:
            following = following % max(total, 1)  # wraps around forever
            has_more = True
        else:
            has_more = following < total
        token = _token(following, size) if has_more else None
        if positions_bugs and self.config.page_repeat_token:
            token = _token(0, size)
        metadata = {
            "next_page_token": token,
            "page_number": offset // size + 1,
            "total_items": total,
            "total_pages": max(1, -(-total // size)),
        }
        return ok(page, **metadata)


class _Held:
    """A request the gateway holds (`Simulator.hold_until_resent`), applied once."""

    def __init__(self, request: web.Request, handler: Handler, account: SimAccount | None) -> None:
        self._request, self._handler, self._account = request, handler, account
        self._started = False
        self.done: asyncio.Future[web.Response] = asyncio.get_running_loop().create_future()

    async def apply(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            self.done.set_result(await self._handler(self._request, self._account))
        except Exception as exc:  # the held request's own task raises it
            self.done.set_exception(exc)


async def _cancel_orders(request: web.Request) -> bool | web.Response:
    raw = await request.read()
    if not raw.strip():
        return False
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return error(400, f"Failed to parse the request body as JSON: {exc}")
    if body is None:
        return False
    if not isinstance(body, dict) or not isinstance(body.get("cancel_orders", False), bool | None):
        return error(400, "cancel_orders must be a boolean or null")
    return bool(body.get("cancel_orders"))


def _csv(raw: str | None) -> set[str]:
    return {part.strip() for part in raw.split(",") if part.strip()} if raw else set()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _token(offset: int, size: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "n": size}).encode()).decode()


async def serve(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve on loopback (port 0: a free one); return the runner and the bound port."""
    runner = web.AppRunner(sim.app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    sim.base_url = f"http://{host}:{bound}"
    return runner, bound
