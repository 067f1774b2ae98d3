"""The one mapping from what a run did to the command line's exit code (and the report's)."""

from __future__ import annotations

import pytest

from worker.output.exit_codes import ExitCode, exit_code
from worker.results import Outcome, TargetResult
from worker.run.ended import RunResult


def ended(*outcomes: Outcome) -> list[TargetResult]:
    return [TargetResult(1, f"I{n}", outcome=o) for n, o in enumerate(outcomes)]


@pytest.mark.parametrize(
    ("results", "aborted", "refused", "write_failed", "code"),
    [
        (ended(Outcome.CLOSED, Outcome.ALREADY_FLAT), None, False, False, ExitCode.OK),
        (ended(Outcome.MARKET_CLOSED), None, False, False, ExitCode.OK),
        (ended(Outcome.SKIPPED), None, False, False, ExitCode.OK),  # a dry run
        (ended(Outcome.CLOSED, Outcome.FAILED), None, False, False, ExitCode.FAILED),
        (ended(Outcome.CLOSED, Outcome.NOT_FLAT), None, False, False, ExitCode.FAILED),
        (ended(Outcome.FAILED), "stop requested", False, False, ExitCode.ABORTED),
        (ended(Outcome.CLOSED), None, False, True, ExitCode.ABORTED),
        ([], "the journal is held", True, False, ExitCode.INVALID),
        ([], "the journal is held", True, True, ExitCode.INVALID),
    ],
)
def test_what_a_run_did_maps_to_one_exit_code(
    results: list[TargetResult], aborted: str | None, refused: bool, write_failed: bool, code: int
) -> None:
    got = exit_code(results, aborted=aborted, refused=refused, write_failed=write_failed)
    assert got == code
    result = RunResult("r", results, aborted, refused, ["could not write"] if write_failed else [])
    assert result.exit_code == code  # what the command line returns


def test_the_codes_are_the_documented_contract() -> None:
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0),
        ("FAILED", 1),
        ("INVALID", 2),
        ("ABORTED", 3),
    ]
