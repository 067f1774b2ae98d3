"""The import rules between worker's packages (pyproject.toml's import-linter contracts,
docs/architecture.md) hold, and the check fails when one is broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def check_copy(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the copy of worker/ in tmp_path, with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(tmp_path / "pyproject.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def copy_project(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "worker", tmp_path / "src" / "worker", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path / "src" / "worker"


def test_the_import_rules_hold_on_the_worker_as_it_is(tmp_path: Path) -> None:
    copy_project(tmp_path)
    done = check_copy(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_low_package_importing_output_breaks_the_layers(tmp_path: Path) -> None:
    worker = copy_project(tmp_path)
    with (worker / "journal" / "store.py").open("a") as f:
        f.write("\nimport worker.output.report  # noqa: E402\n")
    done = check_copy(tmp_path)
    assert done.returncode != 0
    assert "Layers, top to bottom BROKEN" in done.stdout
    assert "worker.journal.store -> worker.output.report" in done.stdout


def test_the_simulator_importing_the_worker_breaks_its_contract(tmp_path: Path) -> None:
    worker = copy_project(tmp_path)
    with (worker / "simulator" / "state.py").open("a") as f:
        f.write("\nimport worker.closing.target  # noqa: E402\n")
    done = check_copy(tmp_path)
    assert done.returncode != 0
    assert "The simulator stands apart" in done.stdout
    assert "BROKEN" in done.stdout
