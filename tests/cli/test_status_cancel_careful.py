"""`liquidator status` and `cancel` as careful as `run`, as whole processes against the simulator.

The same target checks and refusals as `run`; the journal found where `run` keeps it; the job's
own orders found by client id past a lagging orders listing; a cancel read back until each order
reads final. Counted at the server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import clean_env, event_lines, run_cli
from worker.journal.lock import FileLock
from worker.journal.open import LOCK_FILE
from worker.simulator import Simulator

ACCOUNT = 73101
LAG_S = 3600.0  # the orders listing shows no order younger than this (simulator time)


def env_for(sim: Simulator, state: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key,
        STATE_DIRECTORY=str(state),
        LIQUIDATOR_RATE_LIMIT="0",
        **extra,
    )


def book(sim: Simulator) -> dict[str, str]:
    """SPY (kept by `exclude`) and AAPL held, a participant's working order on each."""
    sim.add_account(ACCOUNT)
    sim.add_position(ACCOUNT, "SPY", "100")
    sim.add_position(ACCOUNT, "AAPL", "50")
    return {
        "spy": sim.add_resting_order(ACCOUNT, "SPY", "BUY", "5", "1.00"),
        "aapl": sim.add_resting_order(ACCOUNT, "AAPL", "BUY", "5", "1.00"),
    }


def working(sim: Simulator) -> set[str]:
    return {o["id"] for o in sim.orders_of(ACCOUNT) if o["status"] in ("NEW", "PENDING_NEW")}


async def test_an_exclude_typo_refuses_status_and_cancel_like_run_and_cancels_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    ids = book(sim)
    targets = tmp_path / "t.toml"
    targets.write_text(f'[[accounts]]\nid = {ACCOUNT}\nexclude = ["SPYY"]\n')
    env = env_for(sim, tmp_path / "state")
    base = ("--base-url", sim.base_url, "--targets", str(targets), "--log-format", "json")
    outputs = {}
    for command in (("run", "--yes"), ("status",), ("cancel", "--yes"), ("cancel", "--dry-run")):
        code, out = await run_cli(*command, *base, env=env)
        assert code == 2, (command, out)
        outputs[command[0]] = out
        assert f"{targets}: accounts[1].exclude: 'SPYY' names no instrument" in out, out
    assert sim.stats.by_route["cancel"] == 0
    assert sim.stats.by_route["close"] == 0
    assert working(sim) == set(ids.values())


async def test_an_unknown_named_instrument_refuses_status_and_cancel_naming_the_line(
    sim: Simulator, tmp_path: Path
) -> None:
    ids = book(sim)
    targets = tmp_path / "t.csv"
    targets.write_text(f"account_id,instrument\n{ACCOUNT},AAPL\n{ACCOUNT},AAPLL\n")
    env = env_for(sim, tmp_path / "state")
    base = ("--base-url", sim.base_url, "--targets", str(targets), "--log-format", "json")
    for command in (("status",), ("cancel", "--yes")):
        code, out = await run_cli(*command, *base, env=env)
        assert code == 2, (command, out)
        assert f"{targets}:3: 'AAPLL' names no instrument" in out, out
    code, out = await run_cli("cancel", "--yes", "--base-url", sim.base_url,
                              "--position", f"{ACCOUNT}:NOPE", env=env)  # fmt: skip
    assert code == 2, out
    assert "--position: 'NOPE' names no instrument" in out, out
    assert sim.stats.by_route["cancel"] == 0
    assert working(sim) == set(ids.values())
    # `run` fails that target and closes the rest, as it always has.
    code, out = await run_cli("run", "--yes", *base, env=env)
    assert code == 1, out
    assert sim.stats.by_route["close"] == 1


async def test_cancel_refuses_while_a_run_holds_the_journal_named_by_state_dir(
    sim: Simulator, tmp_path: Path
) -> None:
    ids = book(sim)
    runs_dir = tmp_path / "the-units-state"  # where the run keeps its journal, not the shell's
    runs_dir.mkdir()
    held = FileLock(runs_dir / LOCK_FILE)
    assert held.try_acquire()  # what a running `liquidator run --state-dir` holds
    env = env_for(sim, tmp_path / "shell-state")
    base = ("--base-url", sim.base_url, "--account", str(ACCOUNT), "--log-format", "json")
    try:
        code, out = await run_cli("cancel", "--yes", "--state-dir", str(runs_dir), *base, env=env)
        assert code == 2, out
        assert f"a run holds the journal in {runs_dir}" in out
        code, out = await run_cli(
            "cancel", "--yes", *base, env={**env, "LIQUIDATOR_STATE_DIR": str(runs_dir)}
        )
        assert code == 2, out
        assert sim.stats.by_route["cancel"] == 0
        assert working(sim) == set(ids.values())
    finally:
        held.release()
    code, out = await run_cli("cancel", "--yes", "--state-dir", str(runs_dir), *base, env=env)
    assert code == 0, out
    assert sim.stats.by_route["cancel"] == 2
    assert not working(sim)


