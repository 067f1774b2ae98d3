"""deploy/README's failover drill, as written: its run targets what its simulator holds."""

from __future__ import annotations

import asyncio
import re
import shlex
import socket
import sys
from pathlib import Path

from tests.support import clean_env, run_cli

README = Path(__file__).resolve().parents[2] / "deploy" / "README.md"


def drill_commands() -> tuple[list[str], list[str]]:
    """The drill's `liquidator simulator` and `liquidator run` command lines, as arguments."""
    section = README.read_text().split("### Failover drill", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    lines = [re.sub(r"#.*", "", line).strip() for line in block.splitlines()]
    [simulator] = [line for line in lines if line.startswith("liquidator simulator")]
    [run] = [line for line in lines if line.startswith("liquidator run")]
    return shlex.split(simulator)[2:], shlex.split(run)[2:]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


async def test_the_failover_drill_targets_the_accounts_its_simulator_holds(
    tmp_path: Path,
) -> None:
    sim_args, run_args = drill_commands()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The drill's simulator, its slowness taken out (a test need not last long enough to kill).
    sim_args[sim_args.index("--port") + 1] = str(port)
    sim_args[sim_args.index("--latency") + 1] = "0"
    sim_args[sim_args.index("--fill-delay") + 1] = "0.05"
    sim_args[sim_args.index("--positions") + 1] = "5"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "simulator", *sim_args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        banner = (await asyncio.wait_for(server.stdout.readline(), 20)).decode()
        assert f":{port}" in banner, banner
        accounts = [run_args[i + 1] for i, a in enumerate(run_args) if a == "--account"]
        assert accounts
        first = int(option(sim_args, "--first-account"))
        held = {str(a) for a in range(first, first + int(option(sim_args, "--accounts")))}
        assert set(accounts) <= held
        # The run as written, but on SQLite and without a shell's $RANDOM.
        targets = [x for a in accounts for x in ("--account", a)]
        env = clean_env(
            LIQUIDATOR_API_KEY="sim-key.sim-secret-for-rehearsals",
            LIQUIDATOR_STATE_DIR=str(tmp_path / "state"),
            LIQUIDATOR_LOG_FORMAT="json",
            LIQUIDATOR_FOLLOW_PAUSE="0.02",
        )
        code, out = await run_cli(
            "run", "--base-url", f"http://127.0.0.1:{port}", *targets,
            "--concurrency", option(run_args, "--concurrency"), "--yes",
            "--report", str(tmp_path / "drill.json"), env=env,
        )  # fmt: skip
        assert code == 0, out[-3000:]
        assert '"failed":0' in out
        assert '"closed":10' in out
    finally:
        server.terminate()
        await server.wait()
