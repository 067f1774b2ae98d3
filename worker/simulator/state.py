"""The simulator's book: accounts, positions, orders, and fills, in the API's shapes.

Market orders fill `fill_delay_s` after creation, applied lazily whenever an account is touched,
so many working orders cost no timers. A duplicate close that fills flips the position: that is
what the tests look for.
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from worker.simulator.config import SimConfig
from worker.simulator.market import Market

_NAMESPACE = uuid.UUID("6f1c9a52-2f0e-4a8e-9d59-8e7f1b1a0c11")
_TICKERS = [
    "AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "SPY", "QQQ", "JPM",
    "V", "XOM", "UNH", "HD", "KO", "PEP", "COST", "AMD", "NFLX", "INTC",
]  # fmt: skip
WORKING = {"PENDING_NEW", "NEW", "PARTIALLY_FILLED"}
LIVE = {*WORKING, "PENDING_CANCEL"}  # may still fill: a cancel asked for, not yet done


def instrument_uuid(symbol: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, symbol.upper()))


def new_order_id(config: SimConfig) -> str:
    """An order id the engine assigns: a UUID, ending with `config.order_ids_ending`."""
    order_id = str(uuid.uuid4())
    end = config.order_ids_ending
    return f"{order_id[: -len(end)]}{end}" if end else order_id


def api_time(epoch: float) -> str:
    """The API's UTC timestamps: nanosecond precision, 'Z'."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")


def average_text(value: Decimal) -> str:
    """An average fill price as the reply shows it: cents, or as many places as it needs up
    to six (fills across levels), so quantity × average is what the executions paid."""
    exact = value.quantize(Decimal("0.000001"))
    return f"{exact:.2f}" if exact == exact.quantize(Decimal("0.01")) else f"{exact.normalize():f}"


def listing_price(seed: int, symbol: str) -> Decimal:
    """A seeded price for an instrument no account held: stable per seed and symbol."""
    rng = random.Random(f"{seed}:{symbol.upper()}")
    return Decimal(f"{rng.uniform(10, 600):.2f}")


def contract_size(instrument_type: str) -> int:
    """Units per quantity unless seeded otherwise: a standard option contract is 100 shares."""
    return 100 if instrument_type == "OPTION" else 1


@dataclass(slots=True)
class SimExecution:
    """One fill of an order, as `get_executions` reports it."""

    id: str
    order_id: str
    instrument_id: str
    symbol: str
    instrument_type: str
    side: str
    quantity: Decimal
    price: Decimal
    transaction_time: float
    seq: int  # orders fills made in the same instant
    underlying: str | None = None
    multiplier: Decimal = Decimal(1)  # the position's contract multiplier

    def cash_flow(self) -> Decimal:
        """What the fill did to the account's cash: a sale adds, a purchase takes away."""
        notional = self.quantity * self.price * self.multiplier
        return -notional if self.side == "BUY" else notional

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order_id": self.order_id,
            "instrument_id": self.instrument_id,
            "symbol": self.symbol,
            "side": self.side,
            "quantity": decimal_text(self.quantity),
            "price": f"{self.price:.2f}",
            "transaction_time": api_time(self.transaction_time),
            "underlying_instrument_id": self.underlying,
            "venue": "XNMS",
        }


