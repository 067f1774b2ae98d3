"""The built-in simulator of the Clear Street Trading API: how people try, demo and rehearse.

An aiohttp.web app answering, in the official spec's shapes, the routes the worker uses
(clock, market hours, accounts, positions with pagination, orders with filters, close-position
creating market orders that fill after a delay), seeded with accounts and positions and able to
inject faults on request. Never pointed at anything but loopback.
"""

from worker.simulator.config import (
    UNKNOWN_OUTCOMES_30,
    Faults,
    RecordedRequest,
    SimConfig,
    SimStats,
)
from worker.simulator.server import Simulator, serve

__all__ = [
    "UNKNOWN_OUTCOMES_30",
    "Faults",
    "RecordedRequest",
    "SimConfig",
    "SimStats",
    "Simulator",
    "serve",
]
