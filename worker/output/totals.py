"""A run's totals, as the report, the metrics, the terminal and `run_finished` show them:
targets by outcome, and what the fills were worth and cost against the arrival midpoints.

Counted from the results; nothing here changes one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from worker.money import value
from worker.results import Outcome, TargetResult


class Totals(NamedTuple):
    """The report's summary of the results: `summarize`'s counts, `cost_summary`'s prices."""

    summary: dict[str, int]
    costs: dict[str, Any]


def cost_summary(results: Iterable[TargetResult]) -> dict[str, Any]:
    """What the run's fills were worth and what they cost against the arrival midpoints, in
    all and per account, with the worst target: Decimal strings (None: nothing priced).

    `gross_value_closed`: the sum of each target's filled quantity x its average fill price x
    its contract multiplier, priced or not; `cost`: the sum over the targets with an arrival
    midpoint; `cost_bps`: that cost over the value of the same fills at their arrival
    midpoints. A target whose multiplier is not known is in neither: its money is not known."""
    total = _Tally()
    by_account: dict[int, _Tally] = {}
    for r in results:
        if r.average_fill_price is None or r.filled_quantity is None:
            continue
        # Each figure read once, for the run's tally and the account's.
        filled = abs(Decimal(r.filled_quantity))
        gross = value(filled, Decimal(r.average_fill_price), r.multiplier)
        if gross is None:
            continue
        cost = at_arrival = None
        if r.cost is not None and r.arrival is not None and r.arrival.midpoint is not None:
            cost, at_arrival = Decimal(r.cost), value(filled, r.arrival.midpoint, r.multiplier)
        tally = by_account.get(r.account_id)
        if tally is None:
            tally = by_account[r.account_id] = _Tally()
        total.add(r, gross, cost, at_arrival)
        tally.add(r, gross, cost, at_arrival)
    return {
        **total.as_json(),
        "cost_by_account": {str(a): t.as_json() for a, t in by_account.items()},
    }


@dataclass(slots=True)
class _Tally:
    gross: Decimal = Decimal(0)
    cost: Decimal | None = None
    at_arrival: Decimal = Decimal(0)  # the priced fills' value at their arrival midpoints
    worst: TargetResult | None = None
    worst_cost: Decimal = Decimal(0)  # the worst's cost

    def add(
        self, r: TargetResult, gross: Decimal, cost: Decimal | None, at_arrival: Decimal | None
    ) -> None:
        """`r`'s fills: worth `gross`; `cost` (None: not priced) against `at_arrival`."""
        self.gross += gross
        if cost is None or at_arrival is None:
            return
        self.cost = (self.cost or Decimal(0)) + cost
        self.at_arrival += at_arrival
        if self.worst is None or cost > self.worst_cost:
            self.worst, self.worst_cost = r, cost

    def as_json(self) -> dict[str, Any]:
        bps = None
        if self.cost is not None and self.at_arrival:
            bps = str((self.cost / self.at_arrival * 10_000).quantize(Decimal("0.01")))
        worst = self.worst
        return {
            "gross_value_closed": str(self.gross.quantize(Decimal("0.01"))),
            "cost": None if self.cost is None else str(self.cost.quantize(Decimal("0.01"))),
            "cost_bps": bps,
            "worst_cost": None
            if worst is None
            else {
                "account_id": worst.account_id,
                "instrument": worst.instrument,
                "cost": worst.cost,
                "cost_bps": worst.cost_bps,
            },
        }


def summarize(results: Iterable[TargetResult]) -> dict[str, int]:
    """Targets by outcome (every outcome, zeros included), and how many had extra orders."""
    counts: Counter[str] = Counter()
    extra = 0
    for r in results:
        counts[str(r.outcome)] += 1
        extra += r.extra_orders
    summary = {"targets": sum(counts.values())}
    summary.update({str(o): counts.get(str(o), 0) for o in Outcome})
    summary["extra_orders"] = extra
    return summary