@dataclass(slots=True)
class SimPosition:
    account_id: int
    instrument_id: str
    symbol: str
    instrument_type: str
    quantity: Decimal
    price: Decimal
    seeded_sign: int
    underlying: str | None = None
    crossed_zero: bool = False  # a fill ever took it past zero, whatever it ended at
    # Units per quantity: an option's contract multiplier (`get_option_contracts` serves it;
    # the Position itself carries none, as in the spec), 1 for a share.
    multiplier: Decimal = Decimal(1)

    def value(self, quantity: Decimal | None = None) -> Decimal:
        """What it is worth at its price, signed (a short is minus); `quantity`: as it stood
        earlier (a lag)."""
        held = self.quantity if quantity is None else quantity
        return held * self.price * self.multiplier

    def to_api(self, quantity: Decimal | None = None) -> dict[str, Any]:
        """As the positions listing shows it; `quantity`: as it stood earlier (a lag)."""
        held = self.quantity if quantity is None else quantity
        value = self.value(held)
        body: dict[str, Any] = {
            "account_id": self.account_id,
            "instrument_id": self.instrument_id,
            "symbol": self.symbol,
            "instrument_type": self.instrument_type,
            "quantity": decimal_text(held),
            "available_quantity": decimal_text(abs(held)),
            "market_value": f"{value:.2f}",
            "position_type": "LONG" if held > 0 else "SHORT",
            "avg_price": f"{self.price:.2f}",
            "instrument_price": f"{self.price:.2f}",
            "closing_price": f"{self.price:.2f}",
            "closing_price_date": "2025-10-31",
            "cost_basis": f"{value:.2f}",
            "unrealized_pnl": "0.00",
            "daily_realized_pnl": "0.00",
        }
        if self.underlying is not None:
            body["underlying_instrument_id"] = self.underlying
        return body


@dataclass(slots=True)
class SimOrder:
    id: str
    client_order_id: str
    account_id: int
    instrument_id: str
    symbol: str
    instrument_type: str
    side: str
    quantity: Decimal
    order_type: str
    status: str
    created_at: float
    updated_at: float
    is_close: bool
    limit_price: str | None = None
    filled_quantity: Decimal = Decimal(0)
    fill_price: Decimal | None = None
    ends: str | None = None  # "partial", "reject" or "kill": how the market treats it when due
    # When the simulator booked it, by its clock (created_at may be stamped otherwise, or in the
    # past for an order placed before the run): what the orders listing's lag counts from.
    entered_at: float = 0.0

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "account_id": self.account_id,
            "instrument_id": self.instrument_id,
            "symbol": self.symbol,
            "instrument_type": self.instrument_type,
            "venue": "XNMS",
            "side": self.side,
            "quantity": decimal_text(self.quantity),
            "order_type": self.order_type,
            "time_in_force": "DAY",
            "status": self.status,
            "filled_quantity": decimal_text(self.filled_quantity),
            "leaves_quantity": decimal_text(
                Decimal(0) if self.status not in WORKING else self.quantity - self.filled_quantity
            ),
            "average_fill_price": None
            if self.fill_price is None
            else average_text(self.fill_price),
            "limit_price": self.limit_price,
            "stop_price": None,
            "created_at": api_time(self.created_at),
            "updated_at": api_time(self.updated_at),
        }


@dataclass
class SimAccount:
    id: int
    positions: dict[str, SimPosition] = field(default_factory=dict)  # by instrument_id
    by_symbol: dict[str, str] = field(default_factory=dict)  # symbol -> instrument_id
    orders: list[SimOrder] = field(default_factory=list)
    orders_by_instrument: dict[str, list[SimOrder]] = field(default_factory=dict)
    due_fills: list[tuple[float, int, SimOrder]] = field(default_factory=list)  # a heap
    due_cancels: list[tuple[float, int, SimOrder]] = field(default_factory=list)  # a heap
    executions: list[SimExecution] = field(default_factory=list)  # oldest first

    def resolve(self, name: str) -> str | None:
        """A symbol or UUID to the instrument_id this account knows it by."""
        if name in self.positions:
            return name
        for iid in self.positions:  # UUIDs are case-insensitive
            if iid.lower() == name.lower():
                return iid
        return self.by_symbol.get(name.upper()) or self.by_symbol.get(name)


def _instrument(
    instrument_id: str, symbol: str, instrument_type: str = "COMMON_STOCK"
) -> dict[str, Any]:
    """The spec's Instrument, with its required fields."""
    return {
        "id": instrument_id,
        "symbol": symbol,
        "instrument_type": instrument_type,
        "venue": "XNMS",
        "country_of_issue": "US",
        "currency": "USD",
        "is_marginable": True,
        "easy_to_borrow": True,
        "is_short_prohibited": False,
        "is_threshold_security": False,
        "is_liquidation_only": False,
        "is_tradable": True,
        "is_fractionable": False,
        "is_ptp": False,
    }


