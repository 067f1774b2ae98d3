"""What identifies a job in the journal: the trading date, and nothing of the URL.

A job is every run on one journal that flattens accounts on one trading day. The API's address
is not part of it: two hosts (or two runs) can reach one API through URLs spelled differently
(another port, a proxy, a trailing path), and no spelling rule can prove two URLs are, or are
not, one API; the spec gives no server identity to ask for either. What the journal's runs
share is what they act on: the accounts, whose ids the API assigns. So within one journal, one
trading day is one job: its runs hold one lock (`LOCK_SCOPE`), see each other's intents, and
derive the same client ids (`worker.closing.client_ids`), so the same position's close from two
runs collides at the server (409) instead of creating a second order. See docs/journal.md.
"""

from __future__ import annotations

from datetime import date, datetime
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

MARKET_TZ = ZoneInfo("America/New_York")  # a trading day, and so a job, is New York's
# The one lock every run on a journal takes (PostgreSQL's advisory lock; SQLite's is the lock
# file beside it): runs that could flatten the same accounts never run at once.
LOCK_SCOPE = "accounts"


def trading_day(at: datetime) -> date:
    """The trading day `at` (an aware time, the server's where a job is keyed) falls on."""
    return at.astimezone(MARKET_TZ).date()


def job_key(trading_day: str) -> str:
    """The job a run belongs to: its journal's accounts on this trading day (`YYYY-MM-DD`)."""
    return f"accounts|{trading_day}"


def journal_url_secrets(url: str) -> list[str]:
    """What must never be printed of a journal URL: its password (as written and decoded)."""
    password = urlsplit(url).password
    return [p for p in {password, unquote(password)} if p] if password else []
