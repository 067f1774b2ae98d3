"""What a simulator is told: its key, seed, fill delay, server-side rate limit and faults."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from worker.simulator.market import MarketConfig

# "submit" is POST .../orders (submit_orders); "cancel" is both DELETE .../orders routes;
# "accounts" is GET /v1/accounts (the list); "order" is GET .../orders/{order_id}; "snapshot" is
# GET /v1/market-data/snapshot; "replace" is PATCH .../orders/{order_id} (replace_order).
ROUTES = (
    "close", "positions", "orders", "clock", "market_hours", "account", "submit", "cancel",
    "instrument", "accounts", "balances", "executions", "order", "snapshot", "replace",
    "contracts",
)  # fmt: skip


@dataclass
class Faults:
    """Per-route fault probabilities (0..1, drawn once per request in this order)."""

    latency_s: float = 0.0  # added to every request on the route
    p_429: float = 0.0  # 429 with Retry-After; nothing applied
    retry_after_s: float = 1.0
    p_503: float = 0.0  # 503 envelope with Retry-After; nothing applied
    p_drop_before: float = 0.0  # connection dropped before applying
    p_drop_after: float = 0.0  # applied, then the connection dropped without a reply
    p_hang_after: float = 0.0  # applied, then no reply for hang_s (the client times out)
    hang_s: float = 5.0
    p_500_after: float = 0.0  # applied, then a 500 envelope
    p_502_html: float = 0.0  # a proxy's HTML 502; applied half of the time
    p_garbage_after: float = 0.0  # applied, then a 200 that is not the envelope
    # A slow gateway: no reply, and the request is applied only after apply_late_s (longer
    # than the client's timeout), as if a queue held it.
    p_apply_late: float = 0.0
    apply_late_s: float = 2.0
    # At most this many faults from this set, so a test can say "the next two
    # reads fail" without racing the client to switch the faults off.
    max_faults: float = math.inf
    drawn: int = field(default=0, init=False, repr=False)

    def draw(self, roll: float) -> str | None:
        """The fault for a uniform roll in [0, 1), or None."""
        if self.drawn >= self.max_faults:
            return None
        fault = self._draw(roll)
        self.drawn += fault is not None
        return fault

    def _draw(self, roll: float) -> str | None:
        for name, p in (
            ("429", self.p_429),
            ("503", self.p_503),
            ("drop_before", self.p_drop_before),
            ("drop_after", self.p_drop_after),
            ("hang_after", self.p_hang_after),
            ("500_after", self.p_500_after),
            ("502_html", self.p_502_html),
            ("garbage_after", self.p_garbage_after),
            ("apply_late", self.p_apply_late),
        ):
            if roll < p:
                return name
            roll -= p
        return None


# 30% of closes end with an unknown outcome, every kind represented: the fault suite's mix.
UNKNOWN_OUTCOMES_30 = {
    "p_drop_after": 0.08,
    "p_drop_before": 0.05,
    "p_hang_after": 0.04,
    "p_500_after": 0.05,
    "p_502_html": 0.04,
    "p_garbage_after": 0.04,
}


@dataclass
class SimConfig:
    api_key: str = "sim-key.sim-secret-for-rehearsals"
    seed: int = 7
    fill_delay_s: float = 0.5
    rate_limit: float = 0.0  # server-side requests/second over all routes; 0 = none
    faults: dict[str, Faults] = field(default_factory=dict)
    forbidden_accounts: set[int] = field(default_factory=set)
    market_day: str = "TRADING_DAY"  # EARLY_CLOSE (13:00 ET), HOLIDAY, WEEKEND
    regular_close_at: datetime | None = None
    page_repeat_token: bool = False  # a pagination bug: the same next_page_token forever
    page_never_ends: bool = False  # a pagination bug: always another page
    record: bool = True  # keep every request and reply for spec validation
    # Answer 409 to a close while an earlier close of the position is still working. Off by
    # default: the tests must be able to see a duplicate close to prove there is none.
    refuse_duplicate_closes: bool = False
    # Every order id this simulator assigns ends with this text (a UUID's last characters
    # replaced): a short API secret that occurs inside the server's ids. "": plain UUIDs.
    order_ids_ending: str = ""
    # Order entry's risk checks (400 with details, as the spec's examples): an order that would
    # cross one of the account's own working orders on the other side (SELF_MATCH), and BUY
    # orders whose notional exceeds the account's buying power (BUYING_POWER). Off by default.
    self_match_check: bool = False
    buying_power: Decimal | None = None
    # Seconds before the regular close after which AT_THE_CLOSE orders are refused (400), as
    # an exchange's market-on-close cutoff; 0: accepted until the close.
    moc_cutoff_s: float = 0.0
    # A cancel that takes time: the order lingers in PENDING_CANCEL this long (it can still fill
    # meanwhile, and still counts for the self-match check), then ends CANCELED. 0: at once.
    cancel_linger_s: float = 0.0
    # A cancel answered PENDING_CANCEL that never takes effect (the order works on as it was):
    # each cancel with this probability (seeded), every cancel of these symbols' orders.
    p_cancel_lost: float = 0.0
    uncancellable: set[str] = field(default_factory=set)
    # Market conditions for closing orders, drawn once per order when it is created:
    p_partial_fill: float = 0.0  # fills partly, the rest ends as `partial_rest_status`
    partial_fill_fraction: float = 0.5
    partial_rest_status: str = "CANCELED"  # or EXPIRED
    p_reject_after_accept: float = 0.0  # accepted (PENDING_NEW), later REJECTED, nothing filled
    # Quotes, the book and its depth, halts (market.py; docs/simulator.md has the table).
    market: MarketConfig = field(default_factory=MarketConfig)
    # The simulator's time (epoch seconds): GET /v1/clock, order and fill timestamps, fill
    # delays, the listing lags below. A `SimClock` is the server's own clock, apart from the
    # host's (a test can step the host's clock and not the server's) and advanced at will.
    clock: Callable[[], float] = time.time
    # Evidence attacks: order timestamps (created_at) stamped this many seconds off
    # the clock GET /v1/clock answers (negative: behind), as a separate order system's clock.
    order_time_offset_s: float = 0.0
    # GET .../orders (every filter, `order_ids` included) leaves an order out until this many
    # seconds (simulator time) after its creation: a listing behind order entry. One order by
    # id or client id (GET .../orders/{order_id}) and order entry's own replies are current.
    orders_listing_lag_s: float = 0.0
    # GET .../positions shows each position as it stood this many seconds (simulator time) ago:
    # fills younger than that are not in it yet (a position they opened is not listed, one
    # they closed still is). Order entry and closes act on the current position.
    positions_listing_lag_s: float = 0.0
    # GET .../executions leaves a fill out until this many seconds (simulator time) after it
    # was made: a ledger behind the fills.
    executions_listing_lag_s: float = 0.0
    known_symbols: set[str] = field(default_factory=set)  # instruments no account holds
    # Batches of order entry (POST .../orders). The spec gives no batch limit and does not say
    # whether a batch is all-or-nothing; these make the server answer each way a real one may
    # (docs/simulator.md, "Batches"). The defaults: any size, checked whole, booked whole.
    max_batch: int = 0  # more orders than this in one request are refused; 0 = no limit
    max_batch_status: int = 413  # the status of that refusal: 413 or 400
    # Orders on these instruments (symbol or instrument id) are refused by the trading engine
    # (422 naming the order), so a test can aim a refusal at one order of a batch.
    refuse_instruments: set[str] = field(default_factory=set)
    # True: one order refused by the engine (refuse_instruments, the risk checks) refuses the
    # whole batch and books nothing. False: the rest is booked, and the refused order is booked
    # REJECTED with the engine's message in its `details`, in the reply in its place.
    batch_atomic: bool = True
    # False: an atomic batch's refusal does not say which order it is about (no BATCH_ORDER
    # detail), as a server may answer; the client has to find the order itself.
    name_refused_order: bool = True
    # Partial acceptance: orders of an accepted batch left out of the reply and not created,
    # no reason given. Every nth order of a batch (1-based; 0 = none) and/or each order with
    # this probability (seeded). drop_again: an order (by client id) dropped once is dropped
    # on every re-send too; otherwise a re-send of it is always booked.
    drop_every_nth: int = 0
    p_drop_from_batch: float = 0.0
    drop_again: bool = False


class SimClock:
    """The simulator's own clock: the host's time when made, then carried by the monotonic
    clock (a step of the host's wall clock does not move it) times `speed`, plus whatever
    `advance` added. `SimConfig(clock=SimClock(speed=10))` makes a fill delay of 10 s take 1 s."""

    def __init__(self, *, speed: float = 1.0, start: float | None = None) -> None:
        self.speed = speed
        self._start = time.time() if start is None else start
        self._started = time.monotonic()
        self._advanced = 0.0

    def __call__(self) -> float:
        return self._start + (time.monotonic() - self._started) * self.speed + self._advanced

    def advance(self, seconds: float) -> None:
        """Move the server's time forward at once (fills and lags come due accordingly)."""
        self._advanced += seconds


@dataclass
class RecordedRequest:
    method: str
    path: str
    route: str
    query: dict[str, str]
    body: bytes
    headers: dict[str, str]
    response_status: int = 0
    response_body: bytes = b""
    response_content_type: str = ""


@dataclass
class SimStats:
    """Counts observed at the server: how the tests prove the worker's bounds."""

    requests: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    status_counts: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() per request
    faults_injected: Counter[str] = field(default_factory=Counter)
    # Order entry: the number of orders in each POST .../orders whose body was an array, in
    # arrival order, whatever the answer; and the client ids (None: an order sent without one)
    # the server left out of an accepted batch.
    submit_batch_sizes: list[int] = field(default_factory=list)
    cancels_lost: int = 0  # cancels answered and never applied (`p_cancel_lost`, `uncancellable`)
    moc_refused: int = 0  # AT_THE_CLOSE orders refused after `moc_cutoff_s`
    orders_dropped: list[str | None] = field(default_factory=list)

    def batch_size_counts(self) -> Counter[int]:
        """How many submit requests carried each number of orders."""
        return Counter(self.submit_batch_sizes)