class Book:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.accounts: dict[int, SimAccount] = {}
        self._close_count = itertools.count(1)
        self._fill_seq = itertools.count()
        self._market = random.Random(config.seed * 7919 + 1)
        self.market = Market(
            lambda: self.config.market,
            lambda: self.config.clock(),
            lambda: self.config.seed,
            self._seeded_price,
        )
        # Orders waiting on the market, by account: limit orders not yet marketable, and
        # market orders on a halted instrument. Looked at whenever the account is touched.
        self._waiting: dict[int, dict[str, SimOrder]] = {}
        # Per position (account, instrument_id), the most closing orders that could still
        # fill (working or PENDING_CANCEL) at once, counted as each closing order is booked:
        # the invariant "never two working orders on one position".
        self.most_live_closes: dict[tuple[int, str], int] = {}

    # Seeding.

    def add_account(self, account_id: int) -> SimAccount:
        return self.accounts.setdefault(account_id, SimAccount(account_id))

    def add_position(
        self,
        account_id: int,
        symbol: str,
        quantity: str | Decimal,
        *,
        instrument_type: str = "COMMON_STOCK",
        price: str = "100.00",
        underlying: str | None = None,
        instrument_id: str | None = None,
        multiplier: str | None = None,
    ) -> str:
        """`underlying`: an option's underlying symbol; `multiplier`: its contract multiplier
        (default 100 for an OPTION, 1 otherwise), served by `get_option_contracts`."""
        account = self.add_account(account_id)
        iid = instrument_id or instrument_uuid(symbol)
        qty = Decimal(quantity)
        account.positions[iid] = SimPosition(
            account_id,
            iid,
            symbol,
            instrument_type,
            qty,
            Decimal(price),
            1 if qty > 0 else -1,
            instrument_uuid(underlying) if underlying else None,
            multiplier=Decimal(multiplier or contract_size(instrument_type)),
        )
        account.by_symbol[symbol.upper()] = iid
        return iid

    def add_resting_order(
        self,
        account_id: int,
        symbol: str,
        side: str,
        quantity: str,
        limit_price: str,
        *,
        created_ago_s: float = 0.0,
    ) -> str:
        """A limit order resting on the book, placed `created_ago_s` before now."""
        account = self.add_account(account_id)
        iid = account.resolve(symbol) or instrument_uuid(symbol)
        now = self.config.clock() - created_ago_s
        order = SimOrder(
            new_order_id(self.config),
            f"resting-{uuid.uuid4().hex[:8]}",
            account_id,
            iid,
            symbol,
            "COMMON_STOCK",
            side,
            Decimal(quantity),
            "LIMIT",
            "NEW",
            now,
            now,
            is_close=False,
            limit_price=limit_price,
        )
        self._remember(account, order)
        return order.id

    def add_participant_order(
        self,
        account_id: int,
        instrument: str,
        side: str,
        quantity: str,
        *,
        order_type: str = "MARKET",
        limit_price: str | None = None,
        fill_after_s: float | None = None,
        created_ago_s: float = 0.0,
    ) -> str:
        """Another participant's order on the account's instrument (a trader at the desk).

        It fills after `fill_after_s` from now (default: the fill delay for a market order; a
        limit order without one rests), moving the position: reducing, flipping or growing it.
        `created_ago_s`: placed that long before now (created_at in the past), e.g. resting
        since before the run began.
        """
        account = self.add_account(account_id)
        iid = account.resolve(instrument) or instrument_uuid(instrument)
        position = account.positions[iid]
        now = self.config.clock()
        created = now - created_ago_s
        order = SimOrder(
            new_order_id(self.config),
            f"desk-{uuid.uuid4().hex[:8]}",
            account_id,
            iid,
            position.symbol,
            position.instrument_type,
            side,
            Decimal(quantity),
            order_type,
            "NEW",
            created,
            created,
            is_close=False,
            limit_price=limit_price,
        )
        self._remember(account, order)
        if fill_after_s is None and order_type == "MARKET":
            fill_after_s = self.config.fill_delay_s
        if fill_after_s is not None:
            heapq.heappush(account.due_fills, (now + fill_after_s, next(self._fill_seq), order))
        return order.id

    def seed_book(
        self, accounts: int, positions_per_account: int, *, first_account_id: int = 10001
    ) -> None:
        for a in range(accounts):
            account_id = first_account_id + a
            rng = random.Random(self.config.seed * 1_000_003 + account_id)
            self.add_account(account_id)
            for k in range(positions_per_account):
                ticker = _TICKERS[k % len(_TICKERS)]
                roll = rng.random()
                size = rng.choice([10, 25, 50, 100, 200, 500])
                price = f"{rng.uniform(10, 600):.2f}"
                if roll < 0.9:
                    symbol = ticker if k < len(_TICKERS) else f"{ticker}{k // len(_TICKERS)}"
                    qty = size if roll < 0.7 else -size
                    self.add_position(account_id, symbol, str(qty), price=price)
                else:
                    strike = 100_000 + k * 1000
                    # OSI: the root padded to six, yymmdd, C or P, the strike x 1000 in eight.
                    osi = f"{ticker:<6}{27 + k % 2:02d}0115{'C' if k % 2 else 'P'}{strike:08d}"
                    qty = rng.choice([1, 2, 5, 10]) * (1 if rng.random() < 0.7 else -1)
                    self.add_position(
                        account_id,
                        osi,
                        str(qty),
                        instrument_type="OPTION",
                        price=f"{rng.uniform(0.5, 20):.2f}",
                        underlying=ticker,
                    )

    # The API's operations.

    def instrument(self, name: str) -> dict[str, Any] | None:
        """An instrument the API knows: held by any account, or a listed ticker."""
        for account in self.accounts.values():
            iid = account.resolve(name)
            if iid is not None:
                held = account.positions[iid]
                return _instrument(iid, held.symbol, held.instrument_type)
        if name.upper() in _TICKERS or name.upper() in self.config.known_symbols:
            return _instrument(instrument_uuid(name), name.upper())
        for symbol in _TICKERS:
            if instrument_uuid(symbol) == name:
                return _instrument(name, symbol)
        return None

    def tradable(self, account: SimAccount, name: str) -> str | None:
        """The account's instrument_id for `name`, for order entry: what it holds, or any
        instrument of the simulator's universe (held by another account, a listed ticker, a
        `known_symbols` entry), which it then holds flat so an order can open a position.
        None for an instrument the simulator does not know."""
        iid = account.resolve(name)
        if iid is not None:
            return iid
        for other in self.accounts.values():
            held_id = other.resolve(name)
            if held_id is not None:
                held = other.positions[held_id]
                return self._hold_flat(
                    account,
                    held_id,
                    held.symbol,
                    held.instrument_type,
                    held.price,
                    held.underlying,
                    held.multiplier,
                )
        found = self.instrument(name)
        if found is None:
            return None
        symbol = found["symbol"]
        return self._hold_flat(
            account,
            found["id"],
            symbol,
            "COMMON_STOCK",
            listing_price(self.config.seed, symbol),
            None,
        )

    def _hold_flat(
        self,
        account: SimAccount,
        iid: str,
        symbol: str,
        instrument_type: str,
        price: Decimal,
        underlying: str | None,
        multiplier: Decimal = Decimal(1),
    ) -> str:
        # seeded_sign 0: the first fill gives the position its side (see _fill).
        account.positions[iid] = SimPosition(
            account.id,
            iid,
            symbol,
            instrument_type,
            Decimal(0),
            price,
            0,
            underlying,
            multiplier=multiplier,
        )
        account.by_symbol[symbol.upper()] = iid
        return iid

    def _seeded_price(self, instrument_id: str, symbol: str) -> Decimal:
        """The price the market centres an instrument on: what an account holds it at (the
        first that does), else its seeded listing price."""
        for account in self.accounts.values():
            position = account.positions.get(instrument_id)
            if position is not None:
                return position.price
        return listing_price(self.config.seed, symbol)

    def open_positions(self, account: SimAccount) -> list[SimPosition]:
        self.apply_fills(account)
        return [p for p in account.positions.values() if p.quantity != 0]

    def listed_positions(self, account: SimAccount) -> list[dict[str, Any]]:
        """The positions listing: open positions as they stood `positions_listing_lag_s` ago
        (the fills since then taken back), in the API's shape."""
        self.apply_fills(account)
        lag = self.config.positions_listing_lag_s
        if lag <= 0:
            return [p.to_api() for p in account.positions.values() if p.quantity != 0]
        as_of = self.config.clock() - lag
        since: dict[str, Decimal] = {}
        for execution in reversed(account.executions):  # newest first
            if execution.transaction_time <= as_of:
                break
            signed = execution.quantity if execution.side == "BUY" else -execution.quantity
            since[execution.instrument_id] = since.get(execution.instrument_id, Decimal(0)) + signed
        listed = []
        for p in account.positions.values():
            then = p.quantity - since.get(p.instrument_id, Decimal(0))
            if then != 0:
                listed.append(p.to_api(then))
        return listed

    def listed_orders(self, account: SimAccount, orders: list[SimOrder]) -> list[SimOrder]:
        """What the orders listing shows of `orders`: none younger than `orders_listing_lag_s`
        (by the simulator's clock, whatever the order's own timestamp says)."""
        lag = self.config.orders_listing_lag_s
        if lag <= 0:
            return orders
        as_of = self.config.clock() - lag
        return [o for o in orders if o.entered_at <= as_of]

    def pending_close(self, account: SimAccount, instrument: str) -> SimOrder | None:
        iid = account.resolve(instrument)
        for order in account.orders_by_instrument.get(iid or "", []):
            if order.is_close and order.status in WORKING:
                return order
        return None

    def close(self, account: SimAccount, instrument: str, cancel_orders: bool) -> SimOrder | None:
        """Create the closing market order, or None when there is nothing to close."""
        self.apply_fills(account)
        iid = account.resolve(instrument)
        position = account.positions.get(iid) if iid else None
        if position is None or position.quantity == 0:
            return None
        now = self.config.clock()
        if cancel_orders:
            for order in account.orders_by_instrument.get(position.instrument_id, []):
                if order.status in WORKING:
                    order.status, order.updated_at = "CANCELED", now
        order = SimOrder(
            new_order_id(self.config),
            f"close-position-{next(self._close_count)}",
            account.id,
            position.instrument_id,
            position.symbol,
            position.instrument_type,
            "SELL" if position.quantity > 0 else "BUY",
            abs(position.quantity),
            "MARKET",
            "PENDING_NEW",
            now,
            now,
            is_close=True,
            ends=self.market_draw(),
        )
        self._remember(account, order)
        heapq.heappush(
            account.due_fills, (now + self.config.fill_delay_s, next(self._fill_seq), order)
        )
        return order

    def add_order(self, account: SimAccount, order: SimOrder, fill_at: float | None) -> None:
        """Book an order created elsewhere (order entry); it fills at `fill_at`, if given."""
        self._remember(account, order)
        if fill_at is not None:
            heapq.heappush(account.due_fills, (fill_at, next(self._fill_seq), order))

    def apply_fills(self, account: SimAccount) -> None:
        """Fills and lingering cancels that are due, in the order they came due."""
        now = self.config.clock()
        fills, cancels = account.due_fills, account.due_cancels
        while (fills and fills[0][0] <= now) or (cancels and cancels[0][0] <= now):
            if fills and fills[0][0] <= now and not (cancels and cancels[0][0] < fills[0][0]):
                _, _, order = heapq.heappop(fills)
                self._fill(account, order, now)
            else:
                _, _, order = heapq.heappop(cancels)
                if order.status == "PENDING_CANCEL":
                    order.status, order.updated_at = "CANCELED", now
        self._meet_market(account)

    def cancel_later(self, account: SimAccount, order: SimOrder) -> None:
        """PENDING_CANCEL for `cancel_linger_s`, then CANCELED (unless it filled meanwhile)."""
        order.status, order.updated_at = "PENDING_CANCEL", self.config.clock()
        due = order.updated_at + self.config.cancel_linger_s
        heapq.heappush(account.due_cancels, (due, next(self._fill_seq), order))

    def fill_due_in(self, seconds: float) -> None:
        due = self.config.clock() + seconds
        for account in self.accounts.values():
            account.due_fills = [(due, seq, order) for _, seq, order in account.due_fills]
            heapq.heapify(account.due_fills)

    def fill_all(self) -> None:
        for account in self.accounts.values():
            while account.due_fills:
                _, _, order = heapq.heappop(account.due_fills)
                self._fill(account, order, self.config.clock())

    def market_draw(self) -> str | None:
        roll = self._market.random()
        if roll < self.config.p_partial_fill:
            return "partial"
        if roll < self.config.p_partial_fill + self.config.p_reject_after_accept:
            return "reject"
        return None

    def prices_limits(self, symbol: str, time_in_force: str) -> bool:
        """Whether a limit order in `symbol` meets the market (a book with depth): then it
        fills when marketable, as a market order would, and rests otherwise. Without a book
        (and at the close) a limit order rests and never fills."""
        return time_in_force != "AT_THE_CLOSE" and self.market.has_book(symbol)

    def match_now(self, account: SimAccount, order: SimOrder) -> None:
        """Meet the market at once (a replace that may have made the order marketable)."""
        if order.status in ("NEW", "PARTIALLY_FILLED"):
            self._fill(account, order, self.config.clock())

    def _fill(self, account: SimAccount, order: SimOrder, now: float) -> None:
        if order.status not in LIVE:
            return  # cancelled before it could fill
        position = account.positions[order.instrument_id]
        order.updated_at = now
        if order.ends == "reject":
            order.status = "REJECTED"
            return
        if order.ends == "kill":  # a fill-or-kill the market could only fill partly
            order.status = "CANCELED"
            return
        if self.market.halted(position.symbol):
            if order.order_type == "MARKET" and self.config.market.halted_orders == "reject":
                order.status = "REJECTED"
            else:
                self._wait(account, order)
            return
        if order.order_type == "LIMIT" and self.market.has_book(position.symbol):
            self._fill_limit(account, order, position, now)
            return
        if order.order_type == "LIMIT" and _immediate(order):
            self._fill_limit_unbooked(account, order, position, now)
            return
        # A market order; or a limit order without a book, which is only ever due when a test
        # scheduled its fill (another participant's), and then fills at the seeded price.
        wanted = order.quantity - order.filled_quantity
        if order.ends == "partial" and order.quantity > 1:
            fraction = Decimal(str(self.config.partial_fill_fraction))
            wanted = max(Decimal(1), (order.quantity * fraction).to_integral_value())
        if self.market.has_book(position.symbol):
            fills = self.market.take(order.instrument_id, position.symbol, order.side, wanted, None)
        else:
            # No book: the fill is at the price the instrument is quoted around, the same for
            # every account (an account's position price is only where it was bought).
            price = self.market.book(order.instrument_id, position.symbol).reference
            fills = [(price, wanted)]
            self.market.traded(order.instrument_id, position.symbol, price, wanted)
        for price, quantity in fills:
            self._apply_fill(account, order, position, quantity, price, now)
        # The rest of a market order the market could not fill (a partial fill, a book run
        # dry) ends; it never rests.
        whole = order.filled_quantity == order.quantity
        order.status = "FILLED" if whole else self.config.partial_rest_status

    def _fill_limit(
        self, account: SimAccount, order: SimOrder, position: SimPosition, now: float
    ) -> None:
        """Take what the book has at or better than the limit; the rest rests."""
        assert order.limit_price is not None
        left = order.quantity - order.filled_quantity
        limit = Decimal(order.limit_price)
        fills = self.market.take(order.instrument_id, position.symbol, order.side, left, limit)
        for price, quantity in fills:
            self._apply_fill(account, order, position, quantity, price, now)
        if order.filled_quantity >= order.quantity:
            order.status = "FILLED"
        elif _immediate(order):
            order.status = "CANCELED"  # an IOC's rest ends: it never rests on the book
        else:
            self._wait(account, order)

    def _fill_limit_unbooked(
        self, account: SimAccount, order: SimOrder, position: SimPosition, now: float
    ) -> None:
        """An IOC limit where there is no book: all at the seeded price if the limit reaches
        it, else nothing; either way it ends."""
        assert order.limit_price is not None
        price = self.market.book(order.instrument_id, position.symbol).reference
        limit = Decimal(order.limit_price)
        if (limit >= price) if order.side == "BUY" else (limit <= price):
            wanted = order.quantity - order.filled_quantity
            self.market.traded(order.instrument_id, position.symbol, price, wanted)
            self._apply_fill(account, order, position, wanted, price, now)
            order.status = "FILLED"
        else:
            order.status = "CANCELED"

    def _wait(self, account: SimAccount, order: SimOrder) -> None:
        if order.status == "PENDING_CANCEL":
            return  # its cancel is under way: it ends CANCELED, with what it filled
        order.status = "PARTIALLY_FILLED" if order.filled_quantity else "NEW"
        self._waiting.setdefault(account.id, {})[order.id] = order

    def _meet_market(self, account: SimAccount) -> None:
        """Orders waiting on the market meet it again: the quote may have moved through a
        limit, the book refilled, a halt ended."""
        waiting = self._waiting.get(account.id)
        if not waiting:
            return
        self._waiting[account.id] = {}
        now = self.config.clock()
        for order in waiting.values():
            if order.status in ("NEW", "PARTIALLY_FILLED"):
                self._fill(account, order, now)  # waits again when it still cannot fill

    def _apply_fill(
        self,
        account: SimAccount,
        order: SimOrder,
        position: SimPosition,
        filled: Decimal,
        price: Decimal,
        now: float,
    ) -> None:
        """One fill at one price: the order's average, the position, one execution."""
        before = order.filled_quantity
        order.filled_quantity = before + filled
        paid = (order.fill_price or Decimal(0)) * before + price * filled
        order.fill_price = paid / order.filled_quantity
        position.quantity += filled if order.side == "BUY" else -filled
        if position.seeded_sign == 0:  # opened from flat: this fill decides its side
            position.seeded_sign = 1 if position.quantity > 0 else -1
        elif position.quantity * position.seeded_sign < 0:
            position.crossed_zero = True
        self._record_execution(account, order, position, filled, price, now)

    def _record_execution(
        self,
        account: SimAccount,
        order: SimOrder,
        position: SimPosition,
        filled: Decimal,
        price: Decimal,
        now: float,
    ) -> None:
        execution = SimExecution(
            str(uuid.uuid4()),
            order.id,
            order.instrument_id,
            order.symbol,
            order.instrument_type,
            order.side,
            filled,
            price,
            now,
            next(self._fill_seq),
            position.underlying,
            position.multiplier,
        )
        account.executions.append(execution)

    def _remember(self, account: SimAccount, order: SimOrder) -> None:
        order.entered_at = min(order.created_at, self.config.clock())
        order.created_at += self.config.order_time_offset_s  # the order system's own clock
        account.orders.append(order)
        same = account.orders_by_instrument.setdefault(order.instrument_id, [])
        same.append(order)
        if order.is_close:
            # Statuses are current: every booking path applied what was due first.
            live = sum(1 for o in same if o.is_close and o.status in LIVE)
            key = (account.id, order.instrument_id)
            self.most_live_closes[key] = max(self.most_live_closes.get(key, 0), live)


def _immediate(order: SimOrder) -> bool:
    """An IMMEDIATE_OR_CANCEL order (submit_orders'): it meets the market once, then ends."""
    return getattr(order, "time_in_force", "DAY") == "IMMEDIATE_OR_CANCEL"
