"""Every event's name, in one list: the public contract operators script against (docs/events.md).

Add names, never rename one. Each is emitted by one builder in this package.
"""

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
CLOSE_WAITS_FOR_ORDERS = "close_waits_for_orders"  # others' (or earlier runs') orders may close it
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
