"""A re-price round under a request budget, against the simulator: the budget is spent on the
limits ranked first, and each goes to the collar of its next turn."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.support import api_for
from worker.api.client import NewOrder
from worker.closing.collar import Collar, limit_price
from worker.closing.reprice import Protected, Repricer
from worker.closing.target import Target
from worker.results import Arrival, OrderSummary, TargetResult
from worker.simulator import Simulator

ACCOUNT = 35001
COLLAR = Collar(first_bps=5, max_bps=50, reprice_s=5, deadline_s=60)  # 11 re-prices


async def test_a_tight_budget_re_prices_the_first_ranked_at_the_collar_of_their_next_turn(
    sim: Simulator,
) -> None:
    arrival = Arrival(Decimal("99.95"), Decimal("100.05"), Decimal("100.00"), 0.0)
    first = limit_price("SELL", arrival.bid, arrival.ask, COLLAR.first_bps)
    assert first is not None
    due: list[Protected] = []
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        for n in range(30):
            symbol = f"R{n}"
            iid = sim.add_position(ACCOUNT, symbol, str(100 + n), price="100.00")  # no book
            order = NewOrder(f"lq-test-{n}", iid, "SELL", Decimal(100 + n), first)
            [placed] = (await api.submit_orders(ACCOUNT, [order])).data
            target = Target(
                ACCOUNT, symbol, iid, symbol, "COMMON_STOCK", Decimal(100 + n),
                Decimal(10_000), False, arrival,
            )  # fmt: skip
            result = TargetResult(ACCOUNT, symbol, iid, symbol)
            result.orders.append(
                OrderSummary(
                    placed.id,
                    "SELL",
                    str(100 + n),
                    placed.status,
                    client_order_id=placed.client_order_id,
                    order_type="LIMIT",
                    limit_price=str(first),
                )
            )
            due.append(Protected(target, result, 0.0, 60.0, 5.0))
        # 2 requests a second: half of 10 over the round, less its one snapshot read: 4 replaces
        # for 30 limits, so each is re-priced about once in 8 rounds.
        repricer = Repricer(api, COLLAR, rate_limit=2, stopping=asyncio.Event())
        await repricer.round(due, now=5.01, reserved=0)
    assert sim.stats.by_route["replace"] == 4
    assert sim.stats.by_route["snapshot"] == 1
    # The largest unfilled notional first: the four largest positions.
    replaced = {o["symbol"]: o["limit_price"] for o in sim.orders_of(ACCOUNT)}
    wanted = limit_price("SELL", Decimal("99.95"), Decimal("100.05"), COLLAR.bps_at(8))
    moved = {s: p for s, p in replaced.items() if Decimal(p) != first}
    assert moved == {f"R{n}": str(wanted) for n in (26, 27, 28, 29)}, moved
    assert all(p.repriced == 1 for p in due)  # taken, sent or not: the next round prices k 2
