"""A throwaway PostgreSQL cluster on loopback, from the machine's own server binaries.

Debian's `postgresql` package puts them in /usr/lib/postgresql/<version>/bin. `postgres` refuses
to run as root, so as root the cluster belongs to the `postgres` user (`runuser`). Used by the
tests (tests/conftest.py) and by bench/run.py --postgres; stopped and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "apt-get install -y postgresql"


def server_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name or 0))
    candidates = (
        [Path(os.environ["LIQUIDATOR_TEST_PG_BIN"])]
        if os.environ.get("LIQUIDATOR_TEST_PG_BIN")
        else []
    )
    candidates += reversed(found)
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).resolve().parent)
    for directory in candidates:
        if all((directory / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


@dataclass(frozen=True)
class Cluster:
    port: int
    directory: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_cluster(bindir: Path) -> Iterator[Cluster]:
    """initdb + pg_ctl start in a temporary directory; pg_ctl stop and remove it on exit."""
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="liquidator-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = directory / "data", directory / "server.log"
    port = _free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}{tail}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={directory}"
            " -c max_connections=100"
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
            "-w", "-t", "60", "start")  # fmt: skip
        try:
            yield Cluster(port, directory)
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def restart(bindir: Path, cluster: Cluster) -> None:
    """`pg_ctl restart -m fast`: every session ends; the server is back when this returns."""
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, log = cluster.directory / "data", cluster.directory / "server.log"
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-m", "fast",
         "-w", "restart"],
        capture_output=True,
        check=True,
    )  # fmt: skip
