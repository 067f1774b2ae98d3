"""Settings: one frozen value object (`Settings`), built once at start (`load_settings`) and
passed down.

Precedence: command line > environment (`LIQUIDATOR_*`) > settings file (TOML) > defaults. This
package is the only place that reads the environment, and the API key stays a `SecretStr`
everywhere. `model` holds the fields, `rules` what values and combinations must be, `file` the
TOML source, `load` where each value comes from and the messages that name it.
"""

from worker.inputs.settings.load import (
    CREDENTIAL_NAME,
    JOURNAL_URL_CREDENTIAL,
    NOT_SETTINGS,
    api_key_origin,
    load_settings,
)
from worker.inputs.settings.model import ENV_PREFIX, Settings

__all__ = [
    "CREDENTIAL_NAME",
    "ENV_PREFIX",
    "JOURNAL_URL_CREDENTIAL",
    "NOT_SETTINGS",
    "Settings",
    "api_key_origin",
    "load_settings",
]
