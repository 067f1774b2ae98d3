"""The simulator's market: a quote and a book with depth per instrument, and the fills it gives.

Each book is centred on the instrument's seeded price with `spread_bps` between best bid and ask and
`depth` levels a side; what an order takes is gone until the book refills. With `depth` 0 there is
a quote but no book and fills are at the position's seeded price.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal

CENT = Decimal("0.01")


@dataclass
class Liquidity:
    """One instrument's market where it differs from `MarketConfig`'s defaults (None: default)."""

    price: str | None = None  # the seeded price the book centres on, and the previous close
    spread_bps: float | None = None
    depth: int | None = None
    level_size: int | None = None
    level_step_bps: float | None = None
    refill_s: float | None = None  # math.inf: never refilled, whatever `MarketConfig.refill_s`


@dataclass
class MarketConfig:
    """How the simulator quotes and fills. Keys of the dicts and sets are symbols (any case)."""

    spread_bps: float = 10.0  # best ask minus best bid, in bps of the seeded price
    depth: int = 0  # levels a side; 0: a quote only, fills at the seeded price
    level_size: int = 100  # shares a level holds, before `size_jitter`
    size_jitter: float = 0.5  # each level holds level_size × uniform(1 − j, 1 + j), seeded
    level_step_bps: float = 5.0  # from one level to the next (at least a cent)
    refill_s: float | None = None  # a taken book is whole again this long after; None: never
    drift_bps: float = 0.0  # a seeded random walk of the book: ± this many bps each second
    halted: set[str] = field(default_factory=set)  # no quote; orders wait or are rejected
    halted_orders: str = "rest"  # "rest": market orders wait for the halt to end; "reject"
    quote_age_s: dict[str, float] = field(default_factory=dict)  # a quote this old, always
    instruments: dict[str, Liquidity] = field(default_factory=dict)

    def liquidity(self, symbol: str) -> Liquidity:
        return self.instruments.get(symbol.upper()) or self.instruments.get(symbol) or Liquidity()

    def is_halted(self, symbol: str) -> bool:
        return symbol.upper() in {s.upper() for s in self.halted}


@dataclass
class Level:
    price: Decimal
    size: Decimal  # shares left at this price


@dataclass
class InstrumentBook:
    instrument_id: str
    symbol: str
    reference: Decimal  # the seeded price: the previous close, and where the book began
    centre: Decimal  # where the book is centred now (drift and `move` shift it)
    bids: list[Level]  # best (highest) first
    asks: list[Level]  # best (lowest) first
    quoted_at: float
    drift_at: float
    drift_rng: random.Random
    depleted_at: float | None = None  # when a level was first taken since the last refill
    generation: int = 0  # how many times the book was built: seeds the sizes
    last_price: Decimal | None = None
    last_size: int = 0
    volume: int = 0

    @property
    def midpoint(self) -> Decimal | None:
        if not self.bids or not self.asks:
            return None
        return (self.bids[0].price + self.asks[0].price) / 2


class Market:
    """Every instrument's book, built when first asked for."""

    def __init__(
        self,
        config: Callable[[], MarketConfig],
        clock: Callable[[], float],
        seed: Callable[[], int],
        seeded_price: Callable[[str, str], Decimal],
    ) -> None:
        self._config = config
        self._clock = clock
        self._seed = seed
        self._seeded_price = seeded_price
        self.books: dict[str, InstrumentBook] = {}  # by instrument_id, lower case

    @property
    def config(self) -> MarketConfig:
        return self._config()

    def has_book(self, symbol: str) -> bool:
        """Whether fills walk a book (depth > 0) rather than taking the seeded price."""
        return self._depth(symbol) > 0

    def halted(self, symbol: str) -> bool:
        return self.config.is_halted(symbol)

    def halt(self, symbol: str) -> None:
        self.config.halted.add(symbol.upper())

    def resume(self, symbol: str) -> None:
        self.config.halted = {s for s in self.config.halted if s.upper() != symbol.upper()}

    def book(self, instrument_id: str, symbol: str) -> InstrumentBook:
        """The instrument's book as it stands now: drifted and refilled as due."""
        key = instrument_id.lower()
        book = self.books.get(key)
        now = self._clock()
        if book is None:
            override = self.config.liquidity(symbol).price
            price = Decimal(override) if override else self._seeded_price(instrument_id, symbol)
            book = InstrumentBook(
                instrument_id, symbol, price, price, [], [], now, now,
                random.Random(f"{self._seed()}:{symbol.upper()}:drift"),
            )  # fmt: skip
            book.last_price = price
            self._build(book, now)
            self.books[key] = book
            return book
        self._drift(book, now)
        refill = self.config.liquidity(symbol).refill_s
        if refill is None:
            refill = self.config.refill_s
        if refill is not None and book.depleted_at is not None and now >= book.depleted_at + refill:
            book.generation += 1
            self._build(book, now)
        return book

    def quoted_at(self, book: InstrumentBook) -> float:
        """When the quote was made; `quote_age_s` makes it that old whatever happened since."""
        ages = {symbol.upper(): age for symbol, age in self.config.quote_age_s.items()}
        age = ages.get(book.symbol.upper())
        return self._clock() - age if age is not None else book.quoted_at

    def move(self, instrument_id: str, symbol: str, midpoint: str | Decimal) -> None:
        """Shift the whole book so its centre is `midpoint` (resting limits may then cross)."""
        book = self.book(instrument_id, symbol)
        self._shift(book, Decimal(midpoint) - book.centre, self._clock())

    def take(
        self, instrument_id: str, symbol: str, side: str, quantity: Decimal, limit: Decimal | None
    ) -> list[tuple[Decimal, Decimal]]:
        """Take up to `quantity` from the side an order of `side` trades against, best level
        first, none beyond `limit`: the (price, quantity) of each level's part."""
        book = self.book(instrument_id, symbol)
        buying = side == "BUY"
        levels = book.asks if buying else book.bids
        fills: list[tuple[Decimal, Decimal]] = []
        left = quantity
        while left > 0 and levels:
            level = levels[0]
            if limit is not None and (level.price > limit if buying else level.price < limit):
                break
            part = min(left, level.size)
            fills.append((level.price, part))
            level.size -= part
            left -= part
            if level.size <= 0:
                levels.pop(0)
        if fills:
            now = self._clock()
            book.quoted_at = now
            if book.depleted_at is None:
                book.depleted_at = now
            book.last_price, book.last_size = fills[-1][0], int(fills[-1][1])
            book.volume += int(sum(q for _, q in fills))
        return fills

    def traded(self, instrument_id: str, symbol: str, price: Decimal, quantity: Decimal) -> None:
        """A fill at the seeded price (no book): the last trade and the volume show it."""
        book = self.book(instrument_id, symbol)
        book.last_price, book.last_size = price, int(quantity)
        book.volume += int(quantity)

    # Building and moving.

    def _depth(self, symbol: str) -> int:
        depth = self.config.liquidity(symbol).depth
        return self.config.depth if depth is None else depth

    def _build(self, book: InstrumentBook, now: float) -> None:
        config, liquidity = self.config, self.config.liquidity(book.symbol)
        spread = liquidity.spread_bps if liquidity.spread_bps is not None else config.spread_bps
        step_bps = (
            liquidity.level_step_bps
            if liquidity.level_step_bps is not None
            else config.level_step_bps
        )
        size = liquidity.level_size if liquidity.level_size is not None else config.level_size
        levels = max(1, self._depth(book.symbol))
        centre = book.centre
        half = centre * Decimal(str(spread)) / 20000
        bid = (centre - half).quantize(CENT, ROUND_DOWN)
        ask = (centre + half).quantize(CENT, ROUND_UP)
        if ask <= bid:
            ask = bid + CENT
        step = max(CENT, (centre * Decimal(str(step_bps)) / 10000).quantize(CENT))
        rng = random.Random(f"{self._seed()}:{book.symbol.upper()}:{book.generation}")
        jitter = config.size_jitter

        def sized() -> Decimal:
            return Decimal(max(1, round(size * rng.uniform(1 - jitter, 1 + jitter))))

        book.bids = [Level(bid - i * step, sized()) for i in range(levels) if bid - i * step > 0]
        book.asks = [Level(ask + i * step, sized()) for i in range(levels)]
        book.quoted_at, book.depleted_at = now, None

    def _drift(self, book: InstrumentBook, now: float) -> None:
        bps = self.config.drift_bps
        steps = int(now - book.drift_at)
        if bps <= 0 or steps <= 0:
            return
        centre = book.centre
        for _ in range(min(steps, 10_000)):
            centre += centre * Decimal(str(bps)) / 10000 * book.drift_rng.choice((-1, 1))
        book.drift_at += steps
        self._shift(book, (centre - book.centre).quantize(CENT), book.drift_at)

    def _shift(self, book: InstrumentBook, delta: Decimal, at: float) -> None:
        if delta == 0:
            return
        book.centre += delta
        book.bids = [Level(lv.price + delta, lv.size) for lv in book.bids if lv.price + delta > 0]
        book.asks = [Level(lv.price + delta, lv.size) for lv in book.asks if lv.price + delta > 0]
        book.quoted_at = at