async def _run_leaving_orders_working(
    sim: Simulator,
    state: Path,
    positions: int,
    close_via: str = "submit_orders",
    journal: tuple[str, ...] = (),
) -> set[str]:
    """A run whose closes keep working (no fill) when it gives up following: the job's own
    orders, their client ids (submit_orders) or ids (close_position) in the journal. Their ids
    at the server."""
    sim.add_account(ACCOUNT)
    for n in range(positions):
        sim.add_position(ACCOUNT, f"S{n}", str(10 + n))
    sim.config.fill_delay_s = 10_000
    code, out = await run_cli(
        "run", "--yes", "--close-via", close_via, "--flat-timeout", "0.3", *journal,
        "--base-url", sim.base_url, "--account", str(ACCOUNT), "--log-format", "json",
        env=env_for(sim, state),
    )  # fmt: skip
    assert code == 1, out  # not flat: the orders still work
    own = working(sim)
    assert len(own) == positions
    if close_via == "submit_orders":
        assert all(o["client_order_id"].startswith("lq-") for o in sim.orders_of(ACCOUNT))
    return own


async def test_status_finds_close_position_orders_by_the_ids_the_journal_recorded(
    sim: Simulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    own = await _run_leaving_orders_working(sim, state, 3, close_via="close_position")
    sim.config.orders_listing_lag_s = LAG_S
    code, out = await run_cli(
        "status", "--json", "--state-dir", str(state), "--base-url", sim.base_url,
        "--account", str(ACCOUNT), env=env_for(sim, tmp_path / "elsewhere"),
    )  # fmt: skip
    assert code == 0, out
    shown = {o["order_id"]: o["own"] for o in event_lines(out, "status_order")}
    assert shown == dict.fromkeys(own, True)
    assert sim.stats.by_route["cancel"] == 0


async def test_cancel_refuses_while_a_run_holds_a_postgresql_journal_named_by_journal_url(
    sim: Simulator, tmp_path: Path, pg_url: str
) -> None:
    from worker.journal.keys import LOCK_SCOPE
    from worker.journal.postgres import PgJournal

    ids = book(sim)
    held = await PgJournal.open(pg_url, scope=LOCK_SCOPE, lock_wait=0)
    try:
        code, out = await run_cli(
            "cancel", "--yes", "--journal-url", pg_url, "--base-url", sim.base_url,
            "--account", str(ACCOUNT), env=env_for(sim, tmp_path / "state"),
        )  # fmt: skip
    finally:
        held.close()
    assert code == 2, out
    assert "a run holds the journal" in out
    assert sim.stats.by_route["cancel"] == 0
    assert working(sim) == set(ids.values())


@pytest.fixture(params=["sqlite", "postgres"])
def journal_flags(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, ...]:
    """Where the run keeps its journal, as `run`, `status` and `cancel` are told."""
    if request.param == "sqlite":
        return ("--state-dir", str(tmp_path / "state"))
    return ("--journal-url", str(request.getfixturevalue("pg_url")))


async def test_status_and_cancel_find_the_jobs_orders_by_client_id_past_a_lagging_listing(
    sim: Simulator, tmp_path: Path, journal_flags: tuple[str, ...]
) -> None:
    own = await _run_leaving_orders_working(sim, tmp_path / "state", 5, journal=journal_flags)
    sim.config.orders_listing_lag_s = LAG_S  # the listing shows none of them now
    env = env_for(sim, tmp_path / "elsewhere")
    journal = ("--base-url", sim.base_url, "--log-format", "json", *journal_flags)
    code, out = await run_cli("status", *journal, "--position", f"{ACCOUNT}:S1", env=env)
    assert code == 0, out
    [one] = event_lines(out, "status_order")
    assert (one["symbol"], one["own"], one["order_id"] in own) == ("S1", True, True)
    base = (*journal, "--account", str(ACCOUNT))
    code, out = await run_cli("status", *base, env=env)
    assert code == 0, out
    assert {o["order_id"] for o in event_lines(out, "status_order")} == own
    assert all(o["own"] for o in event_lines(out, "status_order"))
    [account] = event_lines(out, "status_account")
    assert (account["working_orders"], account["own_orders"]) == (5, 5)
    before = sim.stats.by_route["cancel"]
    code, out = await run_cli("cancel", "--yes", *base, env=env)
    assert code == 0, out
    assert sim.stats.by_route["cancel"] - before == 5  # each once
    assert not working(sim)
    canceled = {e["order_id"]: e["status"] for e in event_lines(out, "order_canceled")}
    assert canceled == dict.fromkeys(own, "CANCELED")  # read back, each final


async def test_cancel_names_each_order_still_working_when_the_wait_ends_and_exits_1(
    sim: Simulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    own = await _run_leaving_orders_working(sim, state, 3)
    sim.config.orders_listing_lag_s = LAG_S
    sim.config.cancel_linger_s = 10_000  # each cancel stays pending past the wait
    code, out = await run_cli(
        "cancel", "--yes", "--flat-timeout", "0.3", "--state-dir", str(state),
        "--base-url", sim.base_url, "--account", str(ACCOUNT), "--log-format", "json",
        env=env_for(sim, state),
    )  # fmt: skip
    assert code == 1, out
    failed = {e["order_id"]: e["error"] for e in event_lines(out, "cancel_failed")}
    assert set(failed) == own
    assert all("still working" in str(e) for e in failed.values())
    assert not event_lines(out, "order_canceled")
    assert sim.stats.by_route["cancel"] == 3
