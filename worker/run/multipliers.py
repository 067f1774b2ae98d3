"""Contract multipliers: what each planned option's quantity is worth per unit of its price.

Read from `GET /v1/instruments/options/contracts` (`OptionsContract.multiplier`), only for the
targets whose instrument type is not priced per unit (`worker.money.needs_multiplier`), by UUID,
`CONTRACTS_BATCH` to a request: N such instruments cost ceil(N / 100) requests, and an account of
stocks costs none. A contract the reply leaves out, or a batch that fails, leaves its targets'
multiplier unknown (None): the guards hold them (`worker.closing.guards`), never a guessed 100.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from decimal import Decimal

from worker.api.client import CONTRACTS_BATCH
from worker.api.reads import Reader
from worker.closing.target import Target
from worker.errors import ApiError, Unauthorized
from worker.money import needs_multiplier
from worker.observe import events


async def read_multipliers(
    reader: Reader, targets: Sequence[Target], also: Sequence[str] = ()
) -> dict[str, Decimal]:
    """The multiplier of each multiplied instrument among `targets` and of the instruments
    `also` names (already known to be multiplied), by UUID (lower case); an instrument left
    out could not be learned."""
    planned = (t.instrument_id for t in targets if needs_multiplier(t.instrument_type))
    wanted = list(dict.fromkeys(iid.lower() for iid in (*planned, *also)))
    batches = [wanted[i : i + CONTRACTS_BATCH] for i in range(0, len(wanted), CONTRACTS_BATCH)]
    found: dict[str, Decimal] = {}

    async def one(batch: list[str]) -> None:
        try:
            reply = await reader.option_contracts(batch)
        except Unauthorized:
            raise
        except ApiError as err:
            events.multipliers_unavailable(instruments=len(batch), error=str(err))
            return
        asked = set(batch)
        for contract in reply.data:
            if contract.id.lower() in asked and contract.multiplier > 0:
                found[contract.id.lower()] = contract.multiplier

    await asyncio.gather(*(one(b) for b in batches))
    return found


def with_multipliers(targets: Sequence[Target], multipliers: dict[str, Decimal]) -> list[Target]:
    """The targets, each multiplied instrument with its multiplier (None: not learned)."""
    return [
        dataclasses.replace(t, multiplier=multipliers.get(t.instrument_id.lower()))
        if needs_multiplier(t.instrument_type)
        else t
        for t in targets
    ]
