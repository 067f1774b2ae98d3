"""Every event the worker emits, by name and fields, in one place: a public contract.

Operators script against these names; add fields and events, never rename. Events are JSON lines
on stdout (a readable console form on a terminal). Every event is built by a function in this
package, so a grep finds every emitter, and every name is reached as `events.<name>`:

    names.py      every event's name
    sink.py       the logger and the fast path every builder emits through; `run_id` bound once
                  per run (`bind_run`), a target's `account_id` and `instrument` around its
                  close (`bound_target`), through contextvars
    run.py        a run's start and end, the plan, the stop, reads and pace
    waits.py      the waits on the clock (--before-close, --at-close) and their texts
    journal.py    the journal and its lock
    sending.py    a close sent, retried, failed; batches; cancels before it; adoption
    outcomes.py   following a target to its outcome; residue closes
    protected.py  CLOSE_STYLE=protected: re-prices and escalation
    commands.py   `liquidator status` and `liquidator cancel`
    orders.py     what an order event reads of an order

How a line is written and redacted is `worker.observe.writer`'s.
"""

# Each module lists what it offers in `__all__`; this package offers all of it as one list.
from worker.observe.events.commands import *  # noqa: F403  (the package's names: see above)
from worker.observe.events.journal import *  # noqa: F403
from worker.observe.events.names import *  # noqa: F403
from worker.observe.events.orders import *  # noqa: F403
from worker.observe.events.outcomes import *  # noqa: F403
from worker.observe.events.protected import *  # noqa: F403
from worker.observe.events.run import *  # noqa: F403
from worker.observe.events.sending import *  # noqa: F403
from worker.observe.events.sink import *  # noqa: F403
from worker.observe.events.waits import *  # noqa: F403
