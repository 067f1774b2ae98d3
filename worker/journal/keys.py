"""What identifies a job in the journal: the API's canonical origin and the trading date.

An earlier run's intents must be found however the base URL was spelled, so the key never uses the
URL as typed (scheme and host lower-cased, default port and trailing slashes dropped, every
loopback spelling one host).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK = "localhost"


def canonical_origin(base_url: str) -> str:
    """`https://api.clearstreet.com`, `http://localhost:8765`: one spelling per API."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if _is_loopback(host):
        host = LOOPBACK
    elif ":" in host:  # an IPv6 literal keeps its brackets, in its compressed form
        host = f"[{ipaddress.ip_address(host).compressed}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


def job_key(base_url: str, trading_day: str) -> str:
    """The job a run belongs to: the same API on the same trading day (`YYYY-MM-DD`)."""
    return f"{canonical_origin(base_url)}|{trading_day}"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def journal_url_secrets(url: str) -> list[str]:
    """What must never be printed of a journal URL: its password (as written and decoded)."""
    password = urlsplit(url).password
    return [p for p in {password, unquote(password)} if p] if password else []
