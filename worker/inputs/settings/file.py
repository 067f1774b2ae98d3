"""The TOML settings file as a source of settings (`SettingsFile`): a file that is missing, not
TOML or not UTF-8 is refused naming the file and what is wrong.
"""

from __future__ import annotations

import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, TomlConfigSettingsSource

from worker.errors import InputError


class SettingsFile(TomlConfigSettingsSource):
    """The TOML settings file, read by pydantic-settings; a file that fails is named.

    pydantic-settings matches its keys to fields case-insensitively and leaves unknown keys
    as extras, which `load_settings` refuses by name before validating.
    """

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path = path
        # The base class skips a missing file silently; this one was asked for.
        if not path.is_file():
            why = "not a regular file" if path.exists() else "No such file or directory"
            raise InputError(f"{path}: cannot read the settings file: {why}")
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            return super()._read_file(file_path)
        except OSError as exc:
            raise InputError(
                f"{self.path}: cannot read the settings file: {exc.strerror}"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{self.path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # its text would quote the file's bytes
            raise InputError(
                f"{self.path}: not valid TOML: not UTF-8 at byte {exc.start}"
            ) from None
