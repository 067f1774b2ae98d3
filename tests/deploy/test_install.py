"""deploy/README.md's install steps, run as written into a temporary root: every file of deploy/
is installed and checked, or has a test of its own.

Each `sudo install`, `sudo systemd-sysusers`, `sudo systemd-analyze verify` and `promtool check`
line of the README runs in the README's order, with `--root=DIR` (or DIR before each absolute
path) added; so a step the README changes is the step this test runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# Files of deploy/ no step installs, each with the test that reads it.
NOT_INSTALLED = {
    "README.md": "these steps",
    "liquidator.rules.test.yml": "tests/deploy/test_prometheus.py (promtool test rules)",
    "grafana-liquidator.json": "tests/deploy/test_prometheus.py (imported in Grafana's UI)",
}
STEP = re.compile(r"^sudo (install|systemd-sysusers|systemd-analyze verify|promtool check) ")

CREATED = re.compile(r"^Creating (group|user) 'liquidator' ")

pytestmark = pytest.mark.usefixtures("systemd_tools")


def readme_steps() -> list[list[str]]:
    """The README's shell lines that install or check, continuation lines joined, comments cut."""
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"^```sh\n(.*?)^```", text, flags=re.M | re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if STEP.match(line.strip())]


def rooted(root: Path, path: str) -> str:
    return str(root / path.lstrip("/")) if path.startswith("/") else path


def run_step(root: Path, argv: list[str], promtool: str | None) -> subprocess.CompletedProcess[str]:
    """One README line, as root would run it on the host, inside `root`."""
    command = argv[1:]  # without sudo
    if command[0] == "install":  # install -D -m MODE deploy/FILE /DEST
        *options, source, dest = command
        if os.geteuid() != 0:  # `-o root -g root` needs root; the rest of the step does not
            for flag in ("-o", "-g"):
                if flag in options:
                    del options[options.index(flag) : options.index(flag) + 2]
        command = [*options, source, rooted(root, dest)]
    elif command[0] == "systemd-sysusers":  # a file named is read as named, not under --root
        command = [command[0], f"--root={root}", *(rooted(root, p) for p in command[1:])]
    elif command[0] == "systemd-analyze":
        command = [*command[:2], f"--root={root}", *command[2:]]
    else:  # promtool check rules /etc/prometheus/rules/…
        assert promtool is not None
        command = [promtool, *command[1:3], *(rooted(root, p) for p in command[3:])]
    # From the clone, as the README says: its sources are deploy/… and config/… there.
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A root with what a host has before the steps: systemd's own units, and the venv's
    executable (the README's `python3 -m venv` and `pip install`: a stub here)."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    binary = root / "opt/liquidator/.venv/bin/liquidator"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    shutil.copytree(DEPLOY, root / "opt/liquidator/deploy")  # `cp -r … /opt/liquidator/deploy`
    return root


def install_as_the_readme_says(root: Path, promtool: str | None) -> list[str]:
    """Every step, in order, each succeeding and warning of nothing; the sources installed."""
    installed = []
    for argv in readme_steps():
        done = run_step(root, argv, promtool)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        # Nothing but systemd-sysusers' account of what it made: no warning, nothing "ignored".
        said = [line for line in done.stderr.splitlines() if not CREATED.match(line)]
        assert said == [], (argv, done.stderr)
        if argv[1] == "install" and argv[-2].startswith("deploy/"):
            installed.append(Path(argv[-2]).name)
    return installed


def test_the_readme_installs_every_deploy_file_and_each_step_succeeds(
    host: Path, promtool: str
) -> None:
    installed = install_as_the_readme_says(host, promtool)
    shipped = sorted(p.name for p in DEPLOY.iterdir())
    assert sorted(installed + list(NOT_INSTALLED)) == shipped
    assert len(set(installed)) == len(installed)  # each once
    readme = (DEPLOY / "README.md").read_text()
    assert [f for f in shipped if f != "README.md" and f"`{f}`" not in readme] == []
    # The steps the README names are all there (a README that lost one fails here, not later).
    kinds = [" ".join(argv[1:3]) for argv in readme_steps()]
    assert "systemd-sysusers /etc/sysusers.d/liquidator.conf" in kinds
    assert kinds.count("systemd-analyze verify") == 3  # the units, then after each drop-in


def test_sysusers_creates_the_user_the_service_runs_as(host: Path, promtool: str) -> None:
    install_as_the_readme_says(host, promtool)
    passwd = {line.split(":")[0]: line.split(":") for line in (host / "etc/passwd").open()}
    groups = {line.split(":")[0] for line in (host / "etc/group").open()}
    user = passwd["liquidator"]
    assert int(user[2]) < 1000  # a system user
    assert user[5:7] == ["/var/lib/liquidator", "/usr/sbin/nologin\n"]
    assert "liquidator" in groups
    service = (host / "etc/systemd/system/liquidator.service").read_text()
    assert "\nUser=liquidator\n" in service
    assert "\nGroup=liquidator\n" in service


def test_both_drop_ins_apply_to_the_installed_service(host: Path, promtool: str) -> None:
    """systemd merges the unit with its drop-ins in this order (cat-config shows what the manager
    reads); the market-on-close drop-in's ExecStart replaces the unit's."""
    install_as_the_readme_says(host, promtool)
    done = subprocess.run(
        ["systemd-analyze", f"--root={host}", "cat-config", "systemd/system/liquidator.service"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    units = host / "etc/systemd/system"
    files = [line[2:] for line in done.stdout.splitlines() if line.startswith(f"# {host}/")]
    assert files == [
        f"{units}/liquidator.service",
        f"{units}/liquidator.service.d/journal.conf",
        f"{units}/liquidator.service.d/moc.conf",
    ]
    merged = done.stdout.replace("\\\n", " ")
    exec_start: list[str] = []
    for line in merged.splitlines():
        if line.startswith("ExecStart="):
            value = line.partition("=")[2].strip()
            exec_start = [*exec_start, value] if value else []  # empty: clears the list
    [command] = exec_start
    assert "--at-close" in command
    assert "--before-close 20m" in command
    assert "LoadCredential=liquidator-journal-url:/etc/liquidator/journal-url" in merged
    assert "LoadCredential=clearstreet-api-key:/etc/liquidator/api-key" in merged


def test_verify_reads_the_drop_ins_so_a_broken_one_fails_it(host: Path, promtool: str) -> None:
    """The control for the steps' `systemd-analyze verify`: it does check the drop-in directory."""
    install_as_the_readme_says(host, promtool)
    broken = host / "etc/systemd/system/liquidator.service.d/zz-broken.conf"
    broken.write_text("[Service]\nExecStart=\nExecStart=/opt/liquidator/missing run\n")
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={host}", "liquidator.service"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "/opt/liquidator/missing" in done.stderr


def test_the_old_gecos_with_a_colon_is_refused(tmp_path: Path) -> None:
    """Why the sysusers file has no ':' in its description: systemd-sysusers refuses the line
    (and a bare `systemd-sysusers`, reading /etc/sysusers.d/, still exits 0: hence the README's
    step names the file, and the test above reads /etc/passwd)."""
    conf = tmp_path / "etc/sysusers.d/liquidator.conf"
    conf.parent.mkdir(parents=True)
    text = (DEPLOY / "liquidator.sysusers").read_text()
    conf.write_text(text.replace('"Clear Street', '"liquidator: Clear Street'))
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "not a valid GECOS field" in done.stderr
    assert not (tmp_path / "etc/passwd").exists()
