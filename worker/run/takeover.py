"""A run that takes a job over: the job's orders from every earlier run of it, and the positions
they leave, read at one point before anything is sent.

The rerun (or standby) has waited out the earlier runs' requests (`run.journal_entry`), so no
order of theirs can still appear. It then reads, for each position they sent a close for, the
job's orders at the server (by the client ids of every generation they recorded, and by the order
ids they journaled), and confirms the plan at one point: orders, positions, and those orders that
could still fill again. Where both order reads agree on what filled, the positions read between
them is what those fills left:

    position open    its target is sized from it, and following counts the earlier orders'
                     fills from there (`Target.prior_fills`); they are in its result from the
                     start, so the report lists them with the rerun's own. One that could
                     still fill then and is not adopted at the fan-out sends nothing from
                     this read (`closing.send`): following closes what it left
    position flat    `closed` by the earlier run's orders when they filled (priced like any
                     close), with those orders; `already_flat` when none did

A working order of the job on a position read flat would take it past zero: it is cancelled.
A target with an earlier LIMIT order (CLOSE_STYLE=protected) has had its limit: whatever it left
goes at market, as in one run after its escalation (`Sender.at_market`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from worker.api.client import TradingApi
from worker.api.models import Order, Position
from worker.api.reads import Reader
from worker.closing import target as life
from worker.closing.target import Target
from worker.errors import ApiError, NotFound, Unauthorized
from worker.inputs.targets import TargetSpec
from worker.money import ONE, needs_multiplier
from worker.observe import events
from worker.results import Arrival, TargetResult
from worker.run.journal_entry import Journaled
from worker.run.plan import Plan
from worker.run.takeover_read import Earlier, Key, confirm, wanted_ids


@dataclass(slots=True)
class _Flat:
    """A position read flat with orders of earlier runs: settled once its quote is read."""

    account_id: int
    instrument: str
    instrument_id: str
    symbol: str | None
    earlier: Earlier


@dataclass(slots=True)
class TakenOver:
    """What the takeover read: the earlier orders of the plan's targets, and the positions they
    left flat (settled by `settle`, after the arrival quotes)."""

    earlier: dict[Key, Earlier] = field(default_factory=dict)
    flat: list[_Flat] = field(default_factory=list)
    settled: list[TargetResult] = field(default_factory=list)  # `flat`, once settled

    def instrument_ids(self) -> list[str]:
        """The positions read flat, for the arrival quotes their cost is measured against."""
        return [f.instrument_id for f in self.flat]

    def multiplied_ids(self) -> list[str]:
        """The positions read flat whose cost needs a contract multiplier (an option's)."""
        return [f.instrument_id for f in self.flat if _multiplied(f)]

    def at_market(self, targets: Iterable[Target]) -> list[Target]:
        """The targets whose earlier orders include a LIMIT: their limit was sent, the rest goes
        at market."""
        return [
            t
            for t in targets
            if any(o.order_type == "LIMIT" for o in self._of(t.account_id, t.instrument_id))
        ]

    def _of(self, account_id: int, instrument_id: str) -> list[Order]:
        found = self.earlier.get((account_id, instrument_id.lower()))
        return found.orders if found is not None else []

    def settle(
        self,
        plan: Plan,
        arrivals: Mapping[str, Arrival | None],
        multipliers: Mapping[str, Decimal],
    ) -> None:
        """The positions read flat: `closed` by earlier orders that filled, else already flat.
        Each replaces what the plan said of it (an already-flat named instrument, or an account
        that held nothing). An option's cost uses its multiplier (`multiplied_ids`), None where
        it could not be learned."""
        if not self.flat:
            return
        keys = {(f.account_id, f.instrument_id.lower()) for f in self.flat}
        accounts = {f.account_id for f in self.flat}
        plan.settled[:] = [
            r
            for r in plan.settled
            if (r.account_id, (r.instrument_id or "").lower()) not in keys
            and not (r.account_id in accounts and r.instrument_id is None and r.instrument == "*")
        ]
        for f in self.flat:
            result = TargetResult(
                f.account_id,
                f.instrument,
                f.instrument_id,
                f.symbol,
                side=_held_side(f.earlier.orders),
                arrival=arrivals.get(f.instrument_id.lower()),
                multiplier=multipliers.get(f.instrument_id.lower()) if _multiplied(f) else ONE,
            )
            life.closed_earlier(result, f.earlier.orders, f.earlier.request_id)
            plan.settled.append(result)
            self.settled.append(result)


def _multiplied(flat: _Flat) -> bool:
    """Whether the earlier orders name a type priced through a multiplier; an order that names
    no type (the spec gives one on every order) counts as priced per unit."""
    kind = flat.earlier.instrument_type
    return kind is not None and needs_multiplier(kind)


async def take_over_plan(
    reader: Reader,
    api: TradingApi,
    plan: Plan,
    journaled: Journaled,
    specs: Sequence[TargetSpec],
) -> TakenOver:
    """Read the job's earlier orders and confirm the plan against them (module docstring);
    the plan's targets are re-sized from the confirmed read. Raises `Unauthorized`; an account
    that cannot be read keeps its plan as read (`adoption_skipped`)."""
    taken = TakenOver()
    wanted = wanted_ids(journaled, specs)
    if not wanted:
        return taken
    confirmed = await asyncio.gather(
        *(confirm(reader, account_id, ids) for account_id, ids in wanted.items())
    )
    positions: dict[Key, Position] = {}
    for account_earlier, account_positions in confirmed:
        taken.earlier.update(account_earlier)
        positions.update(account_positions)
    targets: list[Target] = []
    planned = {(t.account_id, t.instrument_id.lower()) for t in plan.targets}
    for t in plan.targets:
        key = (t.account_id, t.instrument_id.lower())
        earlier = taken.earlier.get(key)
        if earlier is None:
            targets.append(t)
            continue
        held = positions.get(key)
        if held is None or held.quantity == 0:
            taken.flat.append(_Flat(t.account_id, t.instrument, t.instrument_id, t.symbol, earlier))
            continue
        targets.append(replace(t, quantity=held.quantity, prior_fills=earlier.fills))
    for key, earlier in taken.earlier.items():
        if key in planned or key in positions:
            continue  # a target, or open and not one (excluded): the plan's to decide
        symbol = next((o.symbol for o in earlier.orders if o.symbol), None)
        named = _named_as(specs, key, symbol)
        if named is not None:
            taken.flat.append(_Flat(key[0], named, key[1], symbol, earlier))
    plan.targets = targets
    await asyncio.gather(*(_cancel_working(reader, api, f) for f in taken.flat))
    return taken


async def _cancel_working(reader: Reader, api: TradingApi, flat: _Flat) -> None:
    """A position read flat: a working order of the job on it would take it past zero."""
    orders = flat.earlier.orders
    for i, order in enumerate(orders):
        if not order.working:
            continue
        try:
            reply = await reader.retried(
                f"cancel order {order.id} of account {flat.account_id}",
                functools.partial(api.cancel_open_order, flat.account_id, order.id),
            )
        except NotFound:  # no longer open
            continue
        except Unauthorized:
            raise
        except ApiError as err:
            events.adoption_skipped(
                account_id=flat.account_id,
                instrument=flat.instrument,
                reason=f"order {order.id} works on a position read flat; its cancel failed: {err}",
                request_id=err.request_id,
            )
            continue
        orders[i] = reply.data
        events.cancel_requested(
            account_id=flat.account_id, instruments=1, orders=1, request_id=reply.request_id
        )


def _named_as(specs: Sequence[TargetSpec], key: Key, symbol: str | None) -> str | None:
    """How the specs name this position (its symbol for a whole account), or None: not theirs."""
    account_id, iid = key
    names = {iid.lower(), *(() if symbol is None else (symbol.upper(),))}
    for spec in specs:
        if spec.account_id != account_id:
            continue
        if spec.instrument is None:
            excluded = {n.lower() for n in spec.exclude} | {n.upper() for n in spec.exclude}
            if not names & excluded:
                return symbol or iid
        elif spec.instrument.lower() in names or spec.instrument.upper() in names:
            return spec.instrument
    return None


def _held_side(orders: Sequence[Order]) -> str | None:
    """The side of the position the orders closed: LONG under sells, SHORT under buys."""
    sides = {o.side.startswith("SELL") for o in orders if o.filled_quantity}
    if len(sides) != 1:
        return None
    return "LONG" if sides.pop() else "SHORT"
