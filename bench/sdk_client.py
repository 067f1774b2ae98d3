"""What a user would write with the official SDK: AsyncClearStreet and a semaphore.

Lists each account's positions, then closes every one. Usage: sdk_client.py BASE_URL KEY C FIRST N
"""

from __future__ import annotations

import asyncio
import sys

from clearstreet import AsyncClearStreet


async def main(base: str, key: str, concurrency: int, first: int, accounts: int) -> None:
    gate = asyncio.Semaphore(concurrency)
    async with AsyncClearStreet(api_key=key, base_url=base) as client:

        async def positions(account: int) -> list[tuple[int, str]]:
            async with gate:
                page = await client.v1.positions.get_positions(account)
            return [(account, p.instrument_id) for p in page.data]

        async def close(account: int, instrument: str) -> None:
            async with gate:
                await client.v1.positions.close_position(
                    instrument, account_id=account, cancel_orders=True
                )

        lists = await asyncio.gather(*(positions(first + n) for n in range(accounts)))
        await asyncio.gather(*(close(a, i) for batch in lists for a, i in batch))


if __name__ == "__main__":
    base, key, c, first, accounts = sys.argv[1:6]
    asyncio.run(main(base, key, int(c), int(first), int(accounts)))
