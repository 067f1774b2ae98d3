"""Settings built from where they come from: command line > environment (`LIQUIDATOR_*`) >
settings file (TOML) > systemd credentials > defaults. This package is the only place that reads
the environment; a bad value is refused naming its flag, variable, or file and key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from worker.errors import InputError
from worker.inputs.settings.file import SettingsFile
from worker.inputs.settings.model import ENV_PREFIX, Settings
from worker.inputs.settings.rules import PG_SCHEMES

# `LIQUIDATOR_*` variables that are read but are not settings; any other name that is not a
# setting is a typo, refused by name rather than ignored.
NOT_SETTINGS = {
    ENV_PREFIX + "CONFIG": "the settings file",
    ENV_PREFIX + "TEST_PG_BIN": "the test suite's PostgreSQL binaries (tests/pg_cluster.py)",
}
CREDENTIAL_NAME = "clearstreet-api-key"
JOURNAL_URL_CREDENTIAL = "liquidator-journal-url"


def _default_state_dir(env: Mapping[str, str]) -> Path:
    """systemd's `$STATE_DIRECTORY` when run as a unit, else the per-user state directory."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "liquidator"


def _with_file(file_source: SettingsFile) -> type[Settings]:
    """`Settings` with the settings file as the lowest-precedence source."""

    class SettingsWithFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, file_source

    return SettingsWithFile


def load_settings(cli: Mapping[str, Any], config_file: Path | None) -> Settings:
    """Build the settings, or raise `InputError` naming the file and key at fault."""
    env = os.environ
    _refuse_unknown_variables(env)
    if config_file is None and (ENV_PREFIX + "CONFIG") in env:
        if not env[ENV_PREFIX + "CONFIG"].strip():
            raise InputError(
                f"environment {ENV_PREFIX}CONFIG: is empty; name the settings file or unset it"
            )
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    overrides = {k: v for k, v in cli.items() if v is not None}
    settings_class: type[Settings] = Settings
    file_values: dict[str, Any] = {}
    if config_file is not None:
        file_source = SettingsFile(Settings, config_file)
        file_values = file_source()  # known keys already lower-cased to their field names
        _refuse_unknown_keys(config_file, file_values)
        settings_class = _with_file(file_source)
    try:
        settings = settings_class(**overrides)
    except ValidationError as exc:
        raise InputError(_explain(exc, config_file, file_values, overrides)) from None
    late: dict[str, Any] = {}
    if settings.state_dir is None:
        late["state_dir"] = _default_state_dir(env)
    if settings.api_key is None:
        key = _credential_key(env)
        if key is not None:
            late["api_key"] = SecretStr(key)
    if settings.journal_url is None:
        url = _credential(env, JOURNAL_URL_CREDENTIAL)
        if url is not None:
            if not url.startswith(PG_SCHEMES):
                raise InputError(
                    f"credential {JOURNAL_URL_CREDENTIAL}: must be a postgresql:// URL"
                )
            late["journal_url"] = SecretStr(url)
    return settings.model_copy(update=late) if late else settings


def api_key_origin(config_file: Path | None) -> str:
    """Where `load_settings` took the API key from, named for a message that must not show it."""
    env = os.environ
    if any(name.upper() == f"{ENV_PREFIX}API_KEY" for name in env):
        return f"environment {ENV_PREFIX}API_KEY"
    if config_file is None and env.get(ENV_PREFIX + "CONFIG", "").strip():
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    if config_file is not None and "api_key" in SettingsFile(Settings, config_file)():
        return f"{config_file}: key 'api_key'"
    return f"credential {CREDENTIAL_NAME}"


def _credential_key(env: Mapping[str, str]) -> str | None:
    """The key handed over by systemd's LoadCredential=, when the environment has none."""
    return _credential(env, CREDENTIAL_NAME)


def _credential(env: Mapping[str, str], name: str) -> str | None:
    """A secret handed over by systemd's LoadCredential=, when the environment has none."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / name
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return key or None


def _refuse_unknown_variables(env: Mapping[str, str]) -> None:
    """A `LIQUIDATOR_*` variable that names no setting is a typo (`LIQUIDATOR_CONCURENCY`):
    refused, naming it and the closest known name, never its value (it may be a key)."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | set(NOT_SETTINGS)
    for name in sorted(env):
        upper = name.upper()  # pydantic-settings reads these names case-insensitively
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        closest = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {closest[0]}?" if closest else "see README, Configuration"
        raise InputError(f"environment {name}: not a liquidator setting; {hint}")


def _refuse_unknown_keys(path: Path, file_values: Mapping[str, Any]) -> None:
    known = set(Settings.model_fields)
    for key in file_values:
        if key not in known:
            raise InputError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(known))})")


def _explain(
    exc: ValidationError,
    config_file: Path | None,
    file_values: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> str:
    problems = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else "?"
        if key in overrides:
            where = f"--{key.replace('_', '-')}"
        elif (ENV_PREFIX + key.upper()) in os.environ:
            where = f"environment {ENV_PREFIX}{key.upper()}"
        elif key in file_values and config_file is not None:
            where = f"{config_file}: key '{key}'"
        else:
            where = f"setting '{key}'"
        # Never echo the input: it may be the API key.
        problems.append(f"{where}: {err['msg']}")
    return "invalid settings: " + "; ".join(problems)
