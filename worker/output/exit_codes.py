"""The command line's exit codes, and the one mapping from what a run did to its code.

The runner reports what happened (outcomes, an abort's reason, a refusal); the command line
turns that into its exit code here, and so does the report's `exit_code` field.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from worker.results import Outcome, TargetResult


class ExitCode(IntEnum):
    OK = 0  # every target closed (verified flat) or already flat (or a dry run succeeded)
    # At least one target failed, is not flat, or was held by a guard (not sent); or, with
    # FAIL_ON_NOT_HELD, names an instrument its account does not hold.
    FAILED = 1
    INVALID = 2  # invalid input or configuration, or the journal refused the run; nothing sent
    # Credentials rejected, a termination signal, or the report could not be written; the
    # report is still written when it can be. (Metrics that could not be written leave the
    # code as the flatten has it: see worker.output.metrics.)
    ABORTED = 3


_FAILING = frozenset({Outcome.FAILED, Outcome.NOT_FLAT, Outcome.GUARDED})
_FAILING_NOT_HELD = _FAILING | {Outcome.NOT_HELD}


def exit_code(
    results: Iterable[TargetResult],
    *,
    aborted: str | None,
    refused: bool = False,
    write_failed: bool = False,
    fail_on_not_held: bool = False,
) -> ExitCode:
    if refused:
        return ExitCode.INVALID
    if aborted is not None or write_failed:
        return ExitCode.ABORTED
    failing = _FAILING_NOT_HELD if fail_on_not_held else _FAILING
    if any(r.outcome in failing for r in results):
        return ExitCode.FAILED
    return ExitCode.OK
