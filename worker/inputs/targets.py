"""Read what to close: targets files (TOML or CSV) and the --account / --position options.

Everything is checked before any request is sent; a problem raises `InputError` naming the file
and the line or key. A spec names a whole account (instrument None) or one instrument in it.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import InputError

WHOLE_ACCOUNT = "*"
_ACCOUNT_KEYS = {"id", "instruments", "exclude", "cancel_orders"}
# What an instrument name can hold: an equity symbol (BRK.B, BRK/B, BF-B), an OSI option symbol
# (its root padded with spaces) or a UUID. ASCII only: a lookalike letter (Cyrillic 'А') or a
# full-width digit would match nothing at the server, and in `exclude` protect nothing.
_INSTRUMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9./ -]{0,63}")


@dataclass(frozen=True, slots=True)
class TargetSpec:
    account_id: int
    instrument: str | None  # None: every open position in the account
    exclude: frozenset[str] = field(default_factory=frozenset)
    # Cancel the instrument's resting orders first, so none can fill after the close.
    cancel_orders: bool = True
    source: str = ""  # where it was named, for messages: "targets.toml: accounts[2]"


def read_targets(
    files: Sequence[Path], accounts: Sequence[str] = (), positions: Sequence[str] = ()
) -> list[TargetSpec]:
    specs: list[TargetSpec] = []
    for path in files:
        specs.extend(read_targets_file(path))
    for raw in accounts:
        specs.append(TargetSpec(_account_id(raw, f"--account {raw}"), None, source="--account"))
    for raw in positions:
        account, sep, instrument = raw.partition(":")
        where = f"--position {raw}"
        if not sep or not instrument.strip():
            raise InputError(f"{where}: expected ACCOUNT:INSTRUMENT, e.g. 19816:GOOG")
        name = instrument.strip()
        specs.append(
            TargetSpec(
                _account_id(account, where),
                None if name == WHOLE_ACCOUNT else _instrument_name(name, where),
                source="--position",
            )
        )
    if not specs:
        raise InputError("no targets: give --targets FILE, --account ID or --position ACCT:INSTR")
    return specs


def read_targets_file(path: Path) -> list[TargetSpec]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the targets file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    if not text.strip():
        raise InputError(f"{path}: the targets file is empty")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return _from_toml(path, text)
    if suffix == ".csv":
        return _from_csv(path, text)
    raise InputError(f"{path}: unknown targets format '{suffix}' (use .toml or .csv)")


def _from_toml(path: Path, text: str) -> list[TargetSpec]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"accounts"}
    if unknown:
        raise InputError(f"{path}: unknown key '{sorted(unknown)[0]}' (expected [[accounts]])")
    tables = doc.get("accounts")
    if not isinstance(tables, list) or not tables:
        raise InputError(f"{path}: no [[accounts]] tables")
    specs: list[TargetSpec] = []
    for n, table in enumerate(tables, start=1):
        where = f"{path}: accounts[{n}]"
        if not isinstance(table, dict):
            raise InputError(f"{where}: expected a table")
        extra = set(table) - _ACCOUNT_KEYS
        if extra:
            raise InputError(f"{where}: unknown key '{sorted(extra)[0]}'")
        if "id" not in table:
            raise InputError(f"{where}: missing key 'id'")
        account_id = _account_id(table["id"], f"{where}.id")
        cancel = table.get("cancel_orders", True)
        if not isinstance(cancel, bool):
            raise InputError(f"{where}.cancel_orders: expected true or false")
        exclude = frozenset(_names(table.get("exclude", []), f"{where}.exclude"))
        instruments = _names(table.get("instruments", []), f"{where}.instruments")
        if "instruments" in table and not instruments:
            # A generated file with nothing in it must not flatten the whole account.
            raise InputError(
                f"{where}.instruments: the list is empty; name the instruments, or leave the"
                " key out to close every position in the account"
            )
        if instruments and exclude:
            raise InputError(f"{where}: 'exclude' applies only to a whole account (no instruments)")
        if not instruments:
            specs.append(TargetSpec(account_id, None, exclude, cancel, where))
        specs.extend(
            TargetSpec(account_id, name, frozenset(), cancel, where) for name in instruments
        )
    return specs


def _from_csv(path: Path, text: str) -> list[TargetSpec]:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header] != ["account_id", "instrument"]:
        raise InputError(f"{path}:1: expected the header 'account_id,instrument'")
    specs: list[TargetSpec] = []
    for row in rows:
        line = rows.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) != 2:
            raise InputError(f"{where}: expected 2 columns (account_id,instrument), got {len(row)}")
        account_id = _account_id(row[0].strip(), f"{where}: account_id")
        name = row[1].strip()
        if not name:
            raise InputError(f"{where}: instrument is empty (use * for the whole account)")
        instrument = (
            None if name == WHOLE_ACCOUNT else _instrument_name(name, f"{where}: instrument")
        )
        specs.append(TargetSpec(account_id, instrument, source=where))
    if not specs:
        raise InputError(f"{path}: no target rows after the header")
    return specs


def _account_id(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{where}: account id must be a positive integer, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
        # ASCII digits only: str.isdigit() also takes '²' (int() then fails) and full-width
        # digits (which int() reads as if they were ASCII).
        if not (value.isascii() and value.isdigit()):
            raise InputError(f"{where}: account id must be a positive integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int) or value <= 0 or value >= 2**63:
        raise InputError(f"{where}: account id must be a positive integer, got {value!r}")
    return value


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a list of instrument names")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or item.strip() == WHOLE_ACCOUNT:
            raise InputError(f"{where}: {item!r} is not a symbol or instrument UUID")
        names.append(_instrument_name(item.strip(), where))
    return names


def _instrument_name(name: str, where: str) -> str:
    """`name`, if it can be a symbol, an OSI symbol or a UUID; else the entry is refused."""
    if _INSTRUMENT_NAME.fullmatch(name) is None:
        raise InputError(
            f"{where}: {name!r} is not a symbol, OSI symbol or instrument UUID (ASCII letters,"
            " digits, '.', '/', '-' and spaces)"
        )
    return name


def accounts_of(specs: Iterable[TargetSpec]) -> list[int]:
    """Accounts in the order first named."""
    return list(dict.fromkeys(spec.account_id for spec in specs))
