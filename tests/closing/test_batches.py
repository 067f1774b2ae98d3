"""Batched order entry (submit_orders, BATCH_SIZE): every answer a server may give a batch,
counted at the server: one filled closing order per position, none flipped, each refused order
reported with the server's reason, and the requests a position cost."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests.support import liquidate as liquidate_with
from tests.support import seed_held as seed
from tests.support import the_truth
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode
from worker.simulator import Simulator

liquidate = functools.partial(liquidate_with, close_via="submit_orders")


def sizes(n: int) -> list[int]:
    return [10 + k if k % 3 else -(10 + k) for k in range(n)]


def by_instrument(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["instrument"]: r for r in doc["results"]}


async def test_each_account_closes_in_one_request_and_cancels_nothing_where_nothing_works(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = [k for a in (81001, 81002, 81003) for k in seed(sim, a, sizes(30), prefix=f"A{a}-")]
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(a, None) for a in (81001, 81002, 81003)]
    )
    assert result.exit_code == ExitCode.OK, doc["summary"]
    assert sorted(sim.stats.submit_batch_sizes) == [30, 30, 30]  # one POST per account
    assert sim.stats.by_route["cancel"] == 0  # no working order anywhere: nothing to cancel
    the_truth(sim, doc, keys, one_order=True, flat=True, client_ids=True)
    assert sim.crossed_zero() == []
    # The whole run, reads included: a bounded number per account (plan, snapshot, one POST,
    # following's polls), not per position.
    assert sim.stats.by_route["submit"] == 3
    assert sim.stats.requests / len(keys) <= 0.5, sim.stats.by_route


async def test_batch_size_one_sends_one_order_a_request(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 81004, sizes(12))
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(81004, None)], batch_size=1
    )
    assert result.exit_code == ExitCode.OK, doc["summary"]
    assert sim.stats.submit_batch_sizes == [1] * 12
    the_truth(sim, doc, keys, one_order=True, flat=True)


@pytest.mark.parametrize("status", [413, 400])
async def test_a_batch_too_large_is_split_and_the_size_remembered(
    sim: Simulator, settings_for: Any, tmp_path: Path, status: int
) -> None:
    keys = seed(sim, 81005, sizes(40))
    sim.config.max_batch, sim.config.max_batch_status = 8, status
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(81005, None)])
    assert result.exit_code == ExitCode.OK, doc["summary"]
    batches = sim.stats.submit_batch_sizes
    assert batches[0] == 40, batches  # refused once, as too large
    assert all(b <= 8 for b in batches[1:]), batches  # then never larger than the server takes
    assert sim.stats.status_counts[status] == 1
    assert sum(batches[1:]) == 40
    the_truth(sim, doc, keys, one_order=True, flat=True)


@pytest.mark.parametrize("atomic", [True, False])
async def test_a_refused_order_fails_with_the_servers_reason_and_the_rest_close(
    sim: Simulator, settings_for: Any, tmp_path: Path, atomic: bool
) -> None:
    keys = seed(sim, 81006, sizes(20))
    sim.config.refuse_instruments = {"S7"}
    sim.config.batch_atomic = atomic
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(81006, None)])
    assert result.exit_code != ExitCode.OK
    results = by_instrument(doc)
    refused = results.pop("S7")
    assert refused["outcome"] == "failed", refused
    assert "not tradable" in refused["error"], refused
    assert all(r["outcome"] == "closed" for r in results.values()), results
    the_truth(sim, None, [k for k in keys if sim.position_quantity(k[0], k[1]) == 0])
    assert sim.position_quantity(81006, keys[7][1]) == keys[7][2]  # untouched
    assert sim.crossed_zero() == []
    # Named by the refusal (atomic) or REJECTED in the reply: one batch more at most.
    assert len(sim.stats.submit_batch_sizes) == (2 if atomic else 1), sim.stats.submit_batch_sizes
    assert sim.stats.by_route["submit"] == len(sim.stats.submit_batch_sizes)


async def test_orders_left_out_of_the_reply_are_looked_up_and_resent_under_their_ids(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 81007, sizes(30))
    sim.config.drop_every_nth = 3  # the 3rd, 6th, ... of each accepted batch: not created
    sim.config.drop_again = True  # ... and left out of every re-send too
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(81007, None)])
    batches = sim.stats.submit_batch_sizes
    assert batches == [30, 10], batches  # the ten left out re-sent once, together; no more
    dropped = sim.stats.orders_dropped
    assert len(dropped) == 20, dropped
    assert len(set(dropped)) == 10, dropped
    failed = [r for r in doc["results"] if r["outcome"] == "failed"]
    assert len(failed) == 10
    assert all("not created by the server" in r["error"] for r in failed)
    assert result.exit_code != ExitCode.OK
    assert sum(r["outcome"] == "closed" for r in doc["results"]) == 20
    the_truth(sim, None, [k[:2] for k in keys])  # nothing flipped
    assert sim.crossed_zero() == []


async def test_orders_left_out_once_then_booked_close_every_position_once(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 81008, sizes(30))
    sim.config.drop_every_nth = 4
    sim.config.drop_again = False  # a re-send of a left-out order is booked
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(81008, None)])
    assert result.exit_code == ExitCode.OK, doc["summary"]
    assert len(sim.stats.orders_dropped) == 7  # left out, looked up, re-sent once
    assert sim.stats.submit_batch_sizes == [30, 7]
    the_truth(sim, doc, keys, one_order=True, flat=True, client_ids=True)


@pytest.mark.parametrize("atomic", [True, False])
async def test_600_positions_under_a_7_order_limit_with_5pc_refused_take_at_most_150_posts(
    sim: Simulator, settings_for: Any, tmp_path: Path, atomic: bool
) -> None:
    """The size learned from one refusal serves every account of the run, and a refused order
    is taken out of an atomic batch without re-sending the rest order by order."""
    accounts = [81100 + a for a in range(50)]
    keys = [k for a in accounts for k in seed(sim, a, sizes(12), prefix=f"A{a}-")]
    refused = {f"A{a}-{(a * 7) % 12}" for a in accounts[::5]}  # 30 of 600: 5%
    refused |= {f"A{a}-{(a * 5 + 3) % 12}" for a in accounts[::5]}
    refused |= {f"A{a}-{(a * 3 + 1) % 12}" for a in accounts[::5]}
    sim.config.refuse_instruments = refused
    sim.config.max_batch = 7
    sim.config.batch_atomic = atomic
    result, doc = await liquidate(
        sim, settings_for, tmp_path, [TargetSpec(a, None) for a in accounts]
    )
    assert result.exit_code != ExitCode.OK  # the refused ones failed
    results = {r["instrument"]: r for r in doc["results"]}
    assert {i for i, r in results.items() if r["outcome"] == "failed"} == refused
    assert all(r["outcome"] == "closed" for i, r in results.items() if i not in refused)
    the_truth(sim, None, [k[:2] for k in keys])  # nothing flipped
    left = [(a, i) for a, i, _ in keys if sim.position_quantity(a, i) != 0]
    assert len(left) == len(refused)
    assert sim.most_working_closes() <= 1
    posts = sim.stats.by_route["submit"]
    assert posts <= 150, (posts, sim.stats.submit_batch_sizes)
    assert sim.crossed_zero() == []


@pytest.mark.solo  # the sizes asserted depend on one batch gathering all 64 in time
async def test_an_atomic_refusal_naming_no_order_is_bisected_in_logarithmic_steps(
    sim: Simulator, settings_for: Any, tmp_path: Path
) -> None:
    keys = seed(sim, 81200, sizes(64))
    sim.config.refuse_instruments = {"S45"}
    sim.config.name_refused_order = False
    result, doc = await liquidate(sim, settings_for, tmp_path, [TargetSpec(81200, None)])
    assert result.exit_code != ExitCode.OK
    results = by_instrument(doc)
    assert results.pop("S45")["outcome"] == "failed"
    assert all(r["outcome"] == "closed" for r in results.values()), results
    # 64 refused; S0-31 accepted, so S45 is in S32-63: S32-47 refused; S32-39 accepted, so in
    # S40-47: S40-43 accepted; S44-45 refused; S44 accepted: S45 is the one. What the refused
    # halves left unsent goes as any batch (S46-47, S48-63). Halving both halves at every step
    # would take 13 POSTs.
    assert sim.stats.submit_batch_sizes == [64, 32, 16, 8, 4, 2, 1, 2, 16]
    the_truth(sim, None, [k[:2] for k in keys])
    assert sim.position_quantity(81200, keys[45][1]) == keys[45][2]
    assert sim.crossed_zero() == []
