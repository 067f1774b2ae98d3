"""Every event the worker emits, by name and fields, in one place: a public contract.

Operators script against these names; add fields and events, never rename. Events are JSON lines
on stdout (a readable console form on a terminal). Every event is built by a function here, so
a grep finds every emitter. `run_id` is bound once per run, and a target's `account_id` and
`instrument` around its close (`bound_target`), through contextvars. How a line is written and
redacted is `worker.observe.writer`'s.
"""

from __future__ import annotations

import contextvars
import traceback
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import structlog


class Order(Protocol):
    """What an order event reads of an order (`worker.api.models.Order` has it): events take
    values, never the API's types."""

    @property
    def id(self) -> str: ...
    @property
    def client_order_id(self) -> str: ...
    @property
    def account_id(self) -> int: ...
    @property
    def side(self) -> str: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def order_type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def filled_quantity(self) -> Decimal: ...
    @property
    def symbol(self) -> str | None: ...
    @property
    def instrument_id(self) -> str | None: ...
    @property
    def time_in_force(self) -> str | None: ...
    @property
    def average_fill_price(self) -> Decimal | None: ...
    @property
    def limit_price(self) -> Decimal | None: ...


RUN_STARTED = "run_started"
RUN_FINISHED = "run_finished"
RUN_ABORTED = "run_aborted"
PLAN_READY = "plan_ready"
CLOSE_ORDER = "close_order"
CLOSE_RETRY = "close_retry"
CLOSE_FAILED = "close_failed"
TARGET_SETTLED = "target_settled"
TARGET_COST = "target_cost"  # a target whose closing orders filled: its fill price and cost
QUOTES_UNAVAILABLE = "quotes_unavailable"  # snapshots not read: those targets have no arrival price
MULTIPLIERS_UNAVAILABLE = "multipliers_unavailable"  # contracts not read: those targets held
GUARD_OVERRIDDEN = "guard_overridden"  # --force: a target a guard would have held is sent
READ_RETRY = "read_retry"
PAGINATION_STOPPED = "pagination_stopped"
PACE_CHANGED = "pace_changed"
STOP_REQUESTED = "stop_requested"
PREVIOUS_RUN_FOUND = "previous_run_found"
MARKET_CLOSED = "market_closed"
WAITING_FOR_CLOSE = "waiting_for_close"
RUN_WOULD_START = "run_would_start"  # --before-close --dry-run: when the real run starts
WAITING_FOR_FILLS = "waiting_for_fills"  # --at-close: the fan-out is over, the closes rest
INTERNAL_ERROR = "internal_error"
PLAN_POSITION = "plan_position"
LOCK_WAITING = "lock_waiting"  # another run holds the journal; this one waits (standby)
LOCK_ACQUIRED = "lock_acquired"  # after waiting: this run now holds the journal
JOURNAL_OPENED = "journal_opened"
JOURNAL_PRUNED = "journal_pruned"  # retention: old jobs deleted at the end of a run
JOURNAL_PRUNE_FAILED = "journal_prune_failed"  # retention could not prune; the run is unchanged
JOURNAL_CHECKED = "journal_checked"  # `check`: the journal a run would open looks usable
JOURNAL_RECONNECTED = "journal_reconnected"  # PostgreSQL: a lost session replaced, lock re-taken
RESIDUE_CLOSE = "residue_close"
RESIDUE_CLOSE_SENT = "residue_close_sent"  # a residue close answered: its orders
RESIDUE_CLOSE_FAILED = "residue_close_failed"  # unknown, refused, not sent, or nothing created
CLOSE_WAITS_FOR_ORDERS = "close_waits_for_orders"  # others' orders would close it first
CLOSE_SIZED_BY_LEDGER = "close_sized_by_ledger"  # recent fills the plan's read may not hold
TARGET_NOT_FLAT = "target_not_flat"
ORDERS_SNAPSHOT = "orders_snapshot"
WRITE_FAILED = "write_failed"
METRICS_UNAVAILABLE = "metrics_unavailable"  # the run goes on; its metrics will be missing
CANCEL_REQUESTED = "cancel_requested"  # submit_orders: resting orders asked to cancel first
ORDERS_CANCELED = "orders_canceled"  # ... and none of them is working any more
MOC_CUTOFF = "moc_cutoff"  # --at-close: where the day stands against the cutoff
ORDER_ADOPTED = "order_adopted"  # a rerun follows the job's own working order, sends none
STATUS_POSITION = "status_position"  # `liquidator status`: an open position of a target
STATUS_ORDER = "status_order"  # ... a working order on a target's instrument
STATUS_ACCOUNT = "status_account"  # ... what was read of one target account
ORDER_CANCEL_REQUESTED = "order_cancel_requested"  # `liquidator cancel`: asked to cancel
ORDER_CANCELED = "order_canceled"  # ... and no longer working (its final status)
ORDER_CANCELED_BY_CLOSE = "order_canceled_by_close"  # cancel_orders: another's order, cancelled
CANCEL_FAILED = "cancel_failed"  # ... refused, or still working when the wait ended
ADOPTION_SKIPPED = "adoption_skipped"  # the job's working orders could not be read, or adopted
BATCH_SUBMITTED = "batch_submitted"  # submit_orders: one POST of an account's orders answered
BATCH_SIZE_LOWERED = "batch_size_lowered"  # the server refused a batch as too large
ORDER_REPRICED = "order_repriced"  # protected: a working LIMIT order's new limit (replace_order)
REPRICE_FAILED = "reprice_failed"  # ... a replace whose outcome is unknown: the next tick again
CLOSE_ESCALATED = (
    "close_escalated"  # protected: the limit cancelled at its deadline; rest at market
)
ESCALATION_CANCEL_STUCK = "escalation_cancel_stuck"  # ... still working after its cancels
ESCALATION_CANCEL_FAILED = "escalation_cancel_failed"  # ... its cancel unanswered: sent again


