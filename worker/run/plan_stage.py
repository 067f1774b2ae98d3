"""The plan stage: what earlier runs of today's job closed, the positions read and resolved
(`worker.run.plan`), a takeover's plan confirmed against the job's earlier orders, the
MAX_POSITIONS ceiling, the arrival quotes, the options' multipliers and the guards, then the
plan's request cost; told as `plan_ready` and shown to the watcher. Each step may end the run,
nothing sent."""

from __future__ import annotations

import asyncio

from worker.closing.schedule import StyleCost, plan_costs
from worker.closing.waves import waves_cost
from worker.errors import InputError, JournalError
from worker.inputs.settings import Settings
from worker.observe import events
from worker.results import Outcome
from worker.run.close_style import collar_of, style_line, waves_of
from worker.run.ended import Ended, aborted, unplanned
from worker.run.journal_entry import Journaled, held_earlier
from worker.run.multipliers import read_multipliers, with_multipliers
from worker.run.plan import Plan, make_plan
from worker.run.preflight import Ready
from worker.run.prices import apply_guards, guards_of, priced, read_quotes
from worker.run.scope import RunScope
from worker.run.stops import until_stopped
from worker.run.takeover import TakenOver, take_over_plan


async def plan_stage(
    run: RunScope, ready: Ready, journaled: Journaled | None
) -> tuple[Plan, TakenOver] | Ended:
    """The plan and what a takeover found; raises `InputError` above the MAX_POSITIONS ceiling
    without --force."""
    specs = run.request.specs
    try:  # what earlier runs of today's job closed: not held now, those are already flat
        closed_earlier = await held_earlier(run.settings, journaled, ready)
    except JournalError as err:  # nothing was sent
        return aborted(str(err), unplanned(specs, f"not sent: {err}"))
    # Reads only, retried up to MAX_ATTEMPTS times REQUEST_TIMEOUT: a stop ends them at once.
    plan = await until_stopped(make_plan(run.reader, specs, closed_earlier), run.stop)
    if plan is None:
        return _stopped(run)
    if plan.refusals:
        why = "; ".join(plan.refusals) + "; nothing was sent"
        return aborted(why, unplanned(specs, why), refused=True)
    taken = await _taken_over(run, plan, journaled)
    if taken is None:
        return _stopped(run)
    plan.moc_cutoff = ready.cutoff_line()
    plan.close_style = style_line(run.settings)
    _within_ceiling(run, plan)
    if (plan.targets or taken.flat) and not await _priced_and_guarded(run, ready, plan, taken):
        return _stopped(run)
    plan.costs = costs_of(run.settings, plan, ready)
    _tell(run.settings, plan)
    run.request.watcher.show_plan(plan)
    return plan, taken


def _stopped(run: RunScope) -> Ended:
    return aborted("stop requested", unplanned(run.request.specs, "run stopped before any close"))


async def _taken_over(run: RunScope, plan: Plan, journaled: Journaled | None) -> TakenOver | None:
    """A takeover: the job's earlier orders read, and the plan confirmed against them. None:
    a stop came first."""
    if journaled is None or not journaled.priors:
        return TakenOver()
    call = take_over_plan(run.reader, run.api, plan, journaled, run.request.specs)
    return await until_stopped(call, run.stop)


def _within_ceiling(run: RunScope, plan: Plan) -> None:
    ceiling = run.settings.max_positions
    above = ceiling is not None and len(plan.targets) > ceiling
    if above and not run.request.max_positions_override:
        raise InputError(
            f"the targets resolve to {len(plan.targets)} positions, above max_positions"
            f" ({ceiling}); re-run with --force to close them all"
        )


async def _priced_and_guarded(run: RunScope, ready: Ready, plan: Plan, taken: TakenOver) -> bool:
    """The arrival quotes and the options' multipliers, before the first close; the guards
    hold back blind orders. False: a stop came first."""
    ids = [t.instrument_id for t in plan.targets] + taken.instrument_ids()
    reads = asyncio.gather(
        read_quotes(run.reader, ids, ready.server_now),
        read_multipliers(run.reader, plan.targets, taken.multiplied_ids()),
    )
    read = await until_stopped(reads, run.stop)
    if read is None:
        return False
    quotes, multipliers = read
    plan.targets, plan.guarded = apply_guards(
        priced(with_multipliers(plan.targets, multipliers), quotes),
        quotes,
        guards_of(run.settings),
        force=run.request.max_positions_override,
    )
    plan.settled.extend(plan.guarded)
    taken.settle(plan, quotes.by_instrument, multipliers)
    return True


def _tell(settings: Settings, plan: Plan) -> None:
    failed = sum(1 for r in plan.settled if r.outcome is Outcome.FAILED)
    events.plan_ready(
        positions=len(plan.targets),
        already_settled=len(plan.settled) - failed - len(plan.guarded),
        failed=failed,
        accounts=len({t.account_id for t in plan.targets}),
        guarded=len(plan.guarded),
        close_style=settings.close_style,
        not_held=sum(1 for r in plan.settled if r.outcome is Outcome.NOT_HELD),
        requests={c.style: c.fields() for c in plan.costs},
    )


def costs_of(settings: Settings, plan: Plan, ready: Ready) -> list[StyleCost]:
    """What closing the plan costs in requests at RATE_LIMIT, per style (protected: whether its
    schedule fits before DEADLINE_S and the cutoff, and what would make it fit)."""
    by_account: dict[int, int] = {}
    for t in plan.targets:
        by_account[t.account_id] = by_account.get(t.account_id, 0) + 1
    to_cutoff = None
    if settings.at_close and ready.cutoff is not None and ready.cutoff.cutoff is not None:
        to_cutoff = (ready.cutoff.cutoff - ready.server_now()).total_seconds()
    via_batches = settings.close_via == "submit_orders"
    waves = waves_of(settings)
    if waves is not None:
        market = plan_costs(
            by_account.values(),
            rate_limit=settings.rate_limit,
            batch_size=settings.batch_size,
            collar=None,
        )
        return [
            *market,
            waves_cost(
                by_account.values(),
                rate_limit=settings.rate_limit,
                batch_size=settings.batch_size,
                collar=waves.collar,
                seconds_to_cutoff=to_cutoff,
            ),
        ]
    return plan_costs(
        by_account.values(),
        rate_limit=settings.rate_limit,
        batch_size=settings.batch_size if via_batches else 1,
        collar=collar_of(settings),
        seconds_to_cutoff=to_cutoff,
    )
