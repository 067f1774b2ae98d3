"""`get_option_contracts`: GET /v1/instruments/options/contracts, in the spec's shape.

The contracts are the options some account holds (or held): each with its OSI symbol's expiry,
type and strike, its underlying and its `multiplier` (100 unless seeded otherwise). Exactly one
identifier, as the spec says: `contract_ids` (at most 100 UUIDs or OSI symbols; one the simulator
does not know is left out) or `underlier` / `underlying_instrument_id`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from aiohttp import web

from worker.simulator.accounts import Page
from worker.simulator.replies import error
from worker.simulator.state import Book, SimAccount, SimPosition, decimal_text, instrument_uuid

MAX_CONTRACT_IDS = 100


class ContractDesk:
    def __init__(self, book: Book, page: Page) -> None:
        self.book = book
        self.page = page  # the listing's paging (`Simulator._list_page`)

    async def contracts(self, request: web.Request, _: SimAccount | None) -> web.Response:
        q = request.query
        ids = [part.strip() for part in q.get("contract_ids", "").split(",") if part.strip()]
        underlier = q.get("underlier") or q.get("underlying_instrument_id")
        if bool(ids) == bool(underlier):
            return error(
                400,
                "Exactly one identifier must be provided: underlier, underlying_instrument_id,"
                " or contract_ids",
            )
        if len(ids) > MAX_CONTRACT_IDS:
            return error(400, f"contract_ids takes at most {MAX_CONTRACT_IDS} values")
        if ids:
            wanted = {_key(i) for i in ids}
            found = [p for p in self._held() if {_key(p.instrument_id), _key(p.symbol)} & wanted]
        else:
            assert underlier is not None
            names = {_key(underlier), _key(instrument_uuid(underlier))}
            found = [p for p in self._held() if p.underlying and _key(p.underlying) in names]
        return self.page(request, [contract(p) for p in found])

    def _held(self) -> list[SimPosition]:
        """Every option contract an account holds (flat too), once each."""
        found: dict[str, SimPosition] = {}
        for account in self.book.accounts.values():
            for p in account.positions.values():
                if p.instrument_type == "OPTION":
                    found.setdefault(p.instrument_id.lower(), p)
        return list(found.values())


def contract(p: SimPosition) -> dict[str, Any]:
    """The spec's OptionsContract for a held option (an OSI symbol's fields where it has them)."""
    osi = "".join(p.symbol.split())
    expiry, kind, strike = None, "CALL", Decimal(0)
    if len(osi) >= 15 and osi[-15:-9].isdigit() and osi[-9] in "CP" and osi[-8:].isdigit():
        yymmdd = osi[-15:-9]
        expiry = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])).isoformat()
        kind = "CALL" if osi[-9] == "C" else "PUT"
        strike = Decimal(osi[-8:]) / 1000
    return {
        "id": p.instrument_id,
        "symbol": p.symbol,
        "currency": "USD",
        "exchange": "BATO",
        "expiry": expiry or "2027-01-15",
        "contract_type": kind,
        "strike_price": decimal_text(strike),
        "multiplier": decimal_text(p.multiplier),
        "exercise_style": "AMERICAN",
        "listing_type": "STANDARD",
        "is_liquidation_only": False,
        "is_marginable": True,
        "is_tradable": True,
        "underlying_instrument_id": p.underlying,
    }


def _key(name: str) -> str:
    """A UUID or symbol as compared: case-insensitive, an OSI symbol's padding ignored."""
    return "".join(name.split()).upper()
