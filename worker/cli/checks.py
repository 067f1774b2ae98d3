"""What the command line checks before the first request, from the flags and settings alone: a
report path that cannot be written, accounts outside allowed_accounts, no key or a bad one, no
terminal to confirm on. Each refusal is an `InputError` (exit 2) with nothing sent.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from worker.cli.parser import SETTING_FLAGS
from worker.errors import InputError
from worker.inputs.secrets import check_key
from worker.inputs.settings import Settings, api_key_origin, load_settings
from worker.inputs.targets import TargetSpec, accounts_of


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings, with the flags given over the environment and the file."""
    cli: dict[str, Any] = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"), None)
        for flag, _, _ in SETTING_FLAGS
    }
    if getattr(args, "json", False):
        cli["log_format"] = "json"
    return load_settings(cli, args.config)


def _writable_parent(path: Path, what: str) -> None:
    """Found out now, not after the closes were sent."""
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory; name a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"{what} {path}: the directory {parent} does not exist or is not writable")


def refuse_unsafe(args: argparse.Namespace, settings: Settings, specs: list[TargetSpec]) -> None:
    """Raise `InputError` for what would make the run unsafe or fail after its first close."""
    if getattr(args, "report", None) is not None:
        _writable_parent(args.report, "--report")
    # metrics_file is not checked here: metrics never stop a flatten (`worker.output.metrics`).
    if settings.allowed_accounts is not None:
        outside = [a for a in accounts_of(specs) if a not in settings.allowed_accounts]
        if outside:
            raise InputError(
                f"account(s) {', '.join(map(str, outside))} are not in allowed_accounts"
            )
    if args.simulate:
        return
    if settings.api_key is None:
        raise InputError(
            "no API key: set LIQUIDATOR_API_KEY, api_key in the settings file, or a systemd"
            " credential named clearstreet-api-key"
        )
    check_key(settings.api_key.get_secret_value(), api_key_origin(args.config))
    if (
        args.command in ("run", "cancel")
        and not args.dry_run
        and not args.yes
        and not (sys.stdin.isatty() and sys.stdout.isatty())
    ):
        raise InputError("no terminal to confirm the plan on: pass --yes to run unattended")
