"""How one close is sent (CLOSE_VIA): the one seam between the two modes.

    close_position  DELETE .../positions/{id}: the server picks the side and the quantity. Not
                    idempotent: after an unknown outcome the closer looks before any re-send,
                    and an order is the worker's by evidence (`worker.closing.evidence`).
    submit_orders   POST .../orders: a MARKET order (DAY, or AT_THE_CLOSE) for the position as
                    last read, under a client id derived from (job, account, instrument,
                    generation); with CLOSE_STYLE=protected the first is a collared LIMIT
                    (`worker.closing.protect` re-prices and escalates it). The server
                    refuses a second order under one id (409), so the same id is simply sent
                    again, and the worker's orders are known by id alone.

A sender sends and finds; it never decides whether to retry (`worker.api.policy`) or when a target
is flat (`worker.closing.follow`). Its modules: `sender` (the `Sender` protocol, `Sent`),
`close_position`, `submit_orders`, and `cancel_resting` (submit_orders' cancels before the
fan-out).
"""

from worker.closing.modes.cancel_resting import CancelWait, ReadBefore
from worker.closing.modes.close_position import ClosePositionSender
from worker.closing.modes.sender import Sender
from worker.closing.modes.submit_orders import (
    ClientIds,
    OrderStyle,
    SubmitOrdersSender,
    submit_generations,
)

__all__ = [
    "CancelWait",
    "ClientIds",
    "ClosePositionSender",
    "OrderStyle",
    "ReadBefore",
    "Sender",
    "SubmitOrdersSender",
    "submit_generations",
]
