"""The API key's secret forms, a check of its shape, and scrubbing them out of text.

Three forms of a key `<id>.<secret>` must never reach an output: the key, its secret part, and the
`Bearer <key>` header value. They are scrubbed where text leaves the process, never from data the
worker acts on (a reply is parsed as received): the errors the API client (`api.transport`)
raises, the events' Redactor, the report writer, the journal's stored texts and the terminal.
Nothing here ever puts the key into a message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from worker import jsonbytes
from worker.errors import ApiError, InputError

REDACTED = "[REDACTED]"


# A real key's secret is a long random string (an issuer's is 128 bits or more: 22+ characters
# in base64, 32 in hex). One shorter than this is a placeholder or a typo, and a secret that
# short is also a string that can occur by chance in what a server sends (ids, client ids),
# which every output then shows redacted.
MIN_SECRET_CHARS = 16


def check_key(key: str, where: str = "") -> None:
    """Raise `InputError` unless `key` is `<id>.<secret>` with a secret of at least
    MIN_SECRET_CHARS; the message names `where` the key was read from, never the key."""
    shape = "expected <id>.<secret>"
    said = f"{where}: the API key" if where else "the API key"
    if not key:
        raise InputError(f"{said} is empty ({shape})")
    if any(c.isspace() for c in key):
        raise InputError(f"{said} contains whitespace ({shape})")
    key_id, dot, secret = key.partition(".")
    if not dot:
        raise InputError(f"{said} has no '.' ({shape})")
    if not key_id or not secret:
        raise InputError(f"{said} has an empty {'id' if not key_id else 'secret'} ({shape})")
    if len(secret) < MIN_SECRET_CHARS:
        raise InputError(
            f"{said} has a secret shorter than {MIN_SECRET_CHARS} characters: not a real key"
            f" ({shape}, the secret a long random string)"
        )


def secret_forms(key: str) -> tuple[str, ...]:
    """The key, its secret part and its bearer header value; longest first, none empty."""
    if not key:
        return ()
    forms = {key, f"Bearer {key}"}
    secret = key.partition(".")[2]
    if secret:
        forms.add(secret)
    return tuple(sorted(forms, key=len, reverse=True))


class Scrubber:
    """Replace every secret form in text or bytes, however an output writes it: plainly, inside
    a repr (an exception's text) or inside a JSON string. Every exit scrubs with one of these."""

    def __init__(self, secrets: Iterable[str]) -> None:
        texts: set[str] = set()
        for secret in secrets:
            if secret:
                texts |= _written_forms(secret)
        # Longest first, so a secret inside a longer form leaves no partial leftovers.
        self._texts = sorted(texts, key=len, reverse=True)
        self._bytes = [t.encode("utf-8", "surrogatepass") for t in self._texts]

    @classmethod
    def for_key(cls, key: str) -> Scrubber:
        return cls(secret_forms(key))

    def __bool__(self) -> bool:
        return bool(self._texts)

    def text(self, value: str) -> str:
        for form in self._texts:
            if form in value:
                value = value.replace(form, REDACTED)
        return value

    def raw(self, value: bytes) -> bytes:
        for form in self._bytes:
            if form in value:
                value = value.replace(form, REDACTED.encode())
        return value

    def error(self, err: ApiError) -> ApiError:
        """The same error, its server-provided parts scrubbed (in place)."""
        err.message = self.text(err.message)
        err.args = (err.message,)
        if err.excerpt is not None:
            err.excerpt = self.text(err.excerpt)
        if err.request_id is not None:
            err.request_id = self.text(err.request_id)
        return err


class ScrubbedText:
    """A text stream (stdout for rich's tables) that scrubs each write, and is otherwise the
    stream it wraps (its `isatty`, `fileno`, `encoding`, ...). A cell that rich folds across
    lines is written in pieces: a printer scrubs such text itself (`Terminal`)."""

    def __init__(self, stream: TextIO, scrub: Callable[[str], str]) -> None:
        self._stream = stream
        self._scrub = scrub

    def write(self, text: str) -> int:
        return self._stream.write(self._scrub(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _written_forms(secret: str) -> set[str]:
    """Every way an output can spell `secret`: as is, or inside a repr (in double or in single
    quotes), each also as JSON writes it (escaped quotes and backslashes; non-ASCII escaped or
    not)."""
    forms: set[str] = set()
    # repr quotes with ' and escapes ' inside, unless the text has ' and no ": the secret's
    # spelling depends on the text around it, so take it in both kinds of company.
    in_single_quotes, in_double_quotes = repr(secret + '"')[1:-2], repr(secret + "'")[1:-2]
    for text in (secret, in_single_quotes, in_double_quotes):
        forms.add(text)
        forms.add(json.dumps(text)[1:-1])
        forms.add(json.dumps(text, ensure_ascii=False)[1:-1])
        forms.add(jsonbytes.dumps(text).decode()[1:-1])
    return forms
