"""The systemd units verify, score 2.0 or better on exposure, and keep their timing promises."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


# systemd-analyze (.ci/run installs systemd): without it these skip, in CI (CI=true) they fail,
# so the shipped units can never go unchecked (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("systemd_tools")


def unit(name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file, continuation lines joined."""
    text = (DEPLOY / name).read_text().replace("\\\n", " ")
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.fixture
def installable(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at a binary that exists here, for verify/security."""
    service = (DEPLOY / "liquidator.service").read_text()
    (tmp_path / "liquidator.service").write_text(
        service.replace("/opt/liquidator/.venv/bin/liquidator", "/bin/true")
    )
    shutil.copy(DEPLOY / "liquidator.timer", tmp_path / "liquidator.timer")
    return tmp_path


def test_units_verify_clean(installable: Path) -> None:
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(installable / "liquidator.service"),
            str(installable / "liquidator.timer"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""


def test_service_exposure_is_at_most_2(installable: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(installable / "liquidator.service")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout[-500:] + done.stderr
    assert float(match.group(1)) <= 2.0


def test_timer_fires_on_weekdays_in_new_york_time_and_never_catches_up() -> None:
    timer = unit("liquidator.timer")
    [calendar] = timer["OnCalendar"]
    assert calendar.startswith("Mon..Fri ")
    assert calendar.endswith(" America/New_York")
    assert timer["Persistent"] == ["false"]
    assert timer["AccuracySec"] == ["1s"]
    parsed = subprocess.run(
        ["systemd-analyze", "calendar", calendar], capture_output=True, text=True, timeout=30
    )
    assert parsed.returncode == 0, parsed.stderr
    # Early enough for the earliest start: 13:00 early close minus --before-close.
    hour, minute = map(int, calendar.split()[1].split(":"))
    service = unit("liquidator.service")
    [exec_start] = service["ExecStart"]
    before = re.search(r"--before-close (\d+)m", exec_start)
    assert before is not None
    assert hour * 60 + minute <= 13 * 60 - int(before.group(1))


def test_the_metrics_directory_is_optional_for_the_unit() -> None:
    """A host without node_exporter's textfile directory still flattens: the unit marks the
    path optional ('-'), and the worker treats metrics it cannot write as a warning
    (tests/scenarios/test_edges.py runs that case)."""
    service = unit("liquidator.service")
    [exec_start] = service["ExecStart"]
    metrics = re.search(r"--metrics-file (\S+)", exec_start)
    assert metrics is not None
    directory = str(Path(metrics.group(1)).parent)
    assert service["ReadWritePaths"] == [f"-{directory}"]


def test_service_gets_its_key_as_a_credential_and_stops_inside_systemds_patience() -> None:
    service = unit("liquidator.service")
    assert service["Type"] == ["oneshot"]
    assert service["LoadCredential"] == ["clearstreet-api-key:/etc/liquidator/api-key"]
    assert service["StateDirectory"] == ["liquidator"]
    assert "--yes" in service["ExecStart"][0]
    assert service["TimeoutStartSec"] == ["4h"]
    stop = int(service["TimeoutStopSec"][0].rstrip("s"))
    assert 10 < stop < 90  # the worker stops within 10 s; systemd would SIGKILL at 90 s
    assert "LIQUIDATOR_API_KEY" not in (DEPLOY / "liquidator.service").read_text()


def test_two_host_drop_in_hands_over_the_journal_url_and_stands_by_long_enough(
    installable: Path,
) -> None:
    from worker.inputs.settings import JOURNAL_URL_CREDENTIAL

    drop_in = unit("liquidator-journal.conf")
    [credential] = drop_in["LoadCredential"]
    assert credential.split(":")[0] == JOURNAL_URL_CREDENTIAL
    [env] = drop_in["Environment"]
    assert "postgresql://" not in env  # the URL holds a password: only as a credential
    name, _, wait = env.partition("=")
    assert name == "LIQUIDATOR_LOCK_WAIT"
    # A standby stands by as long as the active host's whole day may last (TimeoutStartSec).
    [start_timeout] = unit("liquidator.service")["TimeoutStartSec"]
    assert int(wait) == int(start_timeout.rstrip("h")) * 3600
    (installable / "liquidator.service.d").mkdir()
    shutil.copy(DEPLOY / "liquidator-journal.conf", installable / "liquidator.service.d")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(installable / "liquidator.service")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # (a drop-in beside the unit is read, and checked too)


def test_market_on_close_drop_in_submits_before_the_cutoff_and_verifies(installable: Path) -> None:
    from worker.inputs.settings import load_settings

    drop_in = unit("liquidator-moc.conf")
    assert drop_in["ExecStart"][0] == ""  # clears the unit's own before adding its own
    exec_start = drop_in["ExecStart"][1]
    assert "--at-close" in exec_start
    assert "--yes" in exec_start
    before = re.search(r"--before-close (\d+)m", exec_start)
    assert before is not None
    # It starts before the cutoff (default MOC_CUTOFF), or it would refuse every day with exit 2.
    cutoff = load_settings({}, None).moc_cutoff
    assert int(before.group(1)) * 60 > cutoff.total_seconds()
    # The timer fires early enough for it on an early-close day too.
    hour, minute = map(int, unit("liquidator.timer")["OnCalendar"][0].split()[1].split(":"))
    assert hour * 60 + minute <= 13 * 60 - int(before.group(1))
    (installable / "liquidator.service.d").mkdir()
    text = (DEPLOY / "liquidator-moc.conf").read_text()
    (installable / "liquidator.service.d" / "moc.conf").write_text(
        text.replace("/opt/liquidator/.venv/bin/liquidator", "/bin/true")
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(installable / "liquidator.service")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""
