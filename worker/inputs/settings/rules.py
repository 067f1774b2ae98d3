"""What a setting's value, or a combination of settings, must be, beyond its type and bounds:
the checks `Settings`' validators call. Each raises `ValueError` saying what is wrong, never
echoing the value (it may be a key or a URL with a password).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

PG_SCHEMES = ("postgresql://", "postgres://")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}  # moc_cutoff's '90s', '10m', '1h'


def comma_list(value: object) -> object:
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


def https_unless_loopback(value: str) -> str:
    """An https:// base URL, or http:// to a loopback host; without its trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("plain http:// is accepted only for loopback hosts; use https://")
    return value.rstrip("/")


def implied_close_via(data: Any) -> Any:
    """The raw settings with `close_via = submit_orders` when `at_close` or a protected
    `close_style` asks for it and close_via was not given."""
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


def duration(value: object) -> object:
    """'90s', '10m', '1h' or plain seconds ('600') as seconds; anything else as given."""
    if isinstance(value, str):
        text = value.strip().lower()
        scale = _UNIT_SECONDS.get(text[-1:], 1)
        number = (text[:-1] if text[-1:] in _UNIT_SECONDS else text).strip()
        if number.replace(".", "", 1).isdigit():
            return float(number) * scale
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
