"""`liquidator journal`: what the journal holds (`show`, `verify`), the last run's report
(`last`), and retention by hand (`prune`). It reads the settings a run would, and never sends.
"""

from __future__ import annotations

import argparse
import sys

from worker.errors import InputError
from worker.inputs.settings import Settings, load_settings
from worker.journal.keys import journal_url_secrets
from worker.observe import writer
from worker.output.exit_codes import ExitCode


def journal(args: argparse.Namespace) -> int:
    """`liquidator journal`: show, verify, last or prune; a journal that cannot be read exits 2."""
    from worker.journal import view as journal_view

    try:
        cli = {"state_dir": args.state_dir, "journal_url": args.journal_url}
        settings = load_settings(cli, args.config)
        as_json = args.json or not sys.stdout.isatty()
        if args.action == "last":
            return _last_report(settings, as_json)
        if args.action == "verify":
            return journal_view.verify(settings, as_json)
        if args.action == "prune":
            from worker.journal.prune_command import prune

            # Events (the journal opened) go to stderr, only warnings: stdout is the result.
            url = settings.journal_url.get_secret_value() if settings.journal_url else ""
            secrets = journal_url_secrets(url)
            writer.configure(level="warning", fmt="json", stream=sys.stderr, secrets=secrets)
            return prune(settings, args.keep_days, dry_run=args.dry_run, as_json=as_json)
        if args.keep_days is not None or args.dry_run:
            raise InputError("--keep-days and --dry-run are for `journal prune`")
        return journal_view.show(settings, args.day, as_json)
    except Exception as exc:  # the journal cannot be reached or read: say so, exit 2
        message = f"{type(exc).__name__}: {exc}"
        for secret in journal_url_secrets(args.journal_url or ""):
            message = message.replace(secret, "***")
        print(f"liquidator journal: {message}", file=sys.stderr)
        return int(ExitCode.INVALID)


def _last_report(settings: Settings, as_json: bool) -> int:
    """The report the last run (not a dry run) left in STATE_DIR: whole as JSON, or its head."""
    import json

    from worker.run.finish import last_report_path

    path = last_report_path(settings)
    if not path.is_file():
        print(f"liquidator journal last: no run has left a report in {path}", file=sys.stderr)
        return int(ExitCode.FAILED)
    text = path.read_text(encoding="utf-8")
    if as_json:
        sys.stdout.write(text)
        return int(ExitCode.OK)
    doc = json.loads(text)
    summary = ", ".join(f"{k} {v}" for k, v in doc["summary"].items() if v)
    print(f"last run {doc['run_id']}: {doc['started_at']} .. {doc['finished_at']}")
    print(f"exit code {doc['exit_code']}; {summary or 'no targets'}")
    if doc["aborted"]:
        print(f"aborted: {doc['aborted']}")
    for r in doc["results"]:
        if r["outcome"] not in ("closed", "already_flat"):
            print(f"  {r['account_id']} {r['instrument']}: {r['outcome']} {r['error'] or ''}")
    print(f"report: {path}")
    return int(ExitCode.OK)
