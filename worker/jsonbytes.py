"""JSON for events and the report: orjson's speed, and never an event or a report lost to it.

orjson refuses text the standard library writes: a lone surrogate, which a server's error
message can carry (`"\\ud800"` decodes to one). Such a value falls back to `json`, which escapes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(value, default=default).encode()
