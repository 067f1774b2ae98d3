"""The practical floor: one aiohttp session, a semaphore, no retries, no logging.

Lists each account's positions, then closes every one.
Usage: floor.py BASE_URL KEY C FIRST N_ACCOUNTS
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp


async def main(base: str, key: str, concurrency: int, first: int, accounts: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:

        async def positions(account: int) -> list[tuple[int, str]]:
            async with gate, session.get(f"/v1/accounts/{account}/positions") as resp:
                body = await resp.json()
            return [(account, p["instrument_id"]) for p in body["data"]]

        async def close(account: int, instrument: str) -> None:
            path = f"/v1/accounts/{account}/positions/{instrument}"
            async with gate, session.delete(path, json={"cancel_orders": True}) as resp:
                await resp.read()
                assert resp.status == 200, resp.status

        lists = await asyncio.gather(*(positions(first + n) for n in range(accounts)))
        await asyncio.gather(*(close(a, i) for batch in lists for a, i in batch))


if __name__ == "__main__":
    base, key, c, first, accounts = sys.argv[1:6]
    asyncio.run(main(base, key, int(c), int(first), int(accounts)))