class FastLines(Protocol):
    """The JSON form's fast path (`worker.observe.writer`): an info event through the
    pipeline's processors, its line held for one write per loop round."""

    def emit(self, event: str, fields: MutableMapping[str, Any]) -> None: ...
    def close(self) -> None: ...


# Every emitter looks these up at call time. `writer.configure` replaces the lazy proxy with a
# logger resolved once, so an event does not re-resolve the configuration (a hot path: 100k
# orders), and sets the fast path for the JSON form.
log: structlog.typing.FilteringBoundLogger = structlog.get_logger("liquidator")
_info_lines: FastLines | None = None


def bind_run(run_id: str) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(run_id=run_id)


class bound_target:
    """Every event emitted inside (in this task) carries the target's `account_id` and
    `instrument`, unless its emitter passes them. Tasks started inside inherit them: start a
    task that serves other targets outside. (structlog's `bound_contextvars`, without its copy
    of the whole context on the way in: this wraps every close.)"""

    __slots__ = ("_fields", "_tokens")

    def __init__(self, account_id: int, instrument: str) -> None:
        self._fields = {"account_id": account_id, "instrument": instrument}
        self._tokens: Mapping[str, contextvars.Token[Any]] = {}

    def __enter__(self) -> None:
        self._tokens = structlog.contextvars.bind_contextvars(**self._fields)

    def __exit__(self, *exc_info: object) -> None:
        structlog.contextvars.reset_contextvars(**self._tokens)


def _target(account_id: int | None, instrument: str | None = None) -> dict[str, Any]:
    """A target's fields passed by hand; those left out come from `bound_target`."""
    fields: dict[str, Any] = {}
    if account_id is not None:
        fields["account_id"] = account_id
    if instrument is not None:
        fields["instrument"] = instrument
    return fields


def run_started(*, base_url: str, dry_run: bool, concurrency: int, rate_limit: float) -> None:
    log.info(
        RUN_STARTED,
        base_url=base_url,
        dry_run=dry_run,
        concurrency=concurrency,
        rate_limit=rate_limit,
    )


