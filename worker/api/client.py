"""How to talk to the Clear Street Trading API: `TradingApi`, every endpoint the worker uses.

Built from one request sent once (`worker.api.transport`: session, pace, errors translated),
the envelope read into typed replies or errors (`worker.api.envelope`), order entry
(`worker.api.order_entry`) and reads (`worker.api.listings`). It never retries and never
decides whether to: that is `worker.api.policy`.
"""

from __future__ import annotations

from worker.api.envelope import Reply
from worker.api.listings import CONTRACTS_BATCH, IDS_PER_REQUEST, SNAPSHOT_BATCH, Listings
from worker.api.order_entry import NewOrder, OrderEntry, OrderType, Side, TimeInForce
from worker.api.transport import MAX_REPLY_BYTES, open_session

__all__ = [
    "CONTRACTS_BATCH",
    "IDS_PER_REQUEST",
    "MAX_REPLY_BYTES",
    "SNAPSHOT_BATCH",
    "NewOrder",
    "OrderType",
    "Reply",
    "Side",
    "TimeInForce",
    "TradingApi",
    "open_session",
]


class TradingApi(OrderEntry, Listings):
    """The endpoints the worker uses. Every request takes a slot from the pacer."""
