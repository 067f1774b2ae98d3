"""A run's last stage: its result filled in from how it ended, the report and the metrics
written, and `run_finished`. A report that cannot be written is one line and exit 3; metrics
that cannot be written are one line and leave the exit code as the flatten has it (the book is
what the exit code tells; observability never turns a flat book into a failure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from worker.inputs.secrets import Scrubber
from worker.inputs.settings import Settings
from worker.observe import events
from worker.output.metrics import RunFigures, write_metrics
from worker.output.report import ReportHead, Totals, copy_atomically, write_report
from worker.output.totals import cost_summary, summarize
from worker.run.ended import Ended, RunResult, unplanned
from worker.run.scope import Started


@dataclass(frozen=True)
class Said:
    """What the outputs say beside the targets' results: the exit code, the totals (counted
    once), and the scrubber every text passes on its way out."""

    code: int
    totals: Totals
    scrub: Callable[[str], str]


def finish(started: Started, ended: Ended) -> RunResult:
    """The run's result, from how it ended; its report and metrics written."""
    settings, counters, request = started.settings, started.counters, started.request
    report_path, dry_run = request.report_path, request.dry_run
    result = RunResult(
        started.run_id,
        results=ended.results or unplanned(request.specs, ended.aborted or "nothing was planned"),
        aborted=ended.aborted,
        refused=ended.refused,
        retries=counters.retries,
        reconciliations=counters.looks,
        started_at=started.started_at,
        finished_at=datetime.now(UTC),
        closing_since=counters.closing_since,
        fail_on_not_held=settings.fail_on_not_held,
    )
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    # Counted once: the report's head, the last report's and `run_finished` say the same.
    totals = Totals(summarize(result.results), cost_summary(result.results))
    said = Said(int(result.exit_code), totals, Scrubber.for_key(key).text)
    failures = _write_outputs(settings, result, report_path, dry_run, said)
    result.write_failures = failures.pop("report", [])
    result.notices = failures.pop("metrics", [])
    final_code = int(result.exit_code)
    if not dry_run and not result.refused:
        # The same document as --report when that was written, with this exit code: copied.
        written = report_path is not None and not result.write_failures and final_code == said.code
        same = report_path if written else None
        _write_last_report(settings, result, replace(said, code=final_code), same_as=same)
    events.run_finished(
        exit_code=final_code,
        aborted=result.aborted,
        seconds=(result.finished_at - result.started_at).total_seconds(),
        summary=totals.summary,
        costs=totals.costs,
    )
    return result


LAST_REPORT = "last-report.json"  # under STATE_DIR: the last run's report, with or without --report


def last_report_path(settings: Settings) -> Path:
    return settings.journal_dir / LAST_REPORT


def _write_last_report(
    settings: Settings, result: RunResult, said: Said, *, same_as: Path | None
) -> None:
    """The report of every run that was not a dry run nor refused (a standby refused by the lock
    must not hide the run that holds it), for `liquidator journal last`. A failure is an event
    only: it neither changes the exit code nor stops anything. `same_as`: a report of this run
    with the same exit code, written already: copied rather than rendered again."""
    path = last_report_path(settings)
    try:
        if same_as is not None:
            copy_atomically(same_as, path)
            return
        _report(path, result, said, dry_run=False)
    except OSError as err:
        events.write_failed(what="last report", path=str(path), error=err.strerror or str(err))


def _figures(result: RunResult, code: int) -> RunFigures:
    """The run's metrics, from its result and exit code."""
    return RunFigures(
        results=result.results,
        retries=result.retries,
        reconciliations=result.reconciliations,
        duration_s=(result.finished_at - result.started_at).total_seconds(),
        time_to_flat_s=(
            None
            if result.closing_since is None
            else (result.finished_at - result.closing_since).total_seconds()
        ),
        exit_code=code,
        finished_at=result.finished_at.timestamp(),
    )


def _report(path: Path, result: RunResult, said: Said, *, dry_run: bool) -> None:
    """The run's JSON report, written atomically to `path`."""
    run = ReportHead(
        result.run_id, result.started_at, result.finished_at, dry_run, said.code, result.aborted
    )
    write_report(path, run, result.results, scrub=said.scrub, totals=said.totals)


def _write_outputs(
    settings: Settings, result: RunResult, report_path: Path | None, dry_run: bool, said: Said
) -> dict[str, list[str]]:
    """The report first, then the metrics; a failure of either is an event and one line,
    returned under its name ("report", "metrics")."""
    writes: list[tuple[str, Path | None, Callable[[Path], None]]] = [
        (
            "report",
            report_path,
            lambda path: _report(path, result, said, dry_run=dry_run),
        ),
        (
            "metrics",
            # A dry run (and `check`) flattened nothing: the metrics stay the last real run's.
            None if dry_run else settings.metrics_file,
            lambda path: write_metrics(path, _figures(result, said.code)),
        ),
    ]
    failures: dict[str, list[str]] = {}
    for what, path, write in writes:
        if path is None:
            continue
        try:
            write(path)
        except OSError as err:
            events.write_failed(what=what, path=str(path), error=err.strerror or str(err))
            failures.setdefault(what, []).append(
                f"could not write the {what} {path}: {err.strerror or err}"
            )
    return failures