def run_finished(
    *,
    exit_code: int,
    aborted: str | None,
    seconds: float,
    summary: Mapping[str, int],
    costs: Mapping[str, Any] | None = None,
) -> None:
    """`summary`: targets by outcome, as `worker.results.summarize` counts them;
    `costs`: `worker.results.cost_summary` (gross value closed, cost, the worst)."""
    log.info(
        RUN_FINISHED,
        exit_code=exit_code,
        aborted=aborted,
        seconds=round(seconds, 3),
        **summary,
        **(costs or {}),
    )


def run_aborted(reason: str, *, declined: bool = False) -> None:
    """`declined`: the operator answered no at the prompt, a choice rather than an error, so
    the line is at info level."""
    if declined:
        log.info(RUN_ABORTED, reason=reason)
    else:
        log.error(RUN_ABORTED, reason=reason)


def plan_ready(
    *,
    positions: int,
    already_settled: int,
    failed: int,
    accounts: int,
    guarded: int = 0,
    close_style: str = "market",
    not_held: int = 0,
    requests: dict[str, dict[str, object]] | None = None,
) -> None:
    """`already_settled`: targets that ended at planning without a failure (already flat, or
    not held); `failed`: those that failed there (each also named by a `close_failed`);
    `guarded`: those a guard holds back, not sent (each also a `target_settled`, outcome
    `guarded`, with why); `not_held`: named instruments their account does not hold (each a
    `target_settled`, outcome `not_held`, naming what it holds on them); `close_style`:
    CLOSE_STYLE, market or protected; `requests`: per style, the requests the plan needs and
    their seconds at RATE_LIMIT (protected: `fits`, and `advice` when not)."""
    log.info(
        PLAN_READY,
        positions=positions,
        already_settled=already_settled,
        failed=failed,
        accounts=accounts,
        guarded=guarded,
        close_style=close_style,
        not_held=not_held,
        requests=requests or {},
    )


def previous_run_found(*, job: str, positions_touched: int, settle_s: float) -> None:
    """An earlier run today sent closes on this run's accounts: waited out before the plan."""
    log.info(
        PREVIOUS_RUN_FOUND,
        job=job,
        positions_touched=positions_touched,
        settle_s=round(settle_s, 3),
    )


def stop_requested(grace_s: float) -> None:
    log.warning(STOP_REQUESTED, grace_s=grace_s)


def waiting_for_close(
    *, day_type: str, regular_close: datetime, start_at: datetime, wait_s: float
) -> None:
    """`--before-close`: the run waits until `start_at`. `starts` and `starts_in` say the same
    for people ("15:45 ET", "5 h 30 m"); a terminal shows them as one sentence."""
    log.info(
        WAITING_FOR_CLOSE,
        day_type=day_type,
        regular_close=regular_close.isoformat(),
        start_at=start_at.isoformat(),
        wait_s=round(wait_s, 3),
        starts=new_york_time(start_at),
        closes=new_york_time(regular_close),
        starts_in=duration_text(wait_s),
    )


def run_would_start(
    *, day_type: str, regular_close: datetime, start_at: datetime, wait_s: float
) -> None:
    """`--before-close` with `--dry-run`: the real run would start at `start_at` (now, inside
    the window); the dry run does not wait for it. The fields are `waiting_for_close`'s."""
    log.info(
        RUN_WOULD_START,
        day_type=day_type,
        regular_close=regular_close.isoformat(),
        start_at=start_at.isoformat(),
        wait_s=round(wait_s, 3),
        starts=new_york_time(start_at),
        closes=new_york_time(regular_close),
        starts_in=duration_text(wait_s),
    )


def waiting_for_fills(*, orders: int, until: datetime, wait_s: float) -> None:
    """--at-close: every close is sent and `orders` market-on-close orders rest at the server
    until today's close, `until`; following waits for their fills. Emitted once, when the
    fan-out is over. `until_local` and `until_in` say the same for people."""
    log.info(
        WAITING_FOR_FILLS,
        orders=orders,
        until=until.isoformat(),
        wait_s=round(wait_s, 3),
        until_local=new_york_time(until),
        until_in=duration_text(wait_s),
    )


