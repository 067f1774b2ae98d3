"""A named instrument its account does not list: already flat (closed by an earlier run of the
job), `not_held` (naming what the account holds on it: an option on a named underlying), or a
typo (`failed`). One instrument look-up each; nothing sent.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from worker.api.models import Instrument, Position
from worker.api.reads import Reader
from worker.closing import target as life
from worker.errors import ApiError, NotFound, Unauthorized
from worker.results import TargetResult


async def known_but_not_held(
    reader: Reader,
    result: TargetResult,
    positions: Sequence[Position],
    held_earlier: Collection[tuple[int, str]],
) -> bool:
    """A named instrument the account does not list: closed by an earlier run of the job
    (already flat), not held, or a typo (False: the API does not know it)."""
    try:
        reply = await reader.instrument(result.instrument)
    except NotFound as err:
        life.unknown_instrument(result, err)
        return False
    except Unauthorized:
        raise
    except ApiError as err:
        life.failed(result, f"not held, and the instrument could not be checked: {err}", err)
        return True
    found = reply.data
    if (result.account_id, found.id.lower()) in held_earlier:
        life.planned_flat(
            result,
            "flat: an earlier run of today's job closed it",
            request_id=reply.request_id,
            instrument_id=found.id,
            symbol=found.symbol,
        )
        return True
    life.not_held(
        result,
        not_held_why(result.account_id, found, positions),
        request_id=reply.request_id,
        instrument_id=found.id,
        symbol=found.symbol,
    )
    return True


_OSI = re.compile(r"^([A-Z0-9.]{1,6}) *\d{6}[CP]\d{8}$")  # root, yymmdd, C/P, strike x 1000
HOLDINGS_NAMED = 5  # of what the account holds on an underlying, named in the reason


def not_held_why(account_id: int, instrument: Instrument, positions: Sequence[Position]) -> str:
    """What a `not_held` target says: the account's open positions on the named instrument
    (options whose underlying it is, by `underlying_instrument_id` or OSI root), if any."""
    name = instrument.symbol.upper()
    on_it = [
        p
        for p in positions
        if p.quantity != 0
        and (
            (p.underlying_instrument_id or "").lower() == instrument.id.lower()
            or _osi_root(p.symbol) == name
        )
    ]
    if not on_it:
        return f"not held; account {account_id} holds nothing in or on {instrument.symbol}"
    shown = ", ".join(
        f"{' '.join(p.symbol.split())} ({p.quantity})" for p in on_it[:HOLDINGS_NAMED]
    )
    more = len(on_it) - HOLDINGS_NAMED
    return f"not held; the account holds {shown}" + (f" and {more} more" if more > 0 else "")


def _osi_root(symbol: str) -> str | None:
    match = _OSI.match(symbol.upper())
    return None if match is None else match.group(1)


def compact(name: str) -> str:
    """A symbol as compared: upper case, an OSI symbol's padding dropped."""
    return "".join(name.split()).upper()
