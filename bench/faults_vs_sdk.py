"""The safety promise, side by side: the official SDK and liquidator under the same faults.

Each closes 1,000 positions over 10 accounts against its own simulator with 30% unknown-outcome
failures (close applied then the connection dropped, reply lost to a timeout, 500 / HTML 502
after applying, a reply that is not the envelope), 10% 503s and a 400 req/s server limit.
Orders are still working when a retry arrives and all fill at the end; positions closed twice
and positions flipped (long to short or back) are counted at the server. The SDK script calls
close_position as its docs show (cancel_orders is optional). Usage: python bench/faults_vs_sdk.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

from worker.simulator import UNKNOWN_OUTCOMES_30, Faults, SimConfig, Simulator, serve

KEY = "faults-key.faults-secret-for-the-bench"  # MIN_SECRET_CHARS: 16


def faulty_simulator() -> Simulator:
    sim = Simulator(
        SimConfig(
            api_key=KEY,
            rate_limit=400,
            fill_delay_s=3600,  # still working when a blind retry arrives; all fill at the end
            record=False,
            faults={
                "close": Faults(p_503=0.10, retry_after_s=0.05, hang_s=2.0, **UNKNOWN_OUTCOMES_30)
            },
        )
    )
    sim.seed_book(10, 100)
    return sim


SDK_CLIENT = """
import asyncio, sys
from clearstreet import AsyncClearStreet
async def main(base, key):
    gate = asyncio.Semaphore(32)
    async with AsyncClearStreet(api_key=key, base_url=base, timeout=1.0) as client:
        async def close(account, instrument):
            async with gate:
                try:
                    await client.v1.positions.close_position(instrument, account_id=account)
                except Exception:
                    pass  # what a script does: log and move on
        lists = []
        for n in range(10):
            page = await client.v1.positions.get_positions(10001 + n)
            lists.append([(10001 + n, p.instrument_id) for p in page.data])
        await asyncio.gather(*(close(a, i) for batch in lists for a, i in batch))
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def run(name: str) -> tuple[int, int, int]:
    sim = faulty_simulator()
    runner, _ = await serve(sim)
    if name == "sdk":
        cmd = [sys.executable, "-c", SDK_CLIENT, sim.base_url, KEY]
    else:
        state = tempfile.mkdtemp()
        cmd = [sys.executable, "-m", "worker", "run", "--yes", "--base-url", sim.base_url,
               "--concurrency", "32", "--rate-limit", "0", "--request-timeout", "1",
               "--max-attempts", "10", "--state-dir", state, "--log-format", "json"]  # fmt: skip
        for n in range(10):
            cmd += ["--account", str(10001 + n)]
    env = {**os.environ, "LIQUIDATOR_API_KEY": KEY}
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    code = await proc.wait()
    sim.fill_all()
    duplicates, flipped = len(sim.duplicate_closes()), len(sim.flipped_positions())
    await runner.cleanup()
    return code, duplicates, flipped


async def main() -> int:
    print("| client | exit | positions closed twice | positions flipped |")
    print("|---|---:|---:|---:|")
    worst = 0
    for name in ("sdk", "liquidator"):
        code, duplicates, flipped = await run(name)
        print(f"| {name} | {code} | {duplicates} | {flipped} |", flush=True)
        if name == "liquidator":
            worst = duplicates + flipped
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
