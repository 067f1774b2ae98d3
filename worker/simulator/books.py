"""The books a rehearsal trades against: `--books none|realistic|thin`, `--thin SYMBOL` and a
books file (`--books-file FILE`, TOML) that tunes them. docs/simulator.md has the keys.

    none       no book: fills at the seeded price, and LIMIT orders rest and never fill
    realistic  every instrument a deep book (10 levels of about 1,000 shares, 2 bps apart,
               10 bps spread) refilled a second after it is taken from: marketable limits fill
               at once, a market order pays about half the spread
    thin       every instrument a thin book: about 10 shares a level, 10 bps apart, refilled
               30 s after it is first taken from; a large order walks it far, a limit rests
               for the refill

Everything is checked before the simulator starts: a bad file, key or value is an `InputError`
naming the file and the key (exit 2).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from worker.errors import InputError
from worker.simulator.market import Liquidity, MarketConfig

PRESETS: dict[str, MarketConfig] = {
    "none": MarketConfig(),
    "realistic": MarketConfig(
        spread_bps=10.0, depth=10, level_size=1000, level_step_bps=2.0, refill_s=1.0
    ),
    "thin": MarketConfig(
        spread_bps=30.0, depth=50, level_size=10, level_step_bps=10.0, refill_s=30.0
    ),
}
# The book `--thin` and a file's `thin` give a name: the thin preset's, refill included.
THIN = Liquidity(
    spread_bps=PRESETS["thin"].spread_bps,
    depth=PRESETS["thin"].depth,
    level_size=PRESETS["thin"].level_size,
    level_step_bps=PRESETS["thin"].level_step_bps,
    refill_s=PRESETS["thin"].refill_s,
)
_NUMBERS = {
    "spread_bps": float,
    "depth": int,
    "level_size": int,
    "size_jitter": float,
    "level_step_bps": float,
    "refill_s": float,
    "drift_bps": float,
}
_PER_INSTRUMENT = ("price", "spread_bps", "depth", "level_size", "level_step_bps", "refill_s")


def books(preset: str | None, thin: Iterable[str] = (), path: Path | None = None) -> MarketConfig:
    """The simulator's market: the preset (`--books`, else the file's `preset`, else none), the
    file's keys over it, then every `--thin` name given the thin book."""
    doc = _read(path) if path is not None else {}
    where = str(path)
    name = preset or doc.pop("preset", None) or "none"
    doc.pop("preset", None)
    if name not in PRESETS:
        raise InputError(
            f"{where if preset is None else '--books'}: unknown books {name!r}"
            f" (choose {', '.join(PRESETS)})"
        )
    market = dataclasses.replace(PRESETS[name], instruments={}, halted=set(), quote_age_s={})
    names = [*_symbols(doc.pop("thin", []), f"{where}: thin"), *thin]
    instruments = doc.pop("instruments", {})
    if not isinstance(instruments, dict):
        raise InputError(f"{where}: instruments: expected a table of [instruments.SYMBOL]")
    for key, value in doc.items():
        if key not in _NUMBERS:
            known = ", ".join([*_NUMBERS, "preset", "thin", "instruments"])
            raise InputError(f"{where}: {key}: unknown key (known: {known})")
        setattr(market, key, _number(value, _NUMBERS[key], f"{where}: {key}"))
    for symbol in names:
        market.instruments[symbol.upper()] = dataclasses.replace(THIN)
    for symbol, table in instruments.items():
        market.instruments[symbol.upper()] = _liquidity(
            table, market.instruments.get(symbol.upper()), f"{where}: instruments.{symbol}"
        )
    return market


def describe(market: MarketConfig) -> str:
    """One line for the simulator's banner: what its books are."""
    if market.depth == 0 and not market.instruments:
        return "books: none (fills at the seeded price; LIMIT orders rest: --books realistic)"
    refill = "never" if market.refill_s is None else f"{market.refill_s:g} s"
    line = (
        f"books: {market.depth} levels a side, {market.level_size} shares a level,"
        f" spread {market.spread_bps:g} bps, refill {refill}"
    )
    if market.instruments:
        line += f"; own books: {', '.join(sorted(market.instruments))}"
    return line


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the books file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None


def _symbols(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f'{where}: expected a list of symbols, e.g. ["NVDA"]')
    return list(value)


def _liquidity(table: Any, base: Liquidity | None, where: str) -> Liquidity:
    if not isinstance(table, Mapping):
        raise InputError(f"{where}: expected a table")
    fields: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _PER_INSTRUMENT:
            raise InputError(f"{where}.{key}: unknown key (known: {', '.join(_PER_INSTRUMENT)})")
        if key == "price":
            fields[key] = _price(value, f"{where}.price")
        elif key == "refill_s" and value == "never":
            fields[key] = math.inf
        else:
            fields[key] = _number(value, _NUMBERS[key], f"{where}.{key}")
    return dataclasses.replace(base or Liquidity(), **fields)


def _number(value: Any, kind: type, where: str) -> Any:
    """A non-negative number of `kind` (an int for counts); `refill_s` may be "never"."""
    if where.endswith("refill_s") and value == "never":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: expected a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise InputError(f"{where}: expected a whole number, got {value!r}")
    if value < 0 or (where.endswith("level_size") and value < 1):
        raise InputError(f"{where}: must be {'at least 1' if 'level_size' in where else '>= 0'}")
    if where.endswith("size_jitter") and value > 1:
        raise InputError(f"{where}: must be between 0 and 1")
    return kind(value)


def _price(value: Any, where: str) -> str:
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise InputError(f'{where}: expected a price, e.g. "100.00", got {value!r}') from None
    if isinstance(value, bool) or not price.is_finite() or price <= 0:
        raise InputError(f"{where}: expected a positive price, got {value!r}")
    return str(price)
