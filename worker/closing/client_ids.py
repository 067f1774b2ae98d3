"""The client `id` of a closing order sent through submit_orders: derived, never drawn.

The same job, account, instrument and residue generation always give the same id, in any
process and on any rerun, so a re-sent or resumed submission collides with the first one at the
server (409) instead of creating a second order. A new generation (a residue close) gets a new id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

PREFIX = "lq-"
MAX_LENGTH = 64  # NewOrderRequest.id's maxLength in the spec
# What a derived id is made of: lower-case letters, digits and '-', safe in a URL path and a
# comma-separated `order_ids` filter alike.
SHAPE = re.compile(r"^lq-[a-z2-7]{24}-g[0-9]{1,10}$")
_DIGEST_BYTES = 15  # 120 bits: 24 base32 characters, no padding


def client_order_id(job: str, account_id: int, instrument_id: str, generation: int) -> str:
    """`lq-<24 base32 chars>-g<generation>`, at most 39 characters.

    `instrument_id` should be the instrument's UUID as the API spells it, not a symbol, so two
    spellings of one position cannot give two ids. `generation` is 0 for the first close of a
    position and counts up by one for each residue close.
    """
    if not job:
        raise ValueError("a client id needs a job key")
    if isinstance(account_id, bool) or not isinstance(account_id, int):
        raise ValueError(f"account_id must be an int, not {account_id!r}")
    if not 0 <= generation < 10**10:
        raise ValueError(f"generation must be between 0 and 9,999,999,999, not {generation}")
    # JSON keeps the parts apart: ("a-b", "c") and ("a", "b-c") cannot hash alike.
    # UUIDs are case-insensitive and listings spell them as they like: one spelling, one id.
    # The text of json.dumps([job, account_id, instrument], separators=(",", ":")), built from
    # its parts: a list with separators takes a new encoder per call (~10 us, once a target).
    material = f"[{json.dumps(job)},{int(account_id)},{json.dumps(instrument_id.lower())}]"
    digest = hashlib.sha256(material.encode()).digest()[:_DIGEST_BYTES]
    text = base64.b32encode(digest).decode("ascii").lower()
    return f"{PREFIX}{text}-g{generation}"
