"""Rehearsals: `run --simulate` and `liquidator simulator`.

`--simulate` starts the built-in simulator in-process on a free loopback port, seeded so that
every targeted account holds positions (the named instruments among them), and points the run
at it with the simulator's own key. No real API is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import sys
from collections.abc import AsyncIterator, Sequence

from worker.cli.books_flags import thin_names
from worker.errors import InputError
from worker.inputs.targets import TargetSpec, accounts_of
from worker.output.exit_codes import ExitCode
from worker.simulator import SimConfig, Simulator, serve
from worker.simulator.books import books, describe
from worker.simulator.market import MarketConfig

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# An OCC option symbol: root (padded to six with spaces, or not), date, C/P, strike.
_OSI = re.compile(r"^([A-Z]{1,6}) *\d{6}[CP]\d{8}$")
_SYMBOLS = [
    "AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "SPY", "QQQ", "JPM",
    "V", "XOM", "UNH", "HD", "KO", "PEP", "COST", "AMD", "NFLX", "INTC",
]  # fmt: skip
POSITIONS_PER_WHOLE_ACCOUNT = 8
# What config/targets.example.toml names, so that the README's examples work against
# `liquidator simulator` (whose default accounts start at 19816) as they do under `--simulate`.
EXAMPLE_HOLDINGS = [
    TargetSpec(19817, "GOOG"),
    TargetSpec(19817, "TSLA"),
    TargetSpec(19817, "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa"),
    TargetSpec(19818, "NVDA"),
    TargetSpec(19818, "AAPL270115C00200000"),
]


def seed_for_targets(sim: Simulator, specs: Sequence[TargetSpec], seed: int = 11) -> None:
    """Give every targeted account positions: the named ones, or a mixed book."""
    rng = random.Random(seed)
    for account_id in accounts_of(specs):
        sim.add_account(account_id)
        mine = [s for s in specs if s.account_id == account_id]
        held: set[str] = set()
        for spec in mine:
            if spec.instrument is not None and spec.instrument.upper() not in held:
                held.add(spec.instrument.upper())
                _add(sim, rng, account_id, spec.instrument)
        if any(s.instrument is None for s in mine):
            excluded = {n for s in mine for n in s.exclude}
            symbols = [s for s in _SYMBOLS if s not in held]
            rng.shuffle(symbols)
            for symbol in [*symbols[:POSITIONS_PER_WHOLE_ACCOUNT], *sorted(excluded)]:
                _add(sim, rng, account_id, symbol)
            sim.add_position(
                account_id, "AAPL270115C00200000", "5", instrument_type="OPTION", underlying="AAPL"
            )


def _add(sim: Simulator, rng: random.Random, account_id: int, name: str) -> None:
    quantity = rng.choice([1, 1, 1, -1]) * rng.choice([10, 25, 50, 100, 300])
    price = f"{rng.uniform(20, 500):.2f}"
    if _UUID.match(name):
        sim.add_position(
            account_id, f"SIM{name[:4].upper()}", str(quantity), price=price, instrument_id=name
        )
    elif osi := _OSI.match(name.upper()):
        sim.add_position(
            account_id,
            name,
            str(quantity // 10 or 1),
            instrument_type="OPTION",
            price="2.50",
            underlying=osi.group(1),
        )
    else:
        sim.add_position(account_id, name, str(quantity), price=price)


@contextlib.asynccontextmanager
async def simulator_for(
    specs: Sequence[TargetSpec], market: MarketConfig | None = None
) -> AsyncIterator[tuple[str, str]]:
    """Serve a seeded simulator on loopback, trading against `market`'s books (default: none);
    yield (base_url, api_key)."""
    sim = Simulator(SimConfig(fill_delay_s=0.2, record=False, market=market or MarketConfig()))
    seed_for_targets(sim, specs)
    runner, port = await serve(sim, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}", sim.config.api_key
    finally:
        await runner.cleanup()


def serve_forever(args: argparse.Namespace) -> int:
    try:
        market = books(args.books, thin_names(args), args.books_file)
    except InputError as err:
        print(f"liquidator simulator: {err}", file=sys.stderr)
        return int(ExitCode.INVALID)
    config = SimConfig(
        api_key=args.api_key, fill_delay_s=args.fill_delay, record=False, market=market
    )
    if args.latency:
        from worker.simulator import Faults
        from worker.simulator.config import ROUTES

        config.faults = {route: Faults(latency_s=args.latency) for route in ROUTES}
    sim = Simulator(config)
    sim.seed_book(args.accounts, args.positions, first_account_id=args.first_account)
    seeded = range(args.first_account, args.first_account + args.accounts)
    seed_for_targets(sim, [s for s in EXAMPLE_HOLDINGS if s.account_id in seeded])

    async def main() -> None:
        runner, port = await serve(sim, args.host, args.port)
        print(
            f"simulator on http://{args.host}:{port} with {args.accounts} accounts"
            f" ({args.first_account}..{args.first_account + args.accounts - 1}),"
            f" {args.positions} positions each; key: {config.api_key}",
            flush=True,
        )
        print(describe(market), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
