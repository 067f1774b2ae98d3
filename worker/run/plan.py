"""Turn target specs into the positions to close: list each account once, resolve, deduplicate.

Instruments are resolved to their UUID against the account's positions (an OSI symbol with or
without its padding), and a position named twice is closed once. A named instrument the account
does not hold is `already_flat` when the account held it: listed with quantity 0, or closed by an
earlier run of today's job (the journal's `held_earlier`); otherwise, once the API knows it, it is
`not_held`, naming what the account holds on it (an option on a named underlying). An `exclude`
the API does not know refuses the run: it never closes a position it was told to keep.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from worker.api.models import Position
from worker.api.reads import Reader
from worker.closing import target as life
from worker.closing.schedule import StyleCost
from worker.closing.schedule import cost_line as cost_line  # re-exported for cli/
from worker.closing.target import Target
from worker.errors import ApiError, NotFound, Unauthorized
from worker.inputs.targets import WHOLE_ACCOUNT, TargetSpec, accounts_of
from worker.results import TargetResult
from worker.run.not_held import compact, known_but_not_held


@dataclass(slots=True)
class Plan:
    targets: list[Target] = field(default_factory=list)
    settled: list[TargetResult] = field(default_factory=list)  # ended without a close
    # --at-close: where the day stands against the market-on-close cutoff (for the plan shown).
    moc_cutoff: str | None = None
    # CLOSE_STYLE=protected: how its closes are priced (for the plan shown); None: market.
    close_style: str | None = None
    # Entries that could mean something other than what they say (an unknown `exclude`): the
    # run is refused, nothing sent. Each names the file and key.
    refusals: list[str] = field(default_factory=list)
    # Named instruments the API does not know (typos), each naming its file and key: `run`
    # fails their targets and closes the rest; `status` and `cancel` refuse (their scope would
    # not be what the file meant).
    unknown: list[str] = field(default_factory=list)
    # Held back by a guard (also in `settled`, outcome `guarded`): shown before the prompt.
    guarded: list[TargetResult] = field(default_factory=list)
    # What closing it costs in requests at RATE_LIMIT, per style (`worker.closing.schedule`).
    costs: list[StyleCost] = field(default_factory=list)


async def make_plan(
    reader: Reader, specs: Sequence[TargetSpec], held_earlier: Collection[tuple[int, str]] = ()
) -> Plan:
    """`held_earlier`: (account, instrument UUID in lower case) that earlier runs of today's job
    sent a close for (the journal's priors): not held now, they are `already_flat`."""
    by_account: dict[int, list[TargetSpec]] = {a: [] for a in accounts_of(specs)}
    for spec in specs:
        by_account[spec.account_id].append(spec)
    # Each account is resolved as soon as it is listed, so its positions are not all held at once.
    plans = await asyncio.gather(
        *(_plan_account(reader, a, s, held_earlier) for a, s in by_account.items())
    )
    plan = Plan()
    for part in plans:  # in the order the accounts were first named
        plan.targets.extend(part.targets)
        plan.settled.extend(part.settled)
        plan.refusals.extend(part.refusals)
        plan.unknown.extend(part.unknown)
    return plan


async def _plan_account(
    reader: Reader,
    account_id: int,
    specs: list[TargetSpec],
    held_earlier: Collection[tuple[int, str]],
) -> Plan:
    try:
        positions, _ = await reader.positions(account_id)
    except Unauthorized:
        raise
    except ApiError as err:
        return Plan(settled=_unreadable(account_id, specs, err))
    try:
        refusals = await _unknown_excludes(reader, account_id, specs, positions)
    except Unauthorized:
        raise
    except ApiError as err:
        why = f"an 'exclude' entry could not be checked: {err}"
        return Plan(settled=_unreadable(account_id, specs, err, why))
    if refusals:
        return Plan(refusals=refusals)
    plan = Plan()
    chosen: dict[tuple[int, str], Target] = {}
    not_held = _resolve_account(account_id, specs, positions, chosen, plan)
    plan.targets = list(chosen.values())
    known = await asyncio.gather(
        *(known_but_not_held(reader, r, positions, held_earlier) for r in not_held)
    )
    plan.settled.extend(not_held)
    plan.unknown = [
        f"{_source_of(specs, r.instrument, account_id)}: {r.instrument!r} names no instrument"
        f" (account {account_id} does not hold it and the API does not know it)"
        for r, k in zip(not_held, known, strict=True)
        if not k
    ]
    return plan


def _source_of(specs: Sequence[TargetSpec], name: str, account_id: int) -> str:
    """Where `name` was first named: the file and key (or line), or the flag."""
    for spec in specs:
        if spec.instrument is not None and spec.instrument.upper() == name.upper():
            # A TOML table ("t.toml: accounts[2]") is named with its key; a CSV line is whole.
            return spec.source + ".instruments" if spec.source.endswith("]") else spec.source
    return f"account {account_id}"


async def _unknown_excludes(
    reader: Reader, account_id: int, specs: Sequence[TargetSpec], positions: Sequence[Position]
) -> list[str]:
    """What each `exclude` entry the account's listing does not show names: a refusal for each
    one the API does not know either. Raises the `ApiError` of a look-up that did not answer."""
    listed = {p.symbol.upper() for p in positions} | {p.instrument_id.lower() for p in positions}
    unmatched: dict[str, TargetSpec] = {}
    for spec in specs:
        for name in sorted(spec.exclude):
            if name.upper() not in listed and name.lower() not in listed:
                unmatched.setdefault(name, spec)

    async def refusal(name: str, spec: TargetSpec) -> str | None:
        try:
            await reader.instrument(name)
        except NotFound:
            return (
                f"{spec.source or f'account {account_id}'}.exclude: {name!r} names no"
                f" instrument (account {account_id} does not hold it and the API does not know"
                " it), so it would keep nothing open; correct it or remove it"
            )
        return None

    found = await asyncio.gather(*(refusal(n, s) for n, s in unmatched.items()))
    return [r for r in found if r is not None]


def _resolve_account(
    account_id: int,
    specs: Sequence[TargetSpec],
    positions: Sequence[Position],
    chosen: dict[tuple[int, str], Target],
    plan: Plan,
) -> list[TargetResult]:
    """Choose the targets; settle what a whole account holds flat. Return the named instruments
    the account does not hold, for `known_but_not_held` to tell a flat one from a typo."""
    open_positions = [p for p in positions if p.quantity != 0]
    not_held: list[TargetResult] = []
    by_name: dict[str, Position] = {}
    listed_flat: dict[str, Position] = {}  # held, and listed with quantity 0
    for p in positions:
        names = by_name if p.quantity != 0 else listed_flat
        names[p.instrument_id.lower()] = p
        names.setdefault(compact(p.symbol), p)
    flat_named: set[str] = set()
    whole_account_closes: bool | None = None  # None: no whole-account entry with positions
    for spec in specs:
        if spec.instrument is None:
            _flat_of_whole_account(account_id, positions, flat_named, plan)
            excluded = {n.upper() for n in spec.exclude} | {n.lower() for n in spec.exclude}
            for p in open_positions:
                if p.symbol.upper() in excluded or p.instrument_id.lower() in excluded:
                    continue
                _choose(chosen, _target(p, p.symbol, spec.cancel_orders))
                whole_account_closes = True
            if open_positions and not whole_account_closes:
                whole_account_closes = False
            continue
        found = by_name.get(spec.instrument.lower()) or by_name.get(compact(spec.instrument))
        if found is None:
            if spec.instrument.upper() not in flat_named:
                flat_named.add(spec.instrument.upper())
                result = TargetResult(account_id, spec.instrument)
                flat = listed_flat.get(spec.instrument.lower())
                flat = flat or listed_flat.get(compact(spec.instrument))
                if flat is None:
                    not_held.append(result)
                    continue
                why = "listed flat (quantity 0): held, and closed"
                life.planned_flat(result, why, instrument_id=flat.instrument_id, symbol=flat.symbol)
                plan.settled.append(result)
            continue
        _choose(chosen, _target(found, spec.instrument, spec.cancel_orders))
    if whole_account_closes is False:
        _all_excluded(account_id, plan)
    return not_held


def _flat_of_whole_account(
    account_id: int, positions: Sequence[Position], flat_named: set[str], plan: Plan
) -> None:
    """A whole account's flat positions are already flat, and so is an account that holds none:
    a rerun after a run that closed everything reports them so, not as "nothing was planned"."""
    if WHOLE_ACCOUNT in flat_named:
        return
    flat_named.add(WHOLE_ACCOUNT)
    for p in positions:
        if p.quantity != 0 or {p.symbol.upper(), p.instrument_id.upper()} & flat_named:
            continue
        flat_named |= {p.symbol.upper(), p.instrument_id.upper()}
        result = TargetResult(account_id, p.symbol, p.instrument_id, p.symbol)
        life.planned_flat(result)
        plan.settled.append(result)
    if not positions:
        result = TargetResult(account_id, WHOLE_ACCOUNT)
        life.planned_flat(result)
        plan.settled.append(result)


def _all_excluded(account_id: int, plan: Plan) -> None:
    """A whole account whose every open position is excluded: the target (the account less its
    exclusions) holds nothing to close, so it is `already_flat` with nothing sent, and it shows
    in the results like any other target instead of vanishing from them."""
    result = TargetResult(account_id, WHOLE_ACCOUNT)
    life.planned_flat(result, "every open position in the account is excluded: nothing to close")
    plan.settled.append(result)


def _choose(chosen: dict[tuple[int, str], Target], target: Target) -> None:
    key = (target.account_id, target.instrument_id)
    earlier = chosen.get(key)
    if earlier is None:
        chosen[key] = target
    elif target.cancel_orders and not earlier.cancel_orders:
        # Named twice with different wishes: cancelling resting orders is the safe one.
        chosen[key] = dataclasses.replace(earlier, cancel_orders=True)


def _target(p: Position, named_as: str, cancel_orders: bool) -> Target:
    return Target(
        account_id=p.account_id,
        instrument=named_as,
        instrument_id=p.instrument_id,
        symbol=p.symbol,
        instrument_type=p.instrument_type,
        quantity=p.quantity,
        market_value=p.market_value,
        cancel_orders=cancel_orders,
    )


def _unreadable(
    account_id: int, specs: Sequence[TargetSpec], err: ApiError, why: str | None = None
) -> list[TargetResult]:
    """An account that could not be listed (or checked): one failed result per named target,
    '*' for all."""
    names = list(dict.fromkeys(s.instrument or WHOLE_ACCOUNT for s in specs))
    failed = [TargetResult(account_id, name) for name in names]
    for result in failed:
        life.unreadable(result, err, why)
    return failed
