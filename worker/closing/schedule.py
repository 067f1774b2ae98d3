"""The protected style's request arithmetic: what an escalation costs, what a re-price round may
spend, and whether a schedule fits before its deadline (pure, no requests).

Under a rate limit the number of requests, not the CPU, decides when a deadline is kept: an
escalation is a cancel, the reads that show the limit final and the position, and the rest at
market, per account, and each of those is a request at RATE_LIMIT.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from worker.api.client import IDS_PER_REQUEST
from worker.closing.collar import Collar

CANCEL_CHUNK = IDS_PER_REQUEST
READ_CHUNK = IDS_PER_REQUEST
# Up to this many limits of an account are cancelled by id; more, by instrument (CANCEL_CHUNK
# a request) where following's last read and a listing by status just before the cancel
# (READ_CHUNK instruments a request) show only the job's orders working there (`closing.escalate`).
BY_ID_MAX = 2
# Following's round, per account and READ_CHUNK instruments: the orders listing, and where no
# order works (an escalated limit read final), the orders that can still fill there (by status),
# the positions and the ledger's executions (`closing.follow_read`).
FOLLOW_READS = 4
# Of what RATE_LIMIT allows over a round, the share re-prices and their snapshots may take:
# the rest is following's (FOLLOW_READS per account and round at most).
REPRICE_SHARE = 0.5
# The pacer spaces sends 2% wider than 1/rate (worker.api.pace).
_SPACING = 1.02
# Round trips and following's pause between the escalation's cancel and its rest, beyond the
# time its requests take at the rate: what an --at-close escalation also leaves before the
# cutoff.
ESCALATION_SLACK_S = 2.0
# What "at its deadline" promises: every limit at market (or flat) within this of it.
DEADLINE_GRACE_S = 10.0


def escalation_requests(limits_by_account: Iterable[int], batch_size: int) -> int:
    """Requests that escalate these limits (their count per account): cancels, following's
    reads, and the rests at market in batches."""
    total = 0
    for n in limits_by_account:
        if n <= 0:
            continue
        cancels = n if n <= BY_ID_MAX else math.ceil(n / READ_CHUNK) + math.ceil(n / CANCEL_CHUNK)
        reads = FOLLOW_READS * math.ceil(n / READ_CHUNK)
        rests = math.ceil(n / max(1, batch_size))
        total += cancels + reads + rests
    return total


def seconds_at(requests: int, rate_limit: float) -> float:
    """How long `requests` take at RATE_LIMIT (0: unlimited, no time)."""
    return 0.0 if rate_limit <= 0 else requests * _SPACING / rate_limit


def affordable(room: float, wanted: int) -> int:
    """Of `wanted` replaces, how many fit in `room` requests with their snapshot reads."""
    n = max(0, min(wanted, math.floor(room)))
    while n > 0 and n + math.ceil(n / READ_CHUNK) > room:
        n -= 1
    return n


@dataclass(frozen=True, slots=True)
class StyleCost:
    """What closing a plan costs in requests at RATE_LIMIT, and whether the protected schedule
    fits before its deadline (and, --at-close, the cutoff)."""

    style: str
    requests: int
    seconds: float
    fits: bool = True
    advice: str = ""

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {"requests": self.requests, "seconds": round(self.seconds, 1)}
        if self.style == "protected":
            out["fits"] = self.fits
            if self.advice:
                out["advice"] = self.advice
        return out


def plan_costs(
    positions_by_account: Iterable[int],
    *,
    rate_limit: float,
    batch_size: int,
    collar: Collar | None,
    seconds_to_cutoff: float | None = None,
) -> list[StyleCost]:
    """The market style's cost and, with a collar, the protected style's: its first sends, the
    re-prices that fit REPRICE_SHARE of the rate, and the escalation of every limit at
    DEADLINE_S. The protected schedule fits when its escalation takes a few seconds at most
    (ESCALATION_SLACK_S beside its requests) and, --at-close, when DEADLINE_S and the escalation
    end before the cutoff."""
    counts = [n for n in positions_by_account if n > 0]
    first = sum(math.ceil(n / max(1, batch_size)) for n in counts)
    follow = sum(FOLLOW_READS * math.ceil(n / READ_CHUNK) for n in counts)
    market = StyleCost("market", first + follow, seconds_at(first + follow, rate_limit))
    if collar is None:
        return [market]
    escalation = escalation_requests(counts, batch_size)
    wanted = collar.reprices * sum(counts)
    replaces = _replaces_that_fit(wanted, collar, rate_limit)
    quotes = math.ceil(replaces / READ_CHUNK) if collar.reprices else 0
    escalation_s = seconds_at(escalation, rate_limit)
    late, advice = _deadline_advice(escalation, escalation_s, collar, rate_limit)
    fits = not late
    if seconds_to_cutoff is not None:
        cutoff = _cutoff_advice(escalation_s, collar, seconds_to_cutoff)
        if cutoff is not None:
            fits = False
            advice.append(cutoff)
    if wanted > replaces:
        advice.append(
            f"{replaces:,} of {wanted:,} re-prices fit at RATE_LIMIT: each round re-prices the"
            " largest unfilled notional furthest from the touch first"
        )
    protected = StyleCost(
        "protected",
        first + replaces + quotes + escalation,
        collar.deadline_s + escalation_s,
        fits=fits,
        advice="; ".join(advice),
    )
    return [market, protected]


def _replaces_that_fit(wanted: int, collar: Collar, rate_limit: float) -> int:
    """Of `wanted` re-prices, those the rate allows the rounds over the whole schedule (a round
    too short for one replace carries its share over to the next: `worker.closing.reprice`)."""
    if rate_limit <= 0:
        return wanted
    over = rate_limit * REPRICE_SHARE * collar.reprices * collar.reprice_s
    return affordable(over, wanted)


def _deadline_advice(
    escalation: int, escalation_s: float, collar: Collar, rate_limit: float
) -> tuple[bool, list[str]]:
    """Whether the escalation ends later than DEADLINE_GRACE_S past the deadline, and if so what
    would bring it within. Escalation begins up to half of DEADLINE_S early
    (`worker.closing.protect`): what it needs beyond that runs past the deadline."""
    past = max(0.0, escalation_s - collar.deadline_s / 2) + ESCALATION_SLACK_S
    late = past > DEADLINE_GRACE_S
    advice: list[str] = []
    if late and rate_limit > 0:
        room = DEADLINE_GRACE_S - ESCALATION_SLACK_S + collar.deadline_s / 2
        needed = math.ceil(escalation * _SPACING / room)
        deadline = math.ceil(2 * (escalation_s - room) + collar.deadline_s)
        advice.append(
            f"RATE_LIMIT {needed} (or DEADLINE_S {deadline})"
            f" puts every limit at market within {DEADLINE_GRACE_S:g} s of its deadline"
        )
    return late, advice


def _cutoff_advice(escalation_s: float, collar: Collar, seconds_to_cutoff: float) -> str | None:
    """None when DEADLINE_S and the escalation end before the cutoff; else the DEADLINE_S that
    would."""
    ends = collar.deadline_s + escalation_s + ESCALATION_SLACK_S
    if ends <= seconds_to_cutoff:
        return None
    latest = max(0, math.floor(seconds_to_cutoff - escalation_s - ESCALATION_SLACK_S))
    return f"DEADLINE_S {latest} ends before the cutoff (escalation starts earlier by itself)"


def cost_line(cost: StyleCost) -> str:
    """The plan's line for one style: "protected: 1,234 requests, 62 s at RATE_LIMIT; fits"."""
    line = f"{cost.style}: {cost.requests:,} requests, {cost.seconds:.0f} s"
    if cost.style != "protected":
        return line
    if cost.fits:
        return f"{line}; the schedule fits" + (f" ({cost.advice})" if cost.advice else "")
    return f"{line}; does NOT fit: {cost.advice}"
