"""The protected style's request arithmetic: escalation, the re-price budget, the plan's cost."""

from __future__ import annotations

from worker.closing.collar import Collar
from worker.closing.schedule import (
    affordable,
    cost_line,
    escalation_requests,
    plan_costs,
    seconds_at,
)

DEFAULTS = Collar(first_bps=5, max_bps=50, reprice_s=5, deadline_s=60)


def test_an_escalation_costs_a_cancel_following_reads_and_a_batch_per_account() -> None:
    # 100 limits: one listing by status, one cancel by instrument, following's round (orders,
    # the orders that can still fill, positions, executions), one batch of rests.
    assert escalation_requests([100], 100) == 1 + 1 + 4 + 1
    assert escalation_requests([101], 100) == 2 + 2 + 2 * 4 + 2
    # Two limits: cancelled by id.
    assert escalation_requests([2], 100) == 2 + 4 + 1
    assert escalation_requests([0, 0], 100) == 0
    assert escalation_requests([100] * 50, 100) == 350
    assert seconds_at(300, 20) == 300 * 1.02 / 20
    assert seconds_at(300, 0) == 0


def test_a_round_spends_what_its_room_allows_less_the_snapshot_reads_its_replaces_need() -> None:
    # Room: REPRICE_SHARE of the rate over a round (20/s x 5 s x 0.5 = 50), less what the
    # escalations due meanwhile need.
    assert affordable(50, 5000) == 49  # and one snapshot read
    assert affordable(50, 10) == 10
    assert affordable(50 - 30, 5000) == 19
    assert affordable(50 - 300, 5000) == 0  # never below nothing
    assert affordable(500, 5000) == 495  # 495 + 5 snapshots


def test_the_plan_states_each_styles_requests_and_whether_protected_fits() -> None:
    market, protected = plan_costs([100] * 50, rate_limit=20, batch_size=100, collar=DEFAULTS)
    assert market.requests == 50 + 200  # a POST and following's 4 reads per account
    assert protected.fits, protected
    assert protected.requests > market.requests
    assert "re-prices fit" in protected.advice  # 11 x 5,000 wanted, the rate allows fewer
    assert "fits" in cost_line(protected)
    # A short deadline with many accounts: the escalation cannot end within seconds of it.
    short = Collar(first_bps=5, max_bps=50, reprice_s=1, deadline_s=4)
    _, tight = plan_costs([40] * 500, rate_limit=20, batch_size=100, collar=short)
    assert not tight.fits
    assert "RATE_LIMIT" in tight.advice
    assert "DEADLINE_S" in tight.advice
    assert "does NOT fit" in cost_line(tight)


def test_at_close_a_deadline_past_the_cutoff_does_not_fit() -> None:
    _, protected = plan_costs(
        [200], rate_limit=20, batch_size=100, collar=DEFAULTS, seconds_to_cutoff=30
    )
    assert not protected.fits
    assert "before the cutoff" in protected.advice
    (market,) = plan_costs([200], rate_limit=20, batch_size=100, collar=None)
    assert market.style == "market"
