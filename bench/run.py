"""Benchmark: liquidator against the practical floor and the official SDK, on one workload.

Each contender runs as its own process against its own freshly seeded simulator process (with a
fixed per-request latency), so the numbers are wall time, CPU (user + sys) and peak RSS of that
process alone, from os.wait4. A small machine is noisy, so every contender runs --repeat times,
interleaved (floor, liquidator, sdk, floor, ...), and the table shows medians and the CPU range.
Usage:

    python bench/run.py [--positions 5000] [--accounts 50] [--latency 0.02] [--concurrency 64]
                        [--only liquidator,floor,sdk] [--repeat 3] [--fill-delay 0.01]
                        [--json FILE] [--postgres] [--journal-url URL]
                        [--close-via close_position|submit_orders]

`liquidator-pg` is liquidator with its journal in PostgreSQL: `--journal-url` names a server
(each run gets a fresh database in it), `--postgres` starts a throwaway one on loopback from
the machine's postgresql package (tests/pg_cluster.py) and adds `liquidator-pg` to the runs.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
KEY = "bench-key.bench-secret-for-the-bench"  # MIN_SECRET_CHARS: 16
FIRST_ACCOUNT = 10001


@dataclass
class Measured:
    name: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    exit_code: int
    closes: int

    @property
    def cpu_ms_per_close(self) -> float:
        return 1000 * self.cpu_s / max(1, self.closes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "worker", "simulator",
            "--port", str(port),
            "--accounts", str(args.accounts),
            "--positions", str(args.positions // args.accounts),
            "--first-account", str(FIRST_ACCOUNT),
            "--latency", str(args.latency),
            "--fill-delay", str(args.fill_delay),
            "--api-key", KEY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()  # "simulator on ..." once it listens
    return proc, f"http://127.0.0.1:{port}"


def measure(name: str, cmd: list[str], closes: int, env: dict[str, str], out: Path) -> Measured:
    started = time.perf_counter()
    with out.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        name=name,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        exit_code=proc.returncode,
        closes=closes,
    )


def contender_cmd(name: str, base: str, args: argparse.Namespace, state: Path) -> list[str]:
    c = str(args.concurrency)
    if name == "liquidator-pg":
        url = fresh_database(args.journal_url)
        return [*contender_cmd("liquidator", base, args, state), "--journal-url", url]
    if name == "liquidator":
        cmd = [sys.executable, "-m", "worker", "run", "--yes", "--base-url", base]
        for n in range(args.accounts):
            cmd += ["--account", str(FIRST_ACCOUNT + n)]
        return [
            *cmd,
            "--concurrency", c,
            "--rate-limit", "0",
            "--state-dir", str(state),
            "--report", str(state / "report.json"),
            "--log-format", "json",
            "--close-via", args.close_via,
        ]  # fmt: skip
    script = {"floor": "floor.py", "sdk": "sdk_client.py"}[name]
    cmd = [sys.executable, str(HERE / script), base, KEY, c, str(FIRST_ACCOUNT), str(args.accounts)]
    # The floor closes the way liquidator is told to (the same requests at the server); the
    # SDK has no client-id close and always sends close_position.
    return [*cmd, args.close_via] if name == "floor" else cmd


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server, so every run starts from the same journal."""
    import uuid

    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return server_url.rsplit("/", 1)[0] + "/" + name


def run_one(name: str, args: argparse.Namespace, workdir: Path) -> Measured:
    sim, base = start_simulator(args)
    try:
        state = workdir / name
        state.mkdir(parents=True)
        env = {**os.environ, "LIQUIDATOR_API_KEY": KEY}
        closes = (args.positions // args.accounts) * args.accounts
        return measure(name, contender_cmd(name, base, args, state), closes, env, state / "out")
    finally:
        sim.terminate()
        sim.wait()


def table(runs: dict[str, list[Measured]], args: argparse.Namespace) -> str:
    bound = math.ceil(args.positions / args.concurrency) * args.latency
    wall = {name: median(r.wall_s for r in measured) for name, measured in runs.items()}
    lines = [
        f"N={args.positions} positions over A={args.accounts} accounts, L={args.latency * 1000:.0f}"
        f" ms, C={args.concurrency}; network bound ceil(N/C)*L = {bound:.2f} s;"
        f" closes via {args.close_via}; median of {args.repeat} run(s) each",
        "",
        "| client | wall s | × network bound | × floor | CPU ms/close | CPU range | peak RSS MB"
        " | exit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, measured in runs.items():
        cpu = sorted(r.cpu_ms_per_close for r in measured)
        vs_floor = f"{wall[name] / wall['floor']:.2f}" if "floor" in wall else "n/a"
        lines.append(
            f"| {name} | {wall[name]:.2f} | {wall[name] / bound:.2f} | {vs_floor} |"
            f" {median(cpu):.3f} | {cpu[0]:.3f}–{cpu[-1]:.3f} |"
            f" {max(r.peak_rss_mb for r in measured):.0f} |"
            f" {max(r.exit_code for r in measured)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", type=int, default=5000)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--only", default="floor,liquidator,sdk")
    parser.add_argument("--repeat", type=int, default=3)
    # Market orders fill in milliseconds; liquidator follows each close until it reads flat,
    # so its wall time includes the fill and the first poll after it.
    parser.add_argument("--fill-delay", type=float, default=0.01)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--close-via", default="close_position", choices=("close_position", "submit_orders")
    )
    parser.add_argument("--journal-url", help="PostgreSQL server for liquidator-pg")
    parser.add_argument("--postgres", action="store_true", help="start one, run liquidator-pg")
    args = parser.parse_args()
    names = args.only.split(",")
    # Measured as installed: pip compiles an installed package's bytecode, and aiohttp's is. An
    # editable checkout run with PYTHONDONTWRITEBYTECODE=1 would compile the worker's ~7,000
    # lines on every start (~80 ms) and never keep them.
    compileall.compile_dir(HERE.parent / "worker", quiet=1)
    with contextlib.ExitStack() as stack:
        if args.postgres and not args.journal_url:
            sys.path.insert(0, str(HERE.parent))
            from tests.pg_cluster import running_cluster, server_bin

            bindir = server_bin()
            if bindir is None:
                parser.error(
                    "--postgres: no PostgreSQL server binaries (apt-get install postgresql)"
                )
            args.journal_url = stack.enter_context(running_cluster(bindir)).url()
        if args.journal_url and "liquidator-pg" not in names:
            names.append("liquidator-pg")
        return measure_all(args, names)


def measure_all(args: argparse.Namespace, names: list[str]) -> int:
    runs: dict[str, list[Measured]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="liquidator-bench-") as tmp:
        for n in range(args.repeat):
            for name in names:
                runs[name].append(run_one(name, args, Path(tmp) / str(n)))
                print(f"{name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    print(table(runs, args))
    if runs.get("liquidator") and runs.get("liquidator-pg"):
        sqlite_s = median(r.wall_s for r in runs["liquidator"])
        pg_s = median(r.wall_s for r in runs["liquidator-pg"])
        print(f"\nPostgreSQL journal / SQLite journal, wall time (medians): {pg_s / sqlite_s:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({k: [asdict(r) for r in v] for k, v in runs.items()}))
    return 0 if all(r.exit_code == 0 for v in runs.values() for r in v) else 1


if __name__ == "__main__":
    sys.exit(main())
