"""The books a rehearsal trades against (`--books`, `--thin`, `--books-file`): presets, the TOML
keys docs/simulator.md shows, errors that name the file and key, and LIMIT orders that fill
against them over real loopback HTTP."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import clean_env, run_cli
from worker.cli.parser import build_parser
from worker.errors import InputError
from worker.simulator import SimClock, SimConfig, Simulator
from worker.simulator.books import PRESETS, books
from worker.simulator.state import instrument_uuid

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = 19816
ORDERS = f"/v1/accounts/{ACCOUNT}/orders"


@pytest.fixture
def sim_config() -> SimConfig:
    # The server's clock stands still until a test moves it: refills come due without sleeping.
    return SimConfig(fill_delay_s=0.5, clock=SimClock(speed=0, start=1_761_917_400.0))


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
        yield session


async def _call(
    session: aiohttp.ClientSession, method: str, path: str, **kw: Any
) -> dict[str, Any]:
    async with session.request(method, path, **kw) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def _limit(client: aiohttp.ClientSession, side: str, quantity: str, price: str) -> str:
    order = {
        "symbol": "AAPL", "side": side, "quantity": quantity, "order_type": "LIMIT",
        "limit_price": price, "time_in_force": "DAY",
    }  # fmt: skip
    body = await _call(client, "POST", ORDERS, json=[order])
    order_id: str = body["data"][0]["id"]
    return order_id


async def _order(client: aiohttp.ClientSession, order_id: str) -> dict[str, Any]:
    order: dict[str, Any] = (await _call(client, "GET", f"{ORDERS}/{order_id}"))["data"]
    return order


def _advance(sim: Simulator, seconds: float) -> None:
    assert isinstance(sim.config.clock, SimClock)
    sim.config.clock.advance(seconds)


def test_the_cli_offers_every_preset() -> None:
    for command in (["simulator"], ["run", "--simulate", "--account", "1"]):
        for name in PRESETS:
            assert build_parser().parse_args([*command, "--books", name]).books == name


def test_the_documented_books_file_is_read_as_documented(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "simulator.md").read_text()
    block = page.split("### Books for a rehearsal", 1)[1].split("```toml", 1)[1].split("```")[0]
    path = tmp_path / "books.toml"
    path.write_text(block)
    market = books(None, ["amd"], path)
    assert (market.depth, market.level_size, market.level_step_bps) == (10, 1000, 2.0)
    assert (market.spread_bps, market.refill_s, market.size_jitter) == (10.0, 1.0, 0.5)
    assert market.instruments["NVDA"].level_size == PRESETS["thin"].level_size  # thin = [..]
    assert market.instruments["AMD"].depth == PRESETS["thin"].depth  # --thin amd
    tsla = market.instruments["TSLA"]
    assert (tsla.depth, tsla.level_size, tsla.spread_bps) == (3, 50, None)
    # --books overrides the file's preset; its keys still tune it.
    assert books("thin", [], path).depth == 10
    assert books("none", [], None).depth == 0


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("depht = 3", "depht: unknown key"),
        ("depth = -1", "depth: must be >= 0"),
        ("depth = 2.5", "depth: expected a whole number"),
        ('preset = "deep"', "unknown books 'deep'"),
        ("level_size = 0", "level_size: must be at least 1"),
        ('thin = "NVDA"', "thin: expected a list of symbols"),
        ('[instruments.NVDA]\nprice = "free"', "instruments.NVDA.price: expected a price"),
        ("[instruments.NVDA]\ndepht = 1", "instruments.NVDA.depht: unknown key"),
        ("depth = ", "not valid TOML"),
    ],
)
def test_a_bad_books_file_names_the_file_and_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "books.toml"
    path.write_text(text + "\n")
    with pytest.raises(InputError) as err:
        books(None, [], path)
    assert str(err.value).startswith(str(path)), err.value
    assert named in str(err.value), err.value


def test_a_name_may_never_refill(tmp_path: Path) -> None:
    path = tmp_path / "books.toml"
    path.write_text('refill_s = "never"\n[instruments.NVDA]\nrefill_s = "never"\n')
    market = books("realistic", [], path)
    assert (market.refill_s, market.instruments["NVDA"].refill_s) == (None, math.inf)


async def test_a_bad_books_file_stops_the_simulator_and_a_run_before_anything_starts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "books.toml"
    path.write_text("depth = -3\n")
    code, out = await run_cli(
        "simulator", "--port", "0", "--books-file", str(path), env=clean_env()
    )
    assert code == 2, out
    assert f"{path}: depth: must be >= 0" in out
    code, out = await run_cli(
        "run", "--simulate", "--dry-run", "--account", "19816", "--books-file", str(path),
        env=clean_env(STATE_DIRECTORY=str(tmp_path)),
    )  # fmt: skip
    assert (code, out.count("depth: must be >= 0")) == (2, 1), out
    code, out = await run_cli(
        "run", "--dry-run", "--account", "19816", "--books", "thin",
        env=clean_env(LIQUIDATOR_API_KEY="sim-key.sim-secret-for-rehearsals"),
    )  # fmt: skip
    assert code == 2, out
    assert "--simulate" in out, out


async def test_with_realistic_books_a_buy_limit_above_the_ask_fills_at_once_at_the_ask(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = books("realistic")
    sim.add_position(ACCOUNT, "AAPL", "-300", price="100.00")
    book = sim.market.book(instrument_uuid("AAPL"), "AAPL")
    ask = book.asks[0]
    assert (book.bids[0].price, ask.price) == (Decimal("99.95"), Decimal("100.05"))
    order_id = await _limit(client, "BUY", "300", "100.10")  # above the ask
    _advance(sim, 0.5)
    done = await _order(client, order_id)
    assert (done["status"], done["filled_quantity"]) == ("FILLED", "300")
    assert Decimal(done["average_fill_price"]) == ask.price  # the best level held them all
    assert sim.position_quantity(ACCOUNT, "AAPL") == 0


async def test_with_thin_books_a_limit_fills_up_to_its_price_and_the_rest_on_the_refill(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.config.market = books(None, ["AAPL"])  # no book elsewhere; AAPL thin
    sim.add_position(ACCOUNT, "AAPL", "100", price="100.00")
    bids = sim.market.book(instrument_uuid("AAPL"), "AAPL").bids
    # A sell down to the third level: the three best levels' shares, at or above its limit.
    within = sum((level.size for level in bids[:3]), Decimal(0))
    assert within < 100
    order_id = await _limit(client, "SELL", "100", str(bids[2].price))
    _advance(sim, 0.5)
    partly = await _order(client, order_id)
    assert (partly["status"], Decimal(partly["filled_quantity"])) == ("PARTIALLY_FILLED", within)
    assert Decimal(partly["average_fill_price"]) >= bids[2].price
    _advance(sim, PRESETS["thin"].refill_s or 0)  # the book is whole again: the rest meets it
    later = await _order(client, order_id)
    assert Decimal(later["filled_quantity"]) > within
    assert Decimal(later["average_fill_price"]) >= bids[2].price  # never below its limit


async def test_a_protected_rehearsal_without_books_is_told_to_take_some(tmp_path: Path) -> None:
    args = ("run", "--simulate", "--dry-run", "--close-style", "protected", "--account", "19816")
    env = clean_env(STATE_DIRECTORY=str(tmp_path), LIQUIDATOR_LOG_FORMAT="json")
    code, out = await run_cli(*args, env=env)
    assert code == 0, out
    assert "LIMIT orders rest and never fill; rehearse the protected style with --books" in out
    code, out = await run_cli(*args, "--books", "realistic", env=env)
    assert code == 0, out
    assert "never fill" not in out
