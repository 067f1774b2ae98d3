"""What a job's runs recorded sending, read lock-free: their client ids and order ids.

`liquidator status` and `cancel` find the job's own orders by them while the orders listing
lags order entry (an order looked up by its id or client id is current), as a rerun's adoption
does. A client id is committed with its intent, before the order is sent, so none is missing;
an order id (close_position's reply) rides along with the run's next commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.inputs.settings import Settings
from worker.journal.readonly import ReadOnlyJournal

_CLIENT_IDS = (
    "SELECT DISTINCT c.account_id, c.instrument_id, c.client_id FROM client_ids c"
    " JOIN runs r ON r.run_id = c.run_id WHERE r.job = ? AND r.dry_run = 0"
)
_ORDER_IDS = (
    "SELECT DISTINCT o.account_id, o.instrument_id, o.order_id FROM orders o"
    " JOIN runs r ON r.run_id = o.run_id WHERE r.job = ? AND r.dry_run = 0"
)

Sent = tuple[int, str, str]  # (account_id, instrument_id, id)


@dataclass(frozen=True, slots=True)
class JobIds:
    client_ids: list[Sent] = field(default_factory=list)
    order_ids: list[Sent] = field(default_factory=list)


def job_ids(settings: Settings, job: str) -> JobIds:
    """The ids `job`'s runs recorded; none where no journal was written. Raises what the
    journal's driver raises when it cannot be read."""
    reader = ReadOnlyJournal(settings)
    try:
        if reader._pg is None:
            if not reader.path.is_file():
                return JobIds()
            reader.open_sqlite()
        client_ids = reader.rows(_CLIENT_IDS, (job,)) if reader.has_client_ids() else []
        order_ids = reader.rows(_ORDER_IDS, (job,))
    finally:
        reader.close()
    return JobIds(
        [(int(a), str(i), str(c)) for a, i, c in client_ids],
        [(int(a), str(i), str(o)) for a, i, o in order_ids],
    )
