"""The simulator's order entry: submit_orders, cancel_all_open_orders and cancel_open_order.

A client `id` is unique per account: a submission reusing one is refused with 409 and creates
nothing, so a re-sent submission never makes a second order. A batch is checked whole before
anything is booked (`SimConfig`'s batch settings, docs/simulator.md).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from worker.simulator.calendar import market_hours
from worker.simulator.config import SimConfig, SimStats
from worker.simulator.replies import error, ok
from worker.simulator.state import (
    LIVE,
    WORKING,
    Book,
    SimAccount,
    SimOrder,
    decimal_text,
    new_order_id,
)

MAX_CLIENT_ID = 64  # NewOrderRequest.id's maxLength
_SIDES = {"BUY", "SELL", "SELL_SHORT"}
_ORDER_TYPES = {"MARKET", "LIMIT", "STOP", "STOP_LIMIT", "TRAILING_STOP", "TRAILING_STOP_LIMIT"}
_TIMES_IN_FORCE = {
    "DAY", "GOOD_TILL_CANCEL", "IMMEDIATE_OR_CANCEL", "FILL_OR_KILL", "GOOD_TILL_DATE",
    "AT_THE_OPENING", "AT_THE_CLOSE",
}  # fmt: skip
# What the simulator models, by order type. GOOD_TILL_CANCEL behaves as DAY (no day ends in
# the simulator). A MARKET IOC's unfilled rest ends as a partial fill's does, a FOK that would
# fill partly fills nothing and ends CANCELED. A LIMIT IOC takes what the book holds at or
# better than its limit (without a book: all at the seeded price when marketable there) and
# its rest ends CANCELED, never resting. GOOD_TILL_DATE, AT_THE_OPENING, a LIMIT FOK and the
# stop types are refused.
_SIMULATED_TIF = {
    "MARKET": ("DAY", "GOOD_TILL_CANCEL", "IMMEDIATE_OR_CANCEL", "FILL_OR_KILL", "AT_THE_CLOSE"),
    "LIMIT": ("DAY", "GOOD_TILL_CANCEL", "IMMEDIATE_OR_CANCEL", "AT_THE_CLOSE"),
}
_SIMULATED_TEXT = "; ".join(f"{t} with {', '.join(tifs)}" for t, tifs in _SIMULATED_TIF.items())
_REQUIRED = ("side", "quantity", "order_type", "time_in_force")
_INSTRUMENT_TYPES = {"COMMON_STOCK", "INDEX", "OPTION", "CASH"}
_CANCEL_TYPES = _ORDER_TYPES | {"OTHER"}
_CANCEL_SIDES = _SIDES | {"OTHER"}

# The prefix of the worker's client ids (`worker.closing.client_ids`), spelled here so the
# simulator, which stands for the server, imports nothing of the worker.
WORKER_CLIENT_ID_PREFIX = "lq-"


@dataclass(slots=True)
class SubmittedOrder(SimOrder):
    """An order from submit_orders: it carries its own time in force."""

    time_in_force: str = "DAY"
    reject_details: list[str] | None = None  # why the engine rejected it (Order.details)

    def to_api(self) -> dict[str, Any]:
        body = SimOrder.to_api(self)
        body["time_in_force"] = self.time_in_force
        if self.reject_details is not None:
            body["details"] = self.reject_details
        return body


@dataclass(frozen=True, slots=True)
class _Checked:
    """One order of a submission that passed every check, not yet booked."""

    client_id: str | None
    iid: str
    side: str
    quantity: Decimal
    order_type: str
    tif: str
    limit_price: str | None
    fill_at: float


class OrderDesk:
    """The three order-entry handlers, over the simulator's book."""

    def __init__(self, book: Book, config: SimConfig, stats: SimStats | None = None) -> None:
        self.book = book
        self.config = config
        self.stats = stats or SimStats()
        self._drop_rng = random.Random(config.seed * 7927 + 3)
        self._cancel_rng = random.Random(config.seed * 7919 + 5)
        self._dropped: set[tuple[int, str]] = set()  # (account, client id) left out once
        # Run once, right after the account's next submission is booked (a test's hook: the
        # market moving as an order lands).
        self.after_submit: dict[int, list[Callable[[], object]]] = {}

    async def submit(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        try:
            body = await request.json()
        except ValueError as exc:
            return error(400, f"Failed to parse the request body as JSON: {exc}")
        if not isinstance(body, list) or not body:
            return _unprocessable("expected a non-empty array of orders")
        self.stats.submit_batch_sizes.append(len(body))
        limit = self.config.max_batch
        if limit and len(body) > limit:
            return error(
                self.config.max_batch_status,
                f"Too many orders in one request: {len(body)}; at most {limit} are accepted",
                details=[{"type": "BATCH_TOO_LARGE", "max_orders": limit, "orders": len(body)}],
            )
        self.book.apply_fills(account)
        checked: list[_Checked] = []
        refused: dict[int, str] = {}  # by index: the engine's refusal, booked REJECTED
        for index, item in enumerate(body):
            problem = self._check(account, index, item, checked)
            if isinstance(problem, web.Response):
                if problem.status == 409:
                    return _duplicates(account, body)
                return _naming(problem, index, item)
            refusal = self._restricted(account, problem) or self._risk(account, problem)
            if refusal is not None:
                if self.config.batch_atomic:
                    if not self.config.name_refused_order:
                        return refusal
                    return _naming(refusal, index, item)
                refused[index] = _message(refusal)
            checked.append(problem)
        now = self.config.clock()
        orders = []
        for index, item in enumerate(checked):
            if index in refused:
                orders.append(self._book_rejected(account, item, now, refused[index]))
            elif self._left_out(account, index, item):
                self.stats.orders_dropped.append(item.client_id)
            else:
                orders.append(self._book_order(account, item, now))
        body = [o.to_api() for o in orders]
        for action in self.after_submit.pop(account.id, []):
            action()
        return ok(body)

    def _left_out(self, account: SimAccount, index: int, order: _Checked) -> bool:
        """Whether the server leaves this accepted order out (partial acceptance): every
        `drop_every_nth` order of the batch, or by chance; an order left out once is left out
        again on a re-send when `drop_again`, and never otherwise."""
        key = None if order.client_id is None else (account.id, order.client_id)
        if key is not None and key in self._dropped:
            return self.config.drop_again
        nth, p = self.config.drop_every_nth, self.config.p_drop_from_batch
        left_out = (nth > 0 and (index + 1) % nth == 0) or (p > 0 and self._drop_rng.random() < p)
        if left_out and key is not None:
            self._dropped.add(key)
        return left_out

    def _restricted(self, account: SimAccount, order: _Checked) -> web.Response | None:
        """The trading engine's refusal of an instrument in `refuse_instruments`."""
        names = {name.upper() for name in self.config.refuse_instruments}
        symbol = account.positions[order.iid].symbol
        if order.iid.upper() in names or symbol.upper() in names:
            return error(422, f"Order rejected by the trading engine: {symbol} is not tradable")
        return None

    async def cancel_all(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        q = request.query
        for key, allowed in (
            ("side", _CANCEL_SIDES),
            ("type", _CANCEL_TYPES),
            ("instrument_type", _INSTRUMENT_TYPES),
        ):
            if key in q and q[key] not in allowed:
                return error(400, f"invalid {key} {q[key]!r}")
        self.book.apply_fills(account)
        orders = [o for o in account.orders if o.status in WORKING]
        wanted = {p.strip() for p in q.get("instrument_ids", "").split(",") if p.strip()}
        if wanted:
            ids = {account.resolve(name) or name for name in wanted}
            orders = [o for o in orders if o.instrument_id in ids]
        if "side" in q:
            orders = [o for o in orders if o.side == q["side"]]
        if "type" in q:
            orders = [o for o in orders if o.order_type == q["type"]]
        if "instrument_type" in q:
            orders = [o for o in orders if o.instrument_type == q["instrument_type"]]
        if not orders:
            return error(404, "No orders match the specified filters")
        return ok([self._cancel(account, o) for o in orders])

    async def cancel_one(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        wanted = request.match_info["order_id"]
        self.book.apply_fills(account)
        for order in account.orders:
            # By `id` always; by `client_order_id` while the order is open (the spec's words).
            if order.status in WORKING and wanted in (order.id, order.client_order_id):
                return ok(self._cancel(account, order))
        return error(404, f"Order {wanted} not found for account {account.id}")

    async def get_one(self, request: web.Request, account: SimAccount | None) -> web.Response:
        """`get_order_by_id`: by `id` whatever its status; by `client_order_id` only while the
        order is open (it may still fill), as the spec says."""
        assert account is not None
        wanted = request.match_info["order_id"]
        self.book.apply_fills(account)
        for order in account.orders:
            if order.id == wanted or (order.client_order_id == wanted and order.status in LIVE):
                return ok(order.to_api())
        return error(404, f"Order {wanted} not found for account {account.id}")

    # Checks, in the order a real gateway would make them: shape, then identity, then risk.

    def _check(
        self, account: SimAccount, index: int, item: Any, accepted: list[_Checked]
    ) -> _Checked | web.Response:
        where = f"[{index}]"
        if not isinstance(item, dict):
            return _unprocessable(f"{where}: expected an order object")
        for key in _REQUIRED:
            if key not in item:
                return _unprocessable(f"{where}: missing field `{key}`")
        side, order_type, tif = item["side"], item["order_type"], item["time_in_force"]
        for key, value, allowed in (
            ("side", side, _SIDES),
            ("order_type", order_type, _ORDER_TYPES),
            ("time_in_force", tif, _TIMES_IN_FORCE),
        ):
            if value not in allowed:
                return _unprocessable(f"{where}.{key}: unknown variant `{value}`")
        client_id = item.get("id")
        if client_id is not None and (
            not isinstance(client_id, str) or not 1 <= len(client_id) <= MAX_CLIENT_ID
        ):
            return error(400, f"{where}.id must be a string of 1 to {MAX_CLIENT_ID} characters")
        try:
            quantity = Decimal(item["quantity"]) if isinstance(item["quantity"], str) else None
        except InvalidOperation:
            quantity = None
        if quantity is None or not quantity.is_finite() or quantity <= 0:
            return error(400, "Order quantity must be greater than zero")
        if tif not in _SIMULATED_TIF.get(order_type, ()):
            return error(
                400,
                f"{where}: the simulator does not model {order_type} orders with time_in_force"
                f" {tif}; it takes {_SIMULATED_TEXT}",
            )
        limit = item.get("limit_price")
        if order_type == "LIMIT" and not isinstance(limit, str):
            return error(400, f"{where}.limit_price is required for LIMIT orders")
        name = item.get("instrument_id") or item.get("symbol")
        if not isinstance(name, str) or not name:
            return error(400, f"{where}: either `symbol` or `instrument_id` must be provided")
        iid = self.book.tradable(account, name)  # any instrument the simulator knows
        if iid is None:
            return error(400, f"{where}: unknown instrument {name!r}")
        fill_at = self.config.clock() + self.config.fill_delay_s
        if tif == "AT_THE_CLOSE":
            close = _regular_close(self.config)
            if close is None or self.config.clock() >= close:
                return error(400, f"{where}: the market is closed; AT_THE_CLOSE is not accepted")
            cutoff = self.config.moc_cutoff_s
            if cutoff > 0 and self.config.clock() >= close - cutoff:
                self.stats.moc_refused += 1
                return error(
                    400, f"{where}: the market-on-close cutoff has passed; AT_THE_CLOSE refused"
                )
            fill_at = close
        # Identity before risk: a re-sent order must be answered 409, whatever else changed.
        if client_id is not None and (
            any(c.client_id == client_id for c in accepted)
            or any(o.client_order_id == client_id for o in account.orders)
        ):
            return error(409, f"Duplicate order id {client_id!r} for account {account.id}")
        return _Checked(client_id, iid, side, quantity, order_type, tif, limit, fill_at)

    def _risk(self, account: SimAccount, order: _Checked) -> web.Response | None:
        position = account.positions[order.iid]
        buying = order.side == "BUY"
        if self.config.self_match_check:
            for other in account.orders_by_instrument.get(order.iid, []):
                if other.status in LIVE and (other.side == "BUY") != buying:
                    return _risk_refusal(
                        account, position.symbol, order, "SELF_MATCH",
                        "Self-Match: would cross own orders", {"price": other.limit_price or ""},
                    )  # fmt: skip
        power = self.config.buying_power
        if power is not None and buying and order.quantity * position.price > power:
            required = order.quantity * position.price
            return _risk_refusal(
                account, position.symbol, order, "BUYING_POWER",
                "Buying Power: required > available",
                {"available": f"{power:.4f}", "required_total": decimal_text(required)},
            )  # fmt: skip
        return None

    def _book_order(self, account: SimAccount, item: _Checked, now: float) -> SubmittedOrder:
        position = account.positions[item.iid]
        reduces = position.quantity != 0 and (item.side == "BUY") == (position.quantity < 0)
        # The worker's orders (its client ids) count as closes wherever they land: one booked on
        # a flat position, or past zero, is the double close a test must see. Others' orders
        # (a desk opening a position through the API) count only when they reduce one.
        workers = (item.client_id or "").startswith(WORKER_CLIENT_ID_PREFIX)
        order = SubmittedOrder(
            new_order_id(self.config),
            item.client_id or str(uuid.uuid4()),
            account.id,
            item.iid,
            position.symbol,
            position.instrument_type,
            item.side,
            item.quantity,
            item.order_type,
            "NEW" if item.tif == "AT_THE_CLOSE" else "PENDING_NEW",
            now,
            now,
            # The worker's LIMIT orders (CLOSE_STYLE=protected) are closes too.
            is_close=workers or (item.order_type == "MARKET" and reduces),
            limit_price=item.limit_price,
            # Market conditions (partial fills, rejects) as for close_position's orders.
            ends=_ends(self.book.market_draw(), item.tif) if item.order_type == "MARKET" else None,
            time_in_force=item.tif,
        )
        # A limit order meets the market only where there is a book; elsewhere it rests.
        resting = (
            item.order_type == "LIMIT"
            and item.tif != "IMMEDIATE_OR_CANCEL"  # an IOC meets the market once, and ends
            and not self.book.prices_limits(position.symbol, item.tif)
        )
        self.book.add_order(account, order, None if resting else item.fill_at)
        return order

    def _book_rejected(
        self, account: SimAccount, item: _Checked, now: float, reason: str
    ) -> SubmittedOrder:
        """An order the engine refused in a batch booked whole (`batch_atomic=False`): it
        exists, REJECTED with the engine's message, and never fills."""
        position = account.positions[item.iid]
        order = SubmittedOrder(
            new_order_id(self.config),
            item.client_id or str(uuid.uuid4()),
            account.id,
            item.iid,
            position.symbol,
            position.instrument_type,
            item.side,
            item.quantity,
            item.order_type,
            "REJECTED",
            now,
            now,
            is_close=False,
            limit_price=item.limit_price,
            time_in_force=item.tif,
            reject_details=[reason],
        )
        self.book.add_order(account, order, None)
        return order

    def _cancel(self, account: SimAccount, order: SimOrder) -> dict[str, Any]:
        """Cancel now, or after `cancel_linger_s`; the reply shows PENDING_CANCEL (the spec's).
        A lost cancel (`p_cancel_lost`, `uncancellable`) is answered the same and never
        applied: the order works on as it was."""
        lost = order.symbol.upper() in {s.upper() for s in self.config.uncancellable} or (
            self.config.p_cancel_lost > 0 and self._cancel_rng.random() < self.config.p_cancel_lost
        )
        if lost:
            self.stats.cancels_lost += 1
            body = order.to_api()
            body["status"] = "PENDING_CANCEL"
            return body
        if self.config.cancel_linger_s > 0:
            self.book.cancel_later(account, order)
            return order.to_api()
        order.status, order.updated_at = "CANCELED", self.config.clock()
        body = order.to_api()
        body["status"] = "PENDING_CANCEL"
        return body


def _ends(drawn: str | None, tif: str) -> str | None:
    """How the market treats the order: a fill-or-kill that would fill partly is killed."""
    return "kill" if drawn == "partial" and tif == "FILL_OR_KILL" else drawn


def _regular_close(config: SimConfig) -> float | None:
    """Today's regular close by the simulator's calendar, as epoch seconds; None on a holiday."""
    regular = market_hours(config, None)["today_sessions"].get("regular")
    return datetime.fromisoformat(regular["close"]).timestamp() if regular else None


def _message(refusal: web.Response) -> str:
    """A refusal's message with its details' descriptions: what a REJECTED order carries."""
    assert isinstance(refusal.body, bytes)
    problem = json.loads(refusal.body)["error"]
    described = [d["description"] for d in problem.get("details", []) if "description" in d]
    return "; ".join([problem["message"], *described])


def _naming(refusal: web.Response, index: int, item: Any) -> web.Response:
    """The refusal of a batch, its details naming the order it is about (index in the batch,
    client id), so a client can tell which order to take out of the batch."""
    assert isinstance(refusal.body, bytes)
    problem = json.loads(refusal.body)["error"]
    client_id = item.get("id") if isinstance(item, dict) else None
    named = {
        "type": "BATCH_ORDER",
        "index": index,
        "client_order_id": client_id if isinstance(client_id, str) else None,
    }
    details = [*problem.get("details", []), named]
    return error(refusal.status, problem["message"], details=details)


def _duplicates(account: SimAccount, body: list[Any]) -> web.Response:
    """409 naming every order of the batch whose client id the account holds already or the
    batch names twice (after the first), by index and client id."""
    held = {o.client_order_id for o in account.orders}
    seen: set[str] = set()
    named: list[dict[str, Any]] = []
    for index, item in enumerate(body):
        client_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(client_id, str):
            continue
        if client_id in held or client_id in seen:
            named.append({"type": "DUPLICATE_ID", "index": index, "client_order_id": client_id})
        seen.add(client_id)
    ids = list(dict.fromkeys(d["client_order_id"] for d in named))
    which = f"id {ids[0]!r}" if len(ids) == 1 else f"ids {', '.join(map(repr, ids))}"
    return error(409, f"Duplicate order {which} for account {account.id}", details=named)


def _unprocessable(what: str) -> web.Response:
    return error(422, f"Failed to deserialize the JSON body into the target type: {what}")


def _risk_refusal(
    account: SimAccount,
    symbol: str,
    order: _Checked,
    reason: str,
    description: str,
    extra: dict[str, str],
) -> web.Response:
    """400 with details, shaped as the spec's NoBuyingPower and RiskCheckSelfMatch examples."""
    order_id = str(uuid.uuid4())
    metadata = {
        "account_id": str(account.id),
        "order_id": order_id,
        "side": "Buy" if order.side == "BUY" else "Sell",
        "symbol": symbol,
        **extra,
    }
    details: list[dict[str, Any]] = [
        {"description": description, "subject": f"order:{order_id}", "type": reason},
        {"domain": "com.clearstreet.oems.risk", "metadata": metadata, "reason": reason},
    ]
    return error(400, "Risk check failed", details=details)
