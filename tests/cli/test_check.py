"""`liquidator check` as a true pre-flight: it looks at the journal the run would use (read
only, no lock), its flags all do something, and it never passes where the run would refuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import clean_env, run_cli, seed_accounts
from worker.simulator import Simulator


def _env(sim: Simulator, **extra: str) -> dict[str, str]:
    return clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, LIQUIDATOR_LOG_FORMAT="json", **extra)


def _events(out: str, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [e for e in lines if e["event"] == name]


async def test_check_refuses_like_the_run_when_the_journal_database_is_unreachable(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    url = "postgresql://liquidator:s3cret-pw@127.0.0.1:1/journal"
    env = _env(sim, LIQUIDATOR_JOURNAL_URL=url)
    args = ("--base-url", sim.base_url, "--account", "20001")
    code, out = await run_cli("check", *args, env=env)
    assert code == 2, out
    assert "cannot connect" in out
    assert "s3cret-pw" not in out
    # ... as the run does
    code, out = await run_cli("run", "--yes", *args, env=env)
    assert code == 2, out
    assert sim.stats.by_route["close"] == 0


async def test_check_refuses_a_state_dir_the_run_could_not_use(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = _env(sim, LIQUIDATOR_STATE_DIR=str(blocker / "state"))
    code, out = await run_cli("check", "--base-url", sim.base_url, "--account", "20001", env=env)
    assert code == 2, out
    assert "state_dir" in out


async def test_check_on_a_sound_sqlite_journal_passes_and_changes_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    sim.config.fill_delay_s = 0.05
    state = tmp_path / "state"
    env = _env(sim, LIQUIDATOR_STATE_DIR=str(state), LIQUIDATOR_FOLLOW_PAUSE="0.02")
    args = ("--base-url", sim.base_url, "--account", "20001")
    code, out = await run_cli("run", "--yes", *args, env=env)
    assert code == 0, out
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in state.iterdir()}
    code, out = await run_cli("check", *args, env=env)
    assert code == 0, out
    [checked] = _events(out, "journal_checked")
    assert checked["journal"] == str(state / "journal.sqlite3")
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in state.iterdir()}
    assert after == before


async def test_check_on_a_fresh_state_dir_creates_nothing(sim: Simulator, tmp_path: Path) -> None:
    seed_accounts(sim, 1, 3)
    state = tmp_path / "fresh" / "state"
    env = _env(sim, LIQUIDATOR_STATE_DIR=str(state))
    code, out = await run_cli("check", "--base-url", sim.base_url, "--account", "20001", env=env)
    assert code == 0, out
    assert not (tmp_path / "fresh").exists()


async def test_check_reaches_postgresql_and_creates_no_table(
    sim: Simulator, tmp_path: Path, pg_url: str
) -> None:
    import psycopg

    seed_accounts(sim, 1, 3)
    env = _env(sim, LIQUIDATOR_JOURNAL_URL=pg_url)
    code, out = await run_cli("check", "--base-url", sim.base_url, "--account", "20001", env=env)
    assert code == 0, out
    assert _events(out, "journal_checked")
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert row == (0,)


async def test_check_report_writes_the_dry_run_report(sim: Simulator, tmp_path: Path) -> None:
    seed_accounts(sim, 1, 3)
    report = tmp_path / "check.json"
    env = _env(sim, LIQUIDATOR_STATE_DIR=str(tmp_path / "state"))
    code, out = await run_cli(
        "check", "--base-url", sim.base_url, "--account", "20001", "--report", str(report),
        env=env,
    )  # fmt: skip
    assert code == 0, out
    doc = json.loads(report.read_text())
    assert doc["dry_run"] is True
    assert len(doc["results"]) == 3
    assert {r["fate"] for r in doc["results"]} == {"not_sent"}
    assert sim.stats.by_route["close"] == 0


async def test_check_lists_only_the_flags_it_uses(tmp_path: Path) -> None:
    code, out = await run_cli("check", "--help", env=clean_env())
    assert code == 0
    for unused in ("--metrics-file", "--lock-wait", "--flat-timeout", "--yes", "--dry-run"):
        assert unused not in out
    for used in ("--report", "--journal-url", "--state-dir", "--at-close", "--targets"):
        assert used in out
    code, out = await run_cli("check", "--metrics-file", str(tmp_path / "m.prom"), env=clean_env())
    assert code == 2  # refused by the parser, not silently ignored


async def test_a_dry_run_leaves_the_metrics_of_the_last_real_run_alone(
    sim: Simulator, tmp_path: Path
) -> None:
    seed_accounts(sim, 1, 3)
    metrics = tmp_path / "liquidator.prom"
    env = _env(sim, LIQUIDATOR_STATE_DIR=str(tmp_path / "state"))
    code, out = await run_cli(
        "run", "--dry-run", "--base-url", sim.base_url, "--account", "20001",
        "--metrics-file", str(metrics), env=env,
    )  # fmt: skip
    assert code == 0, out
    assert not metrics.exists()  # a dry run closed nothing: no "last success" from it
