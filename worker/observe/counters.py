"""What a run counts for its metrics and its result. The runner makes one per run and passes it
down; each count is bumped where the thing happens, and the run's last stage (`run.finish`) reads
the totals. Nothing here decides anything from a count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class RunCounters:
    retries: int = 0  # retry waits, of closes and of reads
    looks: int = 0  # look-ups of a target's orders and position after a close went unanswered
    # When closing began (the plan made, any wait for the close window over): time to flat's start.
    closing_since: datetime | None = None
