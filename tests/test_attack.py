"""Attacks on the close_position path and the journal, counted at the server.

Each test is a hostile market or operator; what it asserts is what the server holds.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support import serving
from tests.test_flat import FAST_FOLLOW, seed, the_truth
from worker.runner import ExitCode, RunRequest, run
from worker.simulator import SimConfig, Simulator
from worker.targets import TargetSpec


def _upper_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.upper() if k == "instrument_id" and isinstance(v, str) else _upper_ids(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_upper_ids(v) for v in node]
    return node


async def test_an_instrument_id_spelled_in_upper_case_by_filtered_listings_is_still_followed(
    settings_for: Any, tmp_path: Path
) -> None:
    """UUIDs are case-insensitive: a gateway whose filtered listings spell them in upper case
    (the plan's whole-account listing in lower case) must not make an open position read flat."""
    sim = Simulator(SimConfig(fill_delay_s=0.02, p_partial_fill=1.0))
    keys = seed(sim, 62001, [100])
    [(account, iid)] = keys

    @web.middleware
    async def upper_when_filtered(request: web.Request, handler: Any) -> Any:
        response = await handler(request)
        if "instrument_ids" in request.query and response.status == 200:
            doc = json.loads(response.body)
            return web.json_response(_upper_ids(doc))
        return response

    app = sim.app()
    app.middlewares.append(upper_when_filtered)
    async with serving(app) as base_url:
        settings = settings_for(
            base_url=base_url, api_key=sim.config.api_key, max_residue_closes=1, **FAST_FOLLOW
        )
        report = tmp_path / "r.json"
        result = await run(
            settings, RunRequest(specs=[TargetSpec(account, None)], report_path=report),
            asyncio.Event(),
        )  # fmt: skip
    doc = json.loads(report.read_text())
    # Half filled, then a residue close for the other half (which again fills half): 25 left.
    assert sim.position_quantity(account, iid) == 25
    [r] = doc["results"]
    assert r["outcome"] == "not_flat", r
    assert result.exit_code == ExitCode.FAILED
    the_truth(sim, doc, keys)
