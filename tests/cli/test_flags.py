"""The command line's flags are a public contract: added, never renamed or changed.

tests/cli/flags.json holds every subcommand's flags as the parser defined them. A flag may be
added; one that is missing or whose meaning changed fails here. To hold a new flag to the
contract too: `.venv/bin/python -m tests.cli.test_flags > tests/cli/flags.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from worker.cli.parser import build_parser

SNAPSHOT = Path(__file__).with_name("flags.json")


def flags_of(parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """Each option and positional of `parser`, by its first name, as the parser holds it."""
    flags: dict[str, dict[str, Any]] = {}
    for action in parser._actions:  # (argparse lists its actions nowhere public)
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        flags[name] = {
            "names": list(action.option_strings),
            "dest": action.dest,
            "action": type(action).__name__,
            "default": repr(action.default),
            "type": getattr(action.type, "__name__", repr(action.type)),
            "choices": list(action.choices) if action.choices is not None else None,
            "nargs": repr(action.nargs),
            "metavar": repr(action.metavar),
            "required": action.required,
            "help": action.help,
        }
    return flags


def every_command() -> dict[str, dict[str, dict[str, Any]]]:
    parser = build_parser()
    commands = {"liquidator": flags_of(parser)}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands[name] = flags_of(sub)
    return commands


def test_every_flag_is_still_there_meaning_what_it_meant() -> None:
    now = every_command()
    before = json.loads(SNAPSHOT.read_text())
    assert sorted(now) == sorted(before), "a subcommand was added or removed"
    for command, flags in before.items():
        for name, meaning in flags.items():
            assert now[command].get(name) == meaning, f"liquidator {command} {name}"


if __name__ == "__main__":
    print(json.dumps(every_command(), indent=1, sort_keys=True))
