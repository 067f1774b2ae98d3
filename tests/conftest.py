"""Shared fixtures: a real simulator on loopback, settings pointed at it, a throwaway home."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.inputs.settings import Settings, load_settings
from worker.simulator import SimConfig, Simulator, serve


@pytest.fixture(autouse=True)
def own_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test, and every process it starts, gets a throwaway HOME and XDG_STATE_HOME and no
    state directory from the outer environment: a run without --state-dir journals in there,
    never in the user's ~/.local/state/liquidator."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    for name in ("STATE_DIRECTORY", "LIQUIDATOR_STATE_DIR", "LIQUIDATOR_JOURNAL_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def sim_config() -> SimConfig:
    """Override in a test module to seed faults; the default is a well-behaved API."""
    return SimConfig(fill_delay_s=0.05)


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[Simulator]:
    simulator = Simulator(sim_config)
    runner, _ = await serve(simulator, "127.0.0.1", 0)
    try:
        yield simulator
    finally:
        await runner.cleanup()


@pytest.fixture
def settings_for(tmp_path: Path) -> Any:
    """Build settings for a simulator, with overrides, as the CLI would."""

    def build(sim: Simulator | None = None, **overrides: Any) -> Settings:
        """Settings for `sim`, or for any server when base_url and api_key are given."""
        values: dict[str, Any] = {
            "base_url": sim.base_url if sim else None,
            "api_key": sim.config.api_key if sim else None,
            "state_dir": tmp_path / "state",
            "concurrency": 8,
            "rate_limit": 0,
            "request_timeout": 1.0,
            "retry_backoff": 0.001,
            "retry_backoff_max": 0.01,
            "reconcile_delay": 0,
        }
        values.update(overrides)
        return load_settings(values, None)

    return build


def required_tool(name: str, package: str) -> str:
    """The path of a command a test needs. Locally without it the test skips; in CI (CI=true,
    where .ci/run installs the Debian package) it fails instead, so it can never go unrun."""
    path = shutil.which(name)
    if path is None:
        missing = f"{name} is not installed (apt-get install {package}; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run these tests: {missing}")
        pytest.skip(missing)
    return path


@pytest.fixture
def promtool() -> str:
    """Prometheus's promtool (Debian package `prometheus`): checks metrics and alert rules."""
    return required_tool("promtool", "prometheus")


@pytest.fixture
def systemd_tools() -> None:
    """systemd-analyze and systemd-sysusers (Debian package `systemd`): check the shipped units."""
    for name in ("systemd-analyze", "systemd-sysusers"):
        required_tool(name, "systemd")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL on loopback for the whole session. Locally without PostgreSQL the
    tests that need it skip; in CI (CI=true) they fail instead, so they can never go unrun."""
    from tests.pg_cluster import INSTALL_HINT, running_cluster, server_bin

    bindir = server_bin()
    missing = None if bindir is not None else f"no PostgreSQL server binaries ({INSTALL_HINT})"
    try:
        import psycopg  # noqa: F401  (the `postgres` extra, pulled in by `dev`)
    except ImportError:
        missing = "psycopg is not installed (pip install -e '.[dev]')"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PostgreSQL journal tests: {missing}")
        pytest.skip(f"PostgreSQL journal tests skipped: {missing}")
    assert bindir is not None
    with running_cluster(bindir) as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """A fresh, empty database in the session's cluster."""
    import psycopg

    name = f"journal_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return str(pg_cluster.url(name))
