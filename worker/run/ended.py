"""How a run, or a stage of it, ended: the value each stage returns instead of filling in the
run's result, and the run's result itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from worker.closing import target as life
from worker.closing.target import Target
from worker.inputs.targets import WHOLE_ACCOUNT, TargetSpec
from worker.observe import events
from worker.output.exit_codes import ExitCode, exit_code
from worker.results import Outcome, TargetResult


@dataclass(frozen=True)
class Ended:
    """The run is over: each target's result, and why it stopped early, if it did."""

    results: list[TargetResult]
    aborted: str | None = None
    refused: bool = False  # the journal refused the run (held, damaged, unreachable): exit 2

    def unless_aborted(self, why: str) -> Ended:
        """Aborted for `why`, unless an earlier reason stands (the first one is the run's)."""
        return self if self.aborted is not None else aborted(why, self.results)


def aborted(why: str, results: list[TargetResult], *, refused: bool = False) -> Ended:
    """A stage stops the run: said at once (`run_aborted`), and returned."""
    events.run_aborted(why)
    return Ended(results, why, refused)


@dataclass
class RunResult:
    run_id: str
    results: list[TargetResult] = field(default_factory=list)
    aborted: str | None = None
    refused: bool = False
    write_failures: list[str] = field(default_factory=list)  # one line each, for stderr
    # Lines for stderr that leave the exit code alone: the metrics file could not be written.
    notices: list[str] = field(default_factory=list)
    retries: int = 0
    reconciliations: int = 0
    fail_on_not_held: bool = False  # FAIL_ON_NOT_HELD: a `not_held` target fails the run
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    closing_since: datetime | None = None  # when closing began; None: it ended before closing

    @property
    def exit_code(self) -> ExitCode:
        """The command line's code for this run (`worker.output.exit_codes`)."""
        return exit_code(
            self.results,
            aborted=self.aborted,
            refused=self.refused,
            write_failed=bool(self.write_failures),
            fail_on_not_held=self.fail_on_not_held,
        )


def unplanned(
    specs: Sequence[TargetSpec], why: str, outcome: Outcome = Outcome.SKIPPED
) -> list[TargetResult]:
    """One result per named target (skipped, or market_closed), for runs ended before planning."""
    names = dict.fromkeys((s.account_id, s.instrument or WHOLE_ACCOUNT) for s in specs)
    results = [TargetResult(a, i) for a, i in names]
    settle = life.market_closed if outcome is Outcome.MARKET_CLOSED else life.skipped
    for result in results:
        settle(result, why)
    return results


def unsent(targets: Sequence[Target], why: str) -> list[TargetResult]:
    """One skipped result per planned target, for runs ended before the fan-out."""
    results = [t.result() for t in targets]
    for result in results:
        life.skipped(result, why)
    return results
