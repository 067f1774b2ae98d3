"""The practical floor: one aiohttp session, a semaphore, no retries, no logging.

Lists each account's positions, then closes every one, sending the same requests liquidator
sends by default in the mode it is given: `close_position` (DELETE, the default;
`cancel_orders` cancels the instrument's resting orders in the same request), or
`submit_orders`: first one cancel of the account's resting orders on those instruments per
100 instruments (liquidator's default `cancel_orders`), then a MARKET order on the closing side
for the listed quantity under a client id (one POST per position). Not the least a client
could send: it does not wait for cancelled orders to stop working (the benchmark seeds none),
and one POST could carry several orders.
Usage: floor.py BASE_URL KEY C FIRST N_ACCOUNTS [close_position|submit_orders]
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

import aiohttp


async def main(base: str, key: str, concurrency: int, first: int, accounts: int, via: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:

        async def positions(account: int) -> list[tuple[int, str, str]]:
            async with gate, session.get(f"/v1/accounts/{account}/positions") as resp:
                body = await resp.json()
            return [(account, p["instrument_id"], p["quantity"]) for p in body["data"]]

        async def close(account: int, instrument: str, quantity: str) -> None:
            path = f"/v1/accounts/{account}/positions/{instrument}"
            async with gate, session.delete(path, json={"cancel_orders": True}) as resp:
                await resp.read()
                assert resp.status == 200, resp.status

        async def submit(account: int, instrument: str, quantity: str) -> None:
            signed = Decimal(quantity)
            order = {
                "id": f"floor-{account}-{instrument}",
                "instrument_id": instrument,
                "side": "SELL" if signed > 0 else "BUY",
                "quantity": str(abs(signed)),
                "order_type": "MARKET",
                "time_in_force": "DAY",
            }
            path = f"/v1/accounts/{account}/orders"
            async with gate, session.post(path, json=[order]) as resp:
                await resp.read()
                assert resp.status == 200, resp.status

        async def cancel(batch: list[tuple[int, str, str]]) -> None:
            params = {"instrument_ids": ",".join(instrument for _, instrument, _ in batch)}
            async with (
                gate,
                session.delete(f"/v1/accounts/{batch[0][0]}/orders", params=params) as resp,
            ):
                await resp.read()
                assert resp.status in (200, 404), resp.status  # 404: none to cancel

        send = submit if via == "submit_orders" else close
        lists = await asyncio.gather(*(positions(first + n) for n in range(accounts)))
        if via == "submit_orders":
            # One cancel per account and 100 instruments (a query string's worth), as liquidator.
            chunks = [batch[i : i + 100] for batch in lists for i in range(0, len(batch), 100)]
            await asyncio.gather(*(cancel(chunk) for chunk in chunks))
        await asyncio.gather(*(send(*p) for batch in lists for p in batch))


if __name__ == "__main__":
    base, key, c, first, accounts = sys.argv[1:6]
    via = sys.argv[6] if len(sys.argv) > 6 else "close_position"
    if via not in ("close_position", "submit_orders"):
        sys.exit(f"floor.py: unknown close mode {via!r}")
    asyncio.run(main(base, key, int(c), int(first), int(accounts), via))