def resting_text(orders: int, until_local: str, wait_s: float) -> str:
    """ "3 market-on-close orders resting; they fill at today's close, 16:00 ET (in 2 h 10 m)",
    or "(due now)" once the close is reached and the fills are still to be read."""
    noun = "order" if orders == 1 else "orders"
    when = f"in {duration_text(wait_s)}" if wait_s >= 0.5 else "due now"
    return (
        f"{orders} market-on-close {noun} resting;"
        f" {'it fills' if orders == 1 else 'they fill'} at today's close, {until_local} ({when})"
    )


def new_york_time(moment: datetime) -> str:
    """ "15:45 ET": the exchange's wall clock, as a desk says it."""
    from zoneinfo import ZoneInfo

    return f"{moment.astimezone(ZoneInfo('America/New_York')):%H:%M} ET"


def duration_text(seconds: float) -> str:
    """ "5 h 30 m", "12 m", "40 s": a wait, rounded to what a person reads."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} m"
    if minutes:
        return f"{minutes} m" if minutes >= 10 or not secs else f"{minutes} m {secs} s"
    return f"{secs} s"


def market_closed(*, reason: str, request_id: str | None) -> None:
    log.info(MARKET_CLOSED, reason=reason, request_id=request_id)


def journal_opened(journal: str) -> None:
    log.info(JOURNAL_OPENED, journal=journal)


def journal_pruned(
    *, journal: str, before: str, jobs_pruned: int, jobs_kept: int, rows: int
) -> None:
    """Retention at the end of a run: the jobs of trading days before `before` deleted
    (`jobs_kept`: old ones kept, a run unfinished or an intent with no reply)."""
    log.info(
        JOURNAL_PRUNED,
        journal=journal,
        before=before,
        jobs_pruned=jobs_pruned,
        jobs_kept=jobs_kept,
        rows=rows,
    )


def journal_prune_failed(*, journal: str, error: str) -> None:
    log.warning(JOURNAL_PRUNE_FAILED, journal=journal, error=error)


def journal_checked(journal: str) -> None:
    """`check`: the journal the run would use is reachable and usable (read only, no lock)."""
    log.info(JOURNAL_CHECKED, journal=journal)


def lock_waiting(*, journal: str, holder: str, wait_s: float) -> None:
    log.warning(LOCK_WAITING, journal=journal, holder=holder, wait_s=wait_s)


def lock_acquired(*, journal: str, holder: str) -> None:
    log.info(LOCK_ACQUIRED, journal=journal, holder=holder)


def journal_reconnected(*, journal: str, attempts: int, seconds: float) -> None:
    log.warning(JOURNAL_RECONNECTED, journal=journal, attempts=attempts, seconds=seconds)


def pagination_stopped(*, what: str, reason: str, pages: int, items: int) -> None:
    log.warning(PAGINATION_STOPPED, what=what, reason=reason, pages=pages, items=items)


def close_order(
    order: Order,
    *,
    instrument_id: str,
    request_id: str,
    attempt: int,
    reconciled: bool = False,
    account_id: int | None = None,
    arrival: Mapping[str, Any] | None = None,
) -> None:
    """`account_id` (and `instrument`) from `bound_target` when not passed. `arrival`: the
    target's arrival quote as the report shows it (`TargetResult.quote_fields`)."""
    fields: MutableMapping[str, Any] = {
        **_target(account_id),
        "instrument_id": order.instrument_id or instrument_id,
        "symbol": order.symbol,
        "order_id": order.id,
        "client_order_id": order.client_order_id,
        "side": order.side,
        "quantity": str(order.quantity),
        "order_type": order.order_type,
        "limit_price": _price(order.limit_price),
        "status": order.status,
        "request_id": request_id,
        "attempt": attempt,
    }
    if order.time_in_force is not None:
        fields["time_in_force"] = order.time_in_force
    if reconciled:
        fields["reconciled"] = True
    fields["average_fill_price"] = (
        None if order.average_fill_price is None else str(order.average_fill_price)
    )
    if arrival is not None:
        for name in ("arrival_bid", "arrival_ask", "arrival_midpoint", "arrival_age_s"):
            fields[name] = arrival.get(name)
        if "price_note" in arrival:
            fields["price_note"] = arrival["price_note"]
    if _info_lines is not None:
        _info_lines.emit(CLOSE_ORDER, fields)
    else:
        log.info(CLOSE_ORDER, **fields)


