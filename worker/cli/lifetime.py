"""What a command that talks to the server runs inside: stop requests from signals, and with
--simulate the built-in simulator it talks to instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from pydantic import SecretStr

from worker.inputs.settings import Settings
from worker.inputs.targets import TargetSpec

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.asynccontextmanager
async def stop_on_signals(stop: asyncio.Event) -> AsyncIterator[None]:
    """SIGTERM, SIGINT and SIGHUP each ask for a stop: no new close, the report written, exit 3.
    SIGHUP too: a closed terminal or ssh session must not kill a run between its closes."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def maybe_simulated(
    args: argparse.Namespace, settings: Settings, specs: list[TargetSpec]
) -> AsyncIterator[Settings]:
    """The settings as given; with --simulate, pointed at a simulator started for `specs`."""
    if not args.simulate:
        yield settings
        return
    from worker.cli.simulator import simulator_for  # the simulator only loads for rehearsals

    async with simulator_for(specs, args.market) as (base_url, api_key):
        yield settings.model_copy(update={"base_url": base_url, "api_key": SecretStr(api_key)})
