"""The market-on-close cutoff from the simulator's calendar, and the issue-11 settings.

The cutoff is read from the calendar the server publishes (early closes and holidays are the
exchange's) against the server's own clock, never this host's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.support import FakeClock, RecordedSleeps, api_for
from worker.api.policy import RetryPolicy
from worker.api.reads import Reader
from worker.errors import InputError
from worker.inputs.settings import load_settings
from worker.run.schedule import MocCutoff, moc_cutoff, read_moc_cutoff
from worker.simulator import SimConfig, Simulator

NEW_YORK = ZoneInfo("America/New_York")
DAY = (2026, 11, 24)  # a Tuesday


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def sim_config(clock: FakeClock) -> SimConfig:
    return SimConfig(clock=clock)


def ny(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(*DAY, hour, minute, second, tzinfo=NEW_YORK)


async def cutoff_now(sim: Simulator, before: timedelta = timedelta(minutes=10)) -> MocCutoff:
    """As the worker will ask it: the calendar and the clock, both from the server."""
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        hours = await api.get_market_hours()
        server_now = (await api.get_clock()).data
    return moc_cutoff(hours.data, server_now, before)


@pytest.mark.parametrize(
    ("day_type", "at", "passed", "cutoff"),
    [
        ("TRADING_DAY", (9, 0), False, (15, 50)),  # before the open: the cutoff is ahead
        ("TRADING_DAY", (15, 49, 59), False, (15, 50)),
        ("TRADING_DAY", (15, 50), True, (15, 50)),  # at the cutoff: too late
        ("TRADING_DAY", (16, 30), True, (15, 50)),  # after the close
        ("EARLY_CLOSE", (12, 49, 59), False, (12, 50)),  # 13:00 close
        ("EARLY_CLOSE", (12, 55), True, (12, 50)),
        ("EARLY_CLOSE", (14, 0), True, (12, 50)),
    ],
)
async def test_the_cutoff_follows_the_calendars_close(
    sim: Simulator,
    clock: FakeClock,
    day_type: str,
    at: tuple[int, ...],
    passed: bool,
    cutoff: tuple[int, int],
) -> None:
    sim.config.market_day = day_type
    clock.set(ny(*at))
    state = await cutoff_now(sim)
    assert state.passed is passed, state.reason
    assert state.cutoff == ny(*cutoff)
    assert state.regular_close == ny(*cutoff) + timedelta(minutes=10)
    assert ("has passed" in state.reason) is passed


@pytest.mark.parametrize("day_type", ["HOLIDAY", "WEEKEND"])
async def test_a_day_without_a_session_has_no_cutoff_to_meet(
    sim: Simulator, clock: FakeClock, day_type: str
) -> None:
    sim.config.market_day = day_type
    clock.set(ny(10, 0))
    state = await cutoff_now(sim)
    assert state == MocCutoff(True, None, None, state.reason)
    assert day_type.lower() in state.reason


async def test_a_longer_cutoff_and_a_moved_close(sim: Simulator, clock: FakeClock) -> None:
    sim.config.regular_close_at = ny(14, 30)  # e.g. a halt-shortened session
    clock.set(ny(14, 0))
    assert (await cutoff_now(sim, timedelta(minutes=20))).cutoff == ny(14, 10)
    assert (await cutoff_now(sim, timedelta(minutes=20))).passed is False
    assert (await cutoff_now(sim, timedelta(minutes=45))).passed is True


async def test_read_moc_cutoff_reads_the_calendar_once(sim: Simulator, clock: FakeClock) -> None:
    clock.set(ny(15, 0))
    async with api_for(sim.base_url, api_key=sim.config.api_key) as api:
        reader = Reader(api, RetryPolicy(sleep=RecordedSleeps()))
        state = await read_moc_cutoff(reader, lambda: ny(15, 45), timedelta(minutes=10))
    assert (state.passed, state.cutoff) == (False, ny(15, 50))
    assert sim.stats.by_route["market_hours"] == 1


# Settings: plumbed now, consumed by the close path later.


def test_defaults_keep_todays_close_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CLOSE_VIA", "AT_CLOSE", "MOC_CUTOFF"):
        monkeypatch.delenv(f"LIQUIDATOR_{key}", raising=False)
    settings = load_settings({}, None)
    assert (settings.close_via, settings.at_close) == ("close_position", False)
    assert settings.moc_cutoff == timedelta(minutes=10)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("90s", 90), ("20m", 1200), ("1h", 3600), ("300", 300), ("PT15M", 900)],
)
def test_moc_cutoff_takes_durations(raw: str, expected: float) -> None:
    assert load_settings({"moc_cutoff": raw}, None).moc_cutoff == timedelta(seconds=expected)


def test_at_close_implies_submit_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIQUIDATOR_AT_CLOSE", "true")
    settings = load_settings({}, None)
    assert (settings.at_close, settings.close_via) == (True, "submit_orders")
    monkeypatch.setenv("LIQUIDATOR_CLOSE_VIA", "SUBMIT_ORDERS")
    assert load_settings({}, None).close_via == "submit_orders"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"at_close": True, "close_via": "close_position"}, "--at-close: .*submit_orders"),
        ({"close_via": "fax"}, "--close-via"),
        ({"moc_cutoff": "0s"}, "--moc-cutoff: .*more than 0"),
        ({"moc_cutoff": "7h"}, "--moc-cutoff"),
        ({"moc_cutoff": "soon"}, "--moc-cutoff"),
    ],
)
def test_bad_issue_11_settings_name_the_flag(values: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_settings(values, None)


def test_settings_file_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('close_via = "submit_orders"\nmoc_cutoff = "15m"\n')
    settings = load_settings({}, path)
    assert (settings.close_via, settings.moc_cutoff) == ("submit_orders", timedelta(minutes=15))
