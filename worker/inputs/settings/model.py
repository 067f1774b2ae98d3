"""The settings model: one frozen value object, built once at start and passed down.

Each field's type, bounds and default are here; what a value or a combination of values must be
is checked by `rules`, and where the values come from (flags, environment, file) is `load`'s.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from worker.inputs.settings import rules

ENV_PREFIX = "LIQUIDATOR_"


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
    # limits sent in batches, the first at COLLAR_BPS, the others at COLLAR_MAX_BPS, the rest at
    # market after the last (docs/protected.md).
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
        return rules.comma_list(value)

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
        return rules.https_unless_loopback(value)

    @model_validator(mode="before")
    @classmethod
    def _at_close_submits_orders(cls, data: Any) -> Any:
        """`at_close`, and `close_style = protected`, imply `close_via = submit_orders` unless
        close_via was given."""
        return rules.implied_close_via(data)

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
        return rules.duration(value)

    @field_validator("moc_cutoff")
    @classmethod
    def _within_a_session(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(hours=6):
            raise ValueError("must be more than 0 and at most 6h before the close")
        return value

    @field_validator("journal_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(rules.PG_SCHEMES):
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
