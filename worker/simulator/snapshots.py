"""`get_snapshots`: GET /v1/market-data/snapshot, one MarketDataSnapshot per instrument asked.

The quote is the book's best bid and ask (none for a halted instrument, a null side for an empty
one); `last_quote.timestamp` is the simulator's addition, which a client must treat as optional.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aiohttp import web

from worker.simulator.market import InstrumentBook, Market
from worker.simulator.replies import error, ok
from worker.simulator.state import Book, SimAccount, api_time, decimal_text


class SnapshotDesk:
    def __init__(self, book: Book) -> None:
        self.book = book

    async def snapshots(self, request: web.Request, _: SimAccount | None) -> web.Response:
        raw = request.query.get("instrument_ids", "")
        names = [part.strip() for part in raw.split(",") if part.strip()]
        if not names:
            return error(400, "At least one instrument_id is required")
        found = []
        for name in names:
            instrument = self.book.instrument(name)
            if instrument is None:
                return error(404, f"Instrument not found for id `{name}`")
            found.append(instrument)
        market = self.book.market
        return ok([snapshot(market, market.book(i["id"], i["symbol"])) for i in found])


def snapshot(market: Market, book: InstrumentBook) -> dict[str, Any]:
    """The spec's MarketDataSnapshot for one instrument's book as it stands."""
    last = book.last_price if book.last_price is not None else book.reference
    change = last - book.reference
    percent = change / book.reference * 100 if book.reference else Decimal(0)
    return {
        "instrument_id": book.instrument_id,
        "symbol": book.symbol,
        "name": None,
        "last_quote": None if market.halted(book.symbol) else _quote(market, book),
        "last_trade": {"price": f"{last:.2f}", "size": book.last_size},
        "session": {
            "previous_close": f"{book.reference:.2f}",
            "change": f"{change:.2f}",
            "change_percent": f"{percent:.4f}",
        },
        "cumulative_volume": book.volume,
        "greeks": None,
    }


def _quote(market: Market, book: InstrumentBook) -> dict[str, Any]:
    bid = book.bids[0] if book.bids else None
    ask = book.asks[0] if book.asks else None
    midpoint = book.midpoint
    return {
        "bid": None if bid is None else f"{bid.price:.2f}",
        "bid_size": None if bid is None else int(bid.size),
        "ask": None if ask is None else f"{ask.price:.2f}",
        "ask_size": None if ask is None else int(ask.size),
        "midpoint": None if midpoint is None else decimal_text(midpoint),
        "timestamp": api_time(market.quoted_at(book)),
    }
