"""What a batch's answer says of each of its orders (`worker.closing.batch` sends the batches).

A 2xx reply lists the orders it created, each under its client id; a refusal may name the one
order it is about, or the batch size the server takes. Nothing here sends a request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from worker.api.client import NewOrder, Reply
from worker.api.models import Order
from worker.errors import Rejected

NOT_CREATED = "not created by the server: left out of its reply twice, and not found by its id"


@dataclass(frozen=True, slots=True)
class Submitted:
    """One target's order, as the server answered for it."""

    order: Order
    request_id: str
    found: bool = False  # found by its id after a 409: an earlier send of the same id landed


@dataclass(slots=True)
class Waiting:
    """One order of a batch, waiting for its answer."""

    order: NewOrder
    what: str  # for messages: the instrument as the operator named it
    answer: asyncio.Future[Submitted] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def give(self, submitted: Submitted) -> None:
        if not self.answer.done():
            self.answer.set_result(submitted)

    def fail(self, err: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(err)


def answer_listed(batch: list[Waiting], reply: Reply[list[Order]]) -> list[Waiting]:
    """Answer every order `reply` lists (REJECTED: it fails, with why); the ones left out."""
    by_client_id = {o.client_order_id: o for o in reply.data}
    left_out: list[Waiting] = []
    for waiting in batch:
        order = by_client_id.get(waiting.order.client_id)
        if order is None:
            left_out.append(waiting)
        elif order.status == "REJECTED":
            why = "; ".join(order.details or []) or "no reason given"
            waiting.fail(
                Rejected(
                    f"{waiting.what}: order {waiting.order.client_id} rejected by the"
                    f" server: {why}",
                    status=200,
                    request_id=reply.request_id,
                )
            )
        else:
            waiting.give(Submitted(order, reply.request_id))
    return left_out


def size_limit(err: Rejected, sent: int) -> int | None:
    """The batch size the server takes, when the refusal says the batch was too large."""
    for detail in err.details:
        if detail.get("type") == "BATCH_TOO_LARGE":
            most = detail.get("max_orders")
            if isinstance(most, int) and 0 < most < sent:
                return most
            return max(1, sent // 2)
    text = err.message.lower()
    if err.status == 413 or "too many" in text or "too large" in text:
        return max(1, sent // 2)
    return None


def named_in(err: Rejected, batch: list[Waiting]) -> Waiting | None:
    """The order of `batch` a refusal names (by client id, else by its index), if any."""
    for detail in err.details:
        if detail.get("type") != "BATCH_ORDER":
            continue
        client_id = detail.get("client_order_id")
        for waiting in batch:
            if client_id is not None and waiting.order.client_id == client_id:
                return waiting
        index = detail.get("index")
        if client_id is None and isinstance(index, int) and 0 <= index < len(batch):
            return batch[index]
    return None
