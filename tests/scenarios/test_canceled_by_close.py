"""Orders a close cancelled (`cancel_orders`, the default) are named: a desk order resting on a
target's instrument, cancelled at the server by the run's close, is an event and a report entry.
Counted at the server: its status, and one closing order per position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import events_emitted, liquidate, seed, the_truth
from worker.inputs.targets import TargetSpec
from worker.observe import events
from worker.run.runner import ExitCode
from worker.simulator import Simulator


@pytest.mark.parametrize("close_via", ["close_position", "submit_orders"])
async def test_a_desk_order_the_close_cancelled_is_named_in_an_event_and_the_report(
    sim: Simulator, settings_for: Any, tmp_path: Path, close_via: str
) -> None:
    keys = seed(sim, 61101, [100, 40])
    [(account, _), (_, other_iid)] = keys
    desk = sim.add_resting_order(account, "P0", "SELL", "30", "250.00", created_ago_s=60)
    elsewhere = sim.add_resting_order(account, "P1", "BUY", "5", "1.00", created_ago_s=60)
    # Only P0 is a target: P1's order is left alone, and named nowhere.
    with events_emitted() as emitted:
        result, doc = await liquidate(
            sim, settings_for, tmp_path, [TargetSpec(account, "P0")], close_via=close_via
        )
    assert result.exit_code == ExitCode.OK, (doc["aborted"], emitted[-8:])
    the_truth(sim, doc, keys[:1], one_order=True, flat=True)

    # At the server: the desk's order on the target was cancelled, the other one still works.
    orders = {o["id"]: o for o in sim.orders_of(account)}
    assert orders[desk]["status"] == "CANCELED"
    assert orders[elsewhere]["status"] == "NEW"

    [named] = [e for e in emitted if e["event"] == events.ORDER_CANCELED_BY_CLOSE]
    assert (named["order_id"], named["account_id"], named["instrument"]) == (desk, account, "P0")
    assert (named["side"], named["quantity"], named["order_type"]) == ("SELL", "30", "LIMIT")
    assert (named["limit_price"], named["status"]) == ("250.00", "CANCELED")
    [r] = doc["results"]
    [entry] = r["canceled_orders"]
    assert (entry["id"], entry["side"], entry["quantity"]) == (desk, "SELL", "30")
    assert (entry["order_type"], entry["limit_price"], entry["own"]) == ("LIMIT", "250.00", False)
    assert desk not in {o["id"] for o in r["orders"]}  # not a closing order of the run
    assert sim.position_quantity(account, other_iid) == 40


async def test_with_cancel_orders_off_nothing_is_cancelled_or_named(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 61102, [100])
    [(account, _)] = keys
    desk = sim.add_resting_order(account, "P0", "SELL", "30", "250.00", created_ago_s=60)
    sim.add_resting_order(account, "P0", "BUY", "10", "1.00", created_ago_s=60)
    spec = TargetSpec(account, "P0", cancel_orders=False)
    with events_emitted() as emitted:
        result, doc = await liquidate(sim, settings_for, tmp_path, [spec], flat_timeout=1.0)
    assert {o["id"]: o["status"] for o in sim.orders_of(account)}[desk] == "NEW"
    assert not [e for e in emitted if e["event"] == events.ORDER_CANCELED_BY_CLOSE]
    assert all(r["canceled_orders"] == [] for r in doc["results"])
    # The desk's sell on the closing side never fills (no book): nothing is sent beside it.
    assert result.exit_code == ExitCode.FAILED
    assert [r["outcome"] for r in doc["results"]] == ["not_flat"]