def close_retry(
    *,
    attempt: int,
    reason: str,
    wait_s: float,
    request_id: str | None,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    log.warning(
        CLOSE_RETRY,
        **_target(account_id, instrument),
        attempt=attempt,
        reason=reason,
        wait_s=round(wait_s, 3),
        request_id=request_id,
    )


def close_failed(
    *,
    status: int | None,
    error: str,
    request_id: str | None,
    attempts: int,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    log.error(
        CLOSE_FAILED,
        **_target(account_id, instrument),
        status=status,
        error=error,
        request_id=request_id,
        attempts=attempts,
    )


def target_settled(
    *,
    outcome: str,
    why: str,
    account_id: int | None = None,
    instrument: str | None = None,
    prices: Mapping[str, Any] | None = None,
) -> None:
    """A target that ended without a close order of its own: flat, skipped, guarded, or
    reconciled. `prices`: its price fields (`TargetResult.price_fields`)."""
    log.info(
        TARGET_SETTLED,
        **_target(account_id, instrument),
        outcome=outcome,
        why=why,
        **(prices or {}),
    )


def target_cost(
    *, outcome: str, prices: Mapping[str, Any], account_id: int, instrument: str
) -> None:
    """A target whose closing orders filled: its arrival quote, average fill and cost."""
    fields = {"account_id": account_id, "instrument": instrument, "outcome": outcome, **prices}
    if _info_lines is not None:
        _info_lines.emit(TARGET_COST, fields)
    else:
        log.info(TARGET_COST, **fields)


def quotes_unavailable(*, instruments: int, error: str) -> None:
    """Snapshots that could not be read: these instruments have no arrival price, and the
    guards that need a quote cannot judge them (docs/prices.md)."""
    log.warning(QUOTES_UNAVAILABLE, instruments=instruments, error=error)


def multipliers_unavailable(*, instruments: int, error: str) -> None:
    """Option contracts that could not be read: these instruments' multipliers are unknown, so
    their value and cost are, and a guard holds them (docs/prices.md)."""
    log.warning(MULTIPLIERS_UNAVAILABLE, instruments=instruments, error=error)


def guard_overridden(*, account_id: int, instrument: str, why: str) -> None:
    """--force: a target a guard would have held is sent anyway."""
    log.warning(GUARD_OVERRIDDEN, account_id=account_id, instrument=instrument, why=why)


def order_repriced(
    *,
    account_id: int,
    instrument: str,
    order_id: str,
    client_order_id: str,
    limit_price: str,
    collar_bps: float,
    reprice: int,
    quote: str,
    request_id: str,
) -> None:
    """CLOSE_STYLE=protected: a working LIMIT order re-priced (`quote`: priced from the touch
    read now, or from the arrival quote when the snapshot was not two-sided)."""
    log.info(
        ORDER_REPRICED,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        client_order_id=client_order_id,
        order_type="LIMIT",
        limit_price=limit_price,
        collar_bps=collar_bps,
        reprice=reprice,
        quote=quote,
        request_id=request_id,
    )


def reprice_failed(
    *,
    account_id: int,
    instrument: str,
    order_id: str,
    limit_price: str,
    error: str,
    request_id: str | None,
) -> None:
    """A re-price whose outcome is unknown: it may apply late; the next tick replaces again."""
    log.warning(
        REPRICE_FAILED,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        order_type="LIMIT",
        limit_price=limit_price,
        error=error,
        request_id=request_id,
    )


def close_escalated(
    *,
    account_id: int,
    instrument: str,
    order_id: str,
    remaining: str,
    reason: str,
    request_id: str | None,
    limit_price: str | None = None,
) -> None:
    """CLOSE_STYLE=protected: the limit was cancelled (`reason`: deadline or moc_cutoff); once it
    reads final, what it left (`remaining` as last read) goes at market (or at the close).
    `limit_price`: the limit's, as last set."""
    log.warning(
        CLOSE_ESCALATED,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        order_type="LIMIT",
        limit_price=limit_price,
        remaining=remaining,
        reason=reason,
        request_id=request_id,
    )


def escalation_cancel_failed(
    *,
    account_id: int,
    instrument: str,
    order_id: str,
    error: str,
    request_id: str | None,
    limit_price: str | None = None,
) -> None:
    """The escalation's cancel got no answer: it is sent again next tick (cancel is idempotent)."""
    log.warning(
        ESCALATION_CANCEL_FAILED,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        order_type="LIMIT",
        limit_price=limit_price,
        error=error,
        request_id=request_id,
    )


def escalation_cancel_stuck(
    *, account_id: int, instrument: str, order_id: str, status: str, cancels: int
) -> None:
    """CLOSE_STYLE=protected: an escalated limit still read working (`status`) after `cancels`
    cancels: it may not be cancellable; its rest waits while it can fill."""
    log.error(
        ESCALATION_CANCEL_STUCK,
        account_id=account_id,
        instrument=instrument,
        order_id=order_id,
        status=status,
        cancels=cancels,
    )


def read_retry(*, what: str, attempt: int, reason: str, wait_s: float) -> None:
    log.warning(READ_RETRY, what=what, attempt=attempt, reason=reason, wait_s=round(wait_s, 3))


def pace_changed(old: float | None, new: float, reason: str) -> None:
    log.warning(
        PACE_CHANGED,
        old_rate=None if old is None else round(old, 2),
        new_rate=round(new, 2),
        reason=reason,
    )


def plan_position(
    *,
    account_id: int,
    instrument: str,
    instrument_id: str,
    symbol: str,
    instrument_type: str,
    side: str,
    quantity: str,
    market_value: str,
    multiplier: str | None = "1",
) -> None:
    """A position a run would close: a dry run's plan, for anyone reading JSON. `multiplier`:
    its contract multiplier (`1` for a share; None: an option's could not be learned)."""
    log.info(
        PLAN_POSITION,
        account_id=account_id,
        instrument=instrument,
        instrument_id=instrument_id,
        symbol=symbol,
        instrument_type=instrument_type,
        side=side,
        quantity=quantity,
        market_value=market_value,
        multiplier=multiplier,
    )


def internal_error(err: BaseException) -> None:
    """A fault in the worker itself (not a target's outcome); the run stops as for SIGTERM."""
    log.error(
        INTERNAL_ERROR,
        error=f"{type(err).__name__}: {err}",
        traceback="".join(traceback.format_exception(err)),
    )


def residue_close(
    *,
    remaining_quantity: str,
    residue: int,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """A close for what is left: the position is open and no order on it can still fill."""
    log.warning(
        RESIDUE_CLOSE,
        **_target(account_id, instrument),
        remaining_quantity=remaining_quantity,
        residue=residue,
    )


def residue_close_sent(
    *,
    residue: int,
    orders: list[str],
    request_id: str | None,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """A residue close was answered with its orders."""
    log.info(
        RESIDUE_CLOSE_SENT,
        **_target(account_id, instrument),
        residue=residue,
        orders=orders,
        request_id=request_id,
    )


def residue_close_failed(
    *,
    residue: int,
    outcome: str,
    error: str,
    request_id: str | None,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """A residue close got no answer that shows its orders. `outcome`: unknown (it may yet
    apply), refused, not_sent, or nothing_created (a look proved it changed nothing: it no
    longer counts against MAX_RESIDUE_CLOSES)."""
    log.warning(
        RESIDUE_CLOSE_FAILED,
        **_target(account_id, instrument),
        residue=residue,
        outcome=outcome,
        error=error,
        request_id=request_id,
    )


def close_waits_for_orders(
    *,
    orders: list[str],
    quantity: str,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """Working orders of others on the closing side (cancel_orders off) were counted before the
    close was sized: `quantity` is what is sent now (0: nothing until they are final)."""
    log.warning(
        CLOSE_WAITS_FOR_ORDERS,
        **_target(account_id, instrument),
        orders=orders,
        quantity=quantity,
    )


def close_sized_by_ledger(
    *, account_id: int, instrument: str, planned: str, quantity: str, fills: list[str]
) -> None:
    """The ledger shows fills on the instrument (`fills`: their ids) that the plan's positions
    read may not hold yet: the first order is sized for `quantity`, never past zero whichever
    it holds (0: nothing now; following sends for the rest once a read is confirmed)."""
    log.warning(
        CLOSE_SIZED_BY_LEDGER,
        **_target(account_id, instrument),
        planned=planned,
        quantity=quantity,
        fills=fills,
    )


def target_not_flat(
    *,
    remaining_quantity: str | None,
    error: str,
    account_id: int | None = None,
    instrument: str | None = None,
) -> None:
    """Following ended (FLAT_TIMEOUT, or a stop) with the position still open or unread."""
    log.error(
        TARGET_NOT_FLAT,
        **_target(account_id, instrument),
        remaining_quantity=remaining_quantity,
        error=error,
    )


def orders_snapshot(*, account_id: int, orders: int, request_id: str | None) -> None:
    """The orders an account held before the fan-out: none of them is a close of this run."""
    log.info(ORDERS_SNAPSHOT, account_id=account_id, orders=orders, request_id=request_id)


def write_failed(*, what: str, path: str, error: str) -> None:
    log.error(WRITE_FAILED, what=what, path=path, error=error)


def metrics_unavailable(*, path: str, error: str) -> None:
    """At the start: the metrics file cannot be written. The run goes on, its exit code its
    own; the write is still tried at the end (`write_failed` if it fails then)."""
    log.warning(METRICS_UNAVAILABLE, path=path, error=error)


def cancel_requested(
    *, account_id: int, instruments: int, orders: int, request_id: str | None
) -> None:
    """submit_orders with cancel_orders: the open orders on `instruments` of the account's
    targets were asked to cancel (`orders` 0: there were none, the server answered 404)."""
    log.info(
        CANCEL_REQUESTED,
        account_id=account_id,
        instruments=instruments,
        orders=orders,
        request_id=request_id,
    )


def batch_submitted(*, account_id: int, orders: int, listed: int, request_id: str) -> None:
    """One POST of `orders` closing orders was answered 2xx, its reply listing `listed`."""
    log.info(
        BATCH_SUBMITTED,
        account_id=account_id,
        orders=orders,
        listed=listed,
        request_id=request_id,
    )


def batch_size_lowered(*, size: int, was: int, request_id: str | None) -> None:
    """A batch was refused as too large: batches are at most `size` orders for the run."""
    log.warning(BATCH_SIZE_LOWERED, size=size, was=was, request_id=request_id)


def orders_canceled(*, account_id: int, seconds: float, polls: int) -> None:
    """None of the cancelled orders is working any more: the closes may be submitted."""
    log.info(ORDERS_CANCELED, account_id=account_id, seconds=round(seconds, 3), polls=polls)


def moc_cutoff(*, passed: bool, cutoff: str | None, regular_close: str | None, reason: str) -> None:
    """--at-close: whether today's market-on-close cutoff has passed (then nothing is sent)."""
    (log.warning if passed else log.info)(
        MOC_CUTOFF, passed=passed, cutoff=cutoff, regular_close=regular_close, reason=reason
    )


def order_adopted(order: Order, *, account_id: int, instrument: str, request_id: str) -> None:
    """A rerun found the job's own order still working (by its client id): it is followed as
    this run's close, neither cancelled nor sent again."""
    log.info(
        ORDER_ADOPTED,
        account_id=account_id,
        instrument=instrument,
        instrument_id=order.instrument_id,
        order_id=order.id,
        client_order_id=order.client_order_id,
        side=order.side,
        quantity=str(order.quantity),
        filled_quantity=str(order.filled_quantity),
        order_type=order.order_type,
        limit_price=_price(order.limit_price),
        time_in_force=order.time_in_force,
        status=order.status,
        request_id=request_id,
    )


def adoption_skipped(
    *, account_id: int, reason: str, request_id: str | None, instrument: str | None = None
) -> None:
    """The job's working orders were not adopted: the account's could not be read, or they
    would take the position past zero. Such orders are cancelled first, as any resting order."""
    log.warning(
        ADOPTION_SKIPPED,
        **_target(account_id, instrument),
        reason=reason,
        request_id=request_id,
    )


def status_position(
    *,
    account_id: int,
    instrument: str,
    instrument_id: str,
    symbol: str,
    instrument_type: str,
    side: str,
    quantity: str,
    market_value: str,
) -> None:
    log.info(
        STATUS_POSITION,
        account_id=account_id,
        instrument=instrument,
        instrument_id=instrument_id,
        symbol=symbol,
        instrument_type=instrument_type,
        side=side,
        quantity=quantity,
        market_value=market_value,
    )


def _price(price: Decimal | None) -> str | None:
    """A LIMIT order's limit price as the API writes it; None for a market order."""
    return None if price is None else str(price)


def _order_fields(order: Order) -> dict[str, Any]:
    return {
        "account_id": order.account_id,
        "instrument_id": order.instrument_id,
        "symbol": order.symbol,
        "order_id": order.id,
        "client_order_id": order.client_order_id,
        "side": order.side,
        "quantity": str(order.quantity),
        "filled_quantity": str(order.filled_quantity),
        "order_type": order.order_type,
        "limit_price": _price(order.limit_price),
        "time_in_force": order.time_in_force,
        "status": order.status,
    }


def status_order(order: Order, *, own: bool) -> None:
    """`own`: the job's own order (a client id today's job derives), as a rerun would adopt."""
    log.info(STATUS_ORDER, **_order_fields(order), own=own)


def status_account(
    *, account_id: int, positions: int, working_orders: int, own_orders: int, error: str | None
) -> None:
    (log.error if error else log.info)(
        STATUS_ACCOUNT,
        account_id=account_id,
        positions=positions,
        working_orders=working_orders,
        own_orders=own_orders,
        error=error,
    )


def order_cancel_requested(order: Order, *, own: bool, request_id: str) -> None:
    """`liquidator cancel`: the server took the cancel (the order may fill until it ends)."""
    log.info(ORDER_CANCEL_REQUESTED, **_order_fields(order), own=own, request_id=request_id)


def order_canceled(order: Order, *, own: bool, request_id: str) -> None:
    """No longer working: `status` says how it ended (CANCELED, or FILLED before the cancel)."""
    log.info(ORDER_CANCELED, **_order_fields(order), own=own, request_id=request_id)


def order_canceled_by_close(order: Order, *, account_id: int, instrument: str) -> None:
    """cancel_orders: another's order working on the instrument before the run's close, read
    CANCELED after it: the close cancelled it (as the report's `canceled_orders` lists)."""
    fields = {**_order_fields(order), "account_id": account_id, "instrument": instrument}
    log.warning(ORDER_CANCELED_BY_CLOSE, **fields)


def cancel_failed(order: Order, *, own: bool, error: str, request_id: str | None) -> None:
    log.error(CANCEL_FAILED, **_order_fields(order), own=own, error=error, request_id=request_id)
