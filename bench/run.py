"""Benchmark: liquidator against the practical floor and the official SDK, on one workload.

Each contender runs as its own process against its own freshly seeded simulator process (with a
fixed per-request latency), so the numbers are wall time, CPU (user + sys) and peak RSS of that
process alone, from os.wait4. Usage:

    python bench/run.py [--positions 5000] [--accounts 50] [--latency 0.02] [--concurrency 64]
                        [--only liquidator,floor,sdk] [--json FILE]
"""

from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
KEY = "bench-key.bench-secret"
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
            "--fill-delay", "3600",
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
        ]  # fmt: skip
    script = {"floor": "floor.py", "sdk": "sdk_client.py"}[name]
    return [
        sys.executable,
        str(HERE / script),
        base,
        KEY,
        c,
        str(FIRST_ACCOUNT),
        str(args.accounts),
    ]


def run_one(name: str, args: argparse.Namespace, workdir: Path) -> Measured:
    sim, base = start_simulator(args)
    try:
        state = workdir / name
        state.mkdir()
        env = {**os.environ, "LIQUIDATOR_API_KEY": KEY}
        closes = (args.positions // args.accounts) * args.accounts
        return measure(name, contender_cmd(name, base, args, state), closes, env, state / "out")
    finally:
        sim.terminate()
        sim.wait()


def table(results: list[Measured], args: argparse.Namespace) -> str:
    bound = math.ceil(args.positions / args.concurrency) * args.latency
    floor = next((r for r in results if r.name == "floor"), None)
    lines = [
        f"N={args.positions} positions over A={args.accounts} accounts, L={args.latency * 1000:.0f}"
        f" ms, C={args.concurrency}; network bound ceil(N/C)*L = {bound:.2f} s",
        "",
        "| client | wall s | × network bound | × floor | CPU ms/close | peak RSS MB | exit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vs_floor = f"{r.wall_s / floor.wall_s:.2f}" if floor else "n/a"
        lines.append(
            f"| {r.name} | {r.wall_s:.2f} | {r.wall_s / bound:.2f} | {vs_floor} |"
            f" {r.cpu_ms_per_close:.3f} | {r.peak_rss_mb:.0f} | {r.exit_code} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", type=int, default=5000)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--only", default="floor,liquidator,sdk")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="liquidator-bench-") as tmp:
        for name in args.only.split(","):
            results.append(run_one(name, args, Path(tmp)))
            print(f"{name}: {results[-1]}", file=sys.stderr, flush=True)
    print(table(results, args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if all(r.exit_code == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
