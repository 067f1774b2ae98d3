"""Two hosts on one PostgreSQL journal reach one API through two URLs (docs/journal.md).

Each host's base URL is a different loopback forwarding proxy (another port, one of them under a
path) in front of the same simulator. Started at once, they are one job: one flattens, the
other waits for the journal's lock and then finds nothing left to close. Counted at the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support import FAST_FOLLOW, seed_accounts, serving, the_truth
from worker.inputs.targets import TargetSpec
from worker.run.runner import ExitCode, RunRequest, run
from worker.simulator import SimConfig, Simulator

BOTH = [TargetSpec(20001, None), TargetSpec(20002, None)]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@contextlib.asynccontextmanager
async def forwarding_proxy(upstream: str, prefix: str = "") -> AsyncIterator[str]:
    """A proxy on its own loopback port that sends every request under `prefix` on to
    `upstream` as it came (method, path, query, headers, body); yields its base URL."""
    forwarded: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        path = request.rel_url.path.removeprefix(prefix)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        forwarded.append(f"{request.method} {path}")
        async with session.request(
            request.method,
            upstream + path,
            params=request.rel_url.query,
            headers=headers,
            data=await request.read(),
        ) as reply:
            body = await reply.read()
            kept = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=reply.status, body=body, headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    async with aiohttp.ClientSession() as session, serving(app) as base_url:
        yield f"{base_url}{prefix}/"


@pytest.mark.parametrize("close_via", ["close_position", "submit_orders"])
async def test_two_hosts_reaching_one_api_through_two_proxies_close_each_position_once(
    close_via: str, settings_for: Any, pg_url: str
) -> None:
    sim = Simulator(SimConfig(fill_delay_s=0.05))
    positions = seed_accounts(sim, 2, 15)
    async with (
        serving(sim.app()) as api,
        forwarding_proxy(api) as via_a,
        forwarding_proxy(api, prefix="/gateway") as via_b,
    ):
        assert via_a.split(":")[2] != via_b.split(":")[2]  # two ports, two spellings
        hosts = [
            settings_for(
                base_url=url,
                api_key=sim.config.api_key,
                journal_url=pg_url,
                close_via=close_via,
                lock_wait=30.0,  # the second host stands by until the first is done
                **FAST_FOLLOW,
            )
            for url in (via_a, via_b)
        ]
        results = await asyncio.wait_for(
            asyncio.gather(*(run(h, RunRequest(specs=BOTH), asyncio.Event()) for h in hosts)), 60
        )
    assert [r.exit_code for r in results] == [ExitCode.OK, ExitCode.OK], results
    # Market style: exactly one closing order per position at the server, none past zero.
    the_truth(sim, None, positions, one_order=True, flat=True)
    if close_via == "close_position":
        assert sim.stats.by_route["close"] == len(positions)
    # One host closed everything; the other, one job with it, found nothing open.
    sent = sorted(sum(len(t.orders) for t in r.results) for r in results)
    assert sent == [0, len(positions)]


async def test_two_hosts_reaching_one_api_through_two_proxies_protect_each_position_once(
    settings_for: Any, pg_url: str
) -> None:
    """The protected style: the limits rest to their deadline (no book fills them) and go at
    market, all from one host; the other finds the job done."""
    sim = Simulator(SimConfig(fill_delay_s=0.05))
    positions = seed_accounts(sim, 2, 15)
    async with (
        serving(sim.app()) as api,
        forwarding_proxy(api) as via_a,
        forwarding_proxy(api, prefix="/gateway") as via_b,
    ):
        hosts = [
            settings_for(
                base_url=url,
                api_key=sim.config.api_key,
                journal_url=pg_url,
                close_via="submit_orders",
                close_style="protected",
                reprice_s=0.1,
                deadline_s=0.5,
                lock_wait=30.0,
                **FAST_FOLLOW,
            )
            for url in (via_a, via_b)
        ]
        results = await asyncio.wait_for(
            asyncio.gather(*(run(h, RunRequest(specs=BOTH), asyncio.Event()) for h in hosts)), 60
        )
    assert [r.exit_code for r in results] == [ExitCode.OK, ExitCode.OK], results
    the_truth(sim, None, positions, flat=True)
    # One LIMIT per position and, where it did not fill, one MARKET rest: never a second pair.
    for account, iid in positions:
        types = sorted(o["order_type"] for o in sim.closing_orders(account, iid))
        assert types in (["LIMIT"], ["LIMIT", "MARKET"]), (account, iid, types)
    assert sim.most_working_closes() == 1
    assert sim.crossed_zero() == []
    sent = sorted(sum(len(t.orders) for t in r.results) for r in results)
    assert sent[0] == 0, sent
