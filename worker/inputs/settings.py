"""Settings: one frozen value object, built once at start and passed down.

Precedence: command line > environment (`LIQUIDATOR_*`) > settings file (TOML) > defaults. This is
the only module that reads the environment, and the API key stays a `SecretStr` everywhere.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from worker.errors import InputError

ENV_PREFIX = "LIQUIDATOR_"
# `LIQUIDATOR_*` variables that are read but are not settings; any other name that is not a
# setting is a typo, refused by name rather than ignored.
NOT_SETTINGS = {
    ENV_PREFIX + "CONFIG": "the settings file",
    ENV_PREFIX + "TEST_PG_BIN": "the test suite's PostgreSQL binaries (tests/pg_cluster.py)",
}
CREDENTIAL_NAME = "clearstreet-api-key"
JOURNAL_URL_CREDENTIAL = "liquidator-journal-url"


class _SettingsFile(TomlConfigSettingsSource):
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


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}  # moc_cutoff's '90s', '10m', '1h'


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
    # NoDecode: the environment gives `10001,10002`, not JSON; `_comma_list` splits it.
    allowed_accounts: Annotated[tuple[int, ...] | None, NoDecode] = None
    max_positions: int | None = Field(None, ge=1)
    metrics_file: Path | None = None
    # Guards before a blind market order (docs/prices.md); --force overrides them per run.
    require_quote: bool = Field(
        True, description="Hold a target whose instrument has no two-sided quote (halted)."
    )
    max_quote_age_s: float | None = Field(
        None, gt=0, description="Hold a target whose quote is older than this (when timed)."
    )
    max_spread_bps: float | None = Field(
        500.0, gt=0, description="Hold a target whose quote's spread is wider than this."
    )
    max_notional: Decimal | None = Field(
        None, gt=0, description="Hold a target whose position is worth more than this."
    )
    # A named instrument the account does not hold (outcome `not_held`) fails the run (exit 1)
    # instead of passing it: for a desk whose targets must all be open positions.
    fail_on_not_held: bool = Field(
        False, description="Exit 1 when a named instrument is not held by its account."
    )
    # How a close is sent, whether as a market-on-close order, and the cutoff for that.
    close_via: Literal["close_position", "submit_orders"] = "close_position"
    at_close: bool = False
    # 100: an account of up to 100 positions is closed in one request; the lookups a batch may
    # need (its client ids) fit one ~3.7 kB query string; a server that takes fewer says so
    # (413), and the worker splits and remembers (docs/request-budget.md).
    batch_size: int = Field(
        100, ge=1, le=1000, description="submit_orders: closing orders per request, at most."
    )
    # CLOSE_STYLE=protected (docs/protected.md): a LIMIT order priced from the touch with a
    # collar, re-priced every REPRICE_S toward COLLAR_MAX_BPS, the rest at market DEADLINE_S
    # after the first send. Needs submit_orders (implied unless close_via is given).
    close_style: Literal["market", "protected"] = "market"
    collar_bps: float = Field(
        5.0, ge=0, le=1000, description="protected: the first limit's distance past the touch."
    )
    collar_max_bps: float = Field(
        50.0, ge=0, le=1000, description="protected: the widest collar, at the last re-price."
    )
    # How a protected close works: `reprice`, one resting DAY LIMIT re-priced within a request
    # budget and escalated at the deadline; `ioc_waves`, waves of marketable IMMEDIATE_OR_CANCEL
    # limits sent in batches, wider each wave, the rest at market after the last.
    protected_via: Literal["reprice", "ioc_waves"] = "reprice"
    reprice_s: float = Field(
        5.0, gt=0, le=3600, description="protected: seconds between re-prices of the limit."
    )
    deadline_s: float = Field(
        60.0, gt=0, le=6 * 3600, description="protected: seconds before the rest goes at market."
    )
    moc_cutoff: timedelta = Field(
        timedelta(minutes=10), description="How long before today's regular close MOC stops."
    )
    lock_wait: float = Field(
        0.0, ge=0, le=86400, description="Seconds to wait for another run's journal lock."
    )
    journal_timeout: float = Field(
        3.0,
        gt=0,
        le=60,
        description="Seconds a PostgreSQL journal call may take (statement and lock timeouts),"
        " the lock check before a send may wait, and a lost session is retried.",
    )
    journal_url: SecretStr | None = Field(
        None, description="postgresql://... puts the journal in PostgreSQL (several hosts)."
    )
    # Retention (docs/journal.md): applied at the end of every run that ended 0; `off` keeps all.
    journal_keep_days: int | None = Field(
        90, ge=1, le=36500, description="Trading days of jobs the journal keeps (off: all)."
    )

    @field_validator("log_level", "log_format", "close_via", "close_style", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("allowed_accounts", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """`10001,10002` (or a JSON list) from the environment; a TOML list passes as is."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        items = [item.strip() for item in text.split(",")]
        if not text or "" in items:
            raise ValueError("expected account ids separated by commas, e.g. 10001,10002")
        return items

    @field_validator(
        "max_quote_age_s", "max_spread_bps", "max_notional", "journal_keep_days", mode="before"
    )
    @classmethod
    def _off(cls, value: object) -> object:
        """`off` turns a guard (or retention) with a default off (`..._MAX_SPREAD_BPS=off`)."""
        if isinstance(value, str) and value.strip().lower() in ("off", "none"):
            return None
        return value

    @field_validator("state_dir", "metrics_file", mode="before")
    @classmethod
    def _path_given(cls, value: object) -> object:
        """An empty path would silently mean the current directory."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: name a path (empty would mean the current directory)")
        return value

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("plain http:// is accepted only for loopback hosts; use https://")
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _at_close_submits_orders(cls, data: Any) -> Any:
        """`at_close`, and `close_style = protected`, imply `close_via = submit_orders` unless
        close_via was given."""
        if isinstance(data, dict) and data.get("close_via") is None:
            try:
                at_close = TypeAdapter(bool).validate_python(data.get("at_close", False))
            except ValidationError:
                return data  # the field's own validation names the problem
            style = data.get("close_style")
            protected = isinstance(style, str) and style.strip().lower() == "protected"
            if at_close or protected:
                return {**data, "close_via": "submit_orders"}
        return data

    @field_validator("at_close")
    @classmethod
    def _at_close_needs_submit(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("close_via") == "close_position":
            raise ValueError(
                "market-on-close orders are sent through submit_orders; drop close_via"
                " = close_position or set it to submit_orders"
            )
        return value

    @field_validator("close_style")
    @classmethod
    def _protected_needs_submit(cls, value: str, info: ValidationInfo) -> str:
        if value == "protected" and info.data.get("close_via") == "close_position":
            raise ValueError(
                "protected closes are LIMIT orders sent through submit_orders; drop close_via"
                " = close_position or set it to submit_orders"
            )
        return value

    @field_validator("collar_max_bps")
    @classmethod
    def _widest_collar_last(cls, value: float, info: ValidationInfo) -> float:
        first = info.data.get("collar_bps")
        if first is not None and value < first:
            raise ValueError(f"must be at least collar_bps ({first:g}): the collar only widens")
        return value

    @field_validator("moc_cutoff", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        """'90s', '10m', '1h', plain seconds ('600'), or ISO 8601 ('PT10M')."""
        if isinstance(value, str):
            text = value.strip().lower()
            scale = _UNIT_SECONDS.get(text[-1:], 1)
            number = (text[:-1] if text[-1:] in _UNIT_SECONDS else text).strip()
            if number.replace(".", "", 1).isdigit():
                return float(number) * scale
        return value

    @field_validator("moc_cutoff")
    @classmethod
    def _within_a_session(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(hours=6):
            raise ValueError("must be more than 0 and at most 6h before the close")
        return value

    @field_validator("journal_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(_PG_SCHEMES):
            raise ValueError("must be a postgresql:// URL")  # the value may hold a password
        return value

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


_PG_SCHEMES = ("postgresql://", "postgres://")


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


def _with_file(file_source: _SettingsFile) -> type[Settings]:
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
        file_source = _SettingsFile(Settings, config_file)
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
            if not url.startswith(_PG_SCHEMES):
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
    if config_file is not None and "api_key" in _SettingsFile(Settings, config_file)():
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
