"""The built-in simulator of the Clear Street Trading API: how people try, demo and rehearse.

An aiohttp.web app answering, in the official spec's shapes, the routes the worker and the SDK use,
seeded with accounts and positions and able to inject faults on request (docs/simulator.md). It is
never pointed at anything but loopback.
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
