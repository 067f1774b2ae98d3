"""The built-in simulator of the Clear Street Trading API: how people try, demo and rehearse.

An aiohttp.web app answering, in the official spec's shapes, the routes the worker and the
official SDK use (clock, market hours, accounts and balances, positions with pagination, orders
with filters, one order, executions, order entry, replace_order, close-position creating market
orders that fill after a delay, market-data snapshots with a quote and a book with depth),
seeded with accounts and positions and able to inject faults on request.
Never pointed at anything but loopback. docs/simulator.md describes it.
"""

from worker.simulator.config import (
    UNKNOWN_OUTCOMES_30,
    Faults,
    RecordedRequest,
    SimClock,
    SimConfig,
    SimStats,
)
from worker.simulator.market import Liquidity, MarketConfig
from worker.simulator.server import Simulator, serve

__all__ = [
    "UNKNOWN_OUTCOMES_30",
    "Faults",
    "Liquidity",
    "MarketConfig",
    "RecordedRequest",
    "SimClock",
    "SimConfig",
    "SimStats",
    "Simulator",
    "serve",
]
