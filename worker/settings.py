"""Settings: one frozen value object, built once at start and passed down.

Precedence: command line > environment (`LIQUIDATOR_*`) > settings file (TOML) > defaults.
This is the only module that reads the environment. The API key is a `SecretStr` everywhere.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from worker.errors import InputError

ENV_PREFIX = "LIQUIDATOR_"
CREDENTIAL_NAME = "clearstreet-api-key"


class _FileSource(PydanticBaseSettingsSource):
    """Values from the TOML settings file, already read and checked by `load_settings`."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = dict(values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    api_key: SecretStr | None = Field(None, description="Bearer key, `<id>.<secret>`.")
    base_url: str = "https://api.clearstreet.com"
    concurrency: int = Field(16, ge=1, le=512, description="Requests in flight, at most.")
    rate_limit: float = Field(
        20.0, ge=0, description="Requests per second, at most; 0 = unlimited."
    )
    request_timeout: float = Field(5.0, gt=0, le=120, description="Seconds for one request.")
    # 8, not 5: under 20% provably-unapplied failures (503s, refused sends, 429s) five tries
    # leave about one target in 3,000 failed; the worker always looks before re-sending.
    max_attempts: int = Field(8, ge=1, le=20, description="Tries per close and per read.")
    state_dir: Path | None = Field(None, description="Journal location.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    reconcile_lookback: float = Field(
        60.0, ge=0, le=3600, description="Seconds before an attempt to search for its orders."
    )
    reconcile_delay: float = Field(
        1.0, ge=0, le=30, description="Seconds after an unknown outcome before looking."
    )
    stop_grace: float = Field(8.0, gt=0, le=80, description="Seconds to wind down on SIGTERM.")
    retry_backoff: float = Field(0.25, ge=0, le=30, description="First retry wait, seconds.")
    retry_backoff_max: float = Field(8.0, ge=0, le=120, description="Longest retry wait.")
    flat_timeout: float = Field(
        120.0, gt=0, le=3600, description="Seconds to follow a close until its position is flat."
    )
    follow_pause: float = Field(
        0.2, gt=0, le=60, description="First pause between reads while following, seconds."
    )
    follow_pause_max: float = Field(
        2.0, gt=0, le=60, description="Longest pause between reads while following, seconds."
    )
    max_residue_closes: int = Field(
        2, ge=0, le=10, description="Closes for what a close left open, per target."
    )
    allowed_accounts: tuple[int, ...] | None = None
    max_positions: int | None = Field(None, ge=1)
    metrics_file: Path | None = None

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("plain http:// is accepted only for loopback hosts; use https://")
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings

    @property
    def journal_dir(self) -> Path:
        assert self.state_dir is not None, "load_settings() always sets state_dir"
        return self.state_dir


def _default_state_dir(env: Mapping[str, str]) -> Path:
    """systemd's `$STATE_DIRECTORY` when run as a unit, else the per-user state directory."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "liquidator"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _with_file(file_values: Mapping[str, Any]) -> type[Settings]:
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
            return init_settings, env_settings, _FileSource(settings_cls, file_values)

    return SettingsWithFile


def load_settings(cli: Mapping[str, Any], config_file: Path | None) -> Settings:
    """Build the settings, or raise `InputError` naming the file and key at fault."""
    env = os.environ
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    file_values = _read_settings_file(config_file) if config_file else {}
    overrides = {k: v for k, v in cli.items() if v is not None}
    try:
        settings: Settings = _with_file(file_values)(**overrides)
    except ValidationError as exc:
        raise InputError(_explain(exc, config_file, file_values, overrides)) from None
    late: dict[str, Any] = {}
    if settings.state_dir is None:
        late["state_dir"] = _default_state_dir(env)
    if settings.api_key is None:
        key = _credential_key(env)
        if key is not None:
            late["api_key"] = SecretStr(key)
    return settings.model_copy(update=late) if late else settings


def _credential_key(env: Mapping[str, str]) -> str | None:
    """The key handed over by systemd's LoadCredential=, when the environment has none."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / CREDENTIAL_NAME
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return key or None


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the settings file: {exc.strerror}") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    known = set(Settings.model_fields)
    for key in values:
        if key.lower() not in known:
            raise InputError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(known))})")
    return {k.lower(): v for k, v in values.items()}


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
