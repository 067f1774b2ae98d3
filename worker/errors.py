"""The project's one error tree. Each API error says what is known about the request's fate.

    LiquidatorError
    ├── InputError                  bad targets or settings; nothing was sent (exit 2)
    │   └── JournalRefused          the journal is held by another run, damaged or unusable
    ├── JournalError                an intent could not be committed; no further close is sent
    │   └── LockLost                the run no longer holds the journal's lock; nothing more is sent
    └── ApiError                    a request to the API did not give the expected answer
        ├── NotSent                 provably never reached the server (connection refused, DNS)
        ├── RateLimited             429: the server refused it; safe to send again after retry_after
        ├── Rejected                a definitive 4xx: the server looked and said no (no effect)
        │   ├── Unauthorized        401: credentials missing or invalid
        │   ├── Forbidden           403: this key may not act on this account
        │   ├── NotFound            404: no such account, instrument or position
        │   └── Conflict            409: a duplicate; for a submission, its client id is taken
        ├── OutcomeUnknown          may have reached the server: timeout after sending, dropped
        │   │                       connection, 5xx, a reply that is not the promised envelope
        │   └── ResendRefused       the HTTP library tried to send the same request twice
        └── StillWorking            cancelled resting orders kept working past the wait; the
                                    close was not submitted

`api.transport` (aiohttp and timeout errors) and `api.envelope` (a reply's status and body)
translate into this tree, and nothing else does.
`api.policy` decides from these types alone what may be retried and what must be looked at first.
"""

from __future__ import annotations


class LiquidatorError(Exception):
    """Base of every error this project raises on purpose."""


class InputError(LiquidatorError):
    """Targets or settings are invalid. The message names the file and the line or key."""


class JournalRefused(InputError):
    """The journal cannot be used for this run (locked by another run, damaged, unreachable).

    Raised before any request that changes anything; the run ends with exit 2 and its report.
    """


class JournalError(LiquidatorError):
    """The journal could not commit an intent: no further close may be sent."""


class LockLost(JournalError):
    """The run no longer holds (or could not confirm it holds) the journal's lock, found just
    before a request went out: that request was not sent, and no other may be."""


class ApiError(LiquidatorError):
    """A request did not get the answer the spec promises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        excerpt: str | None = None,
        retry_after: float | None = None,
        details: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.excerpt = excerpt
        # Seconds the server asked us to wait (Retry-After), when it said.
        self.retry_after = retry_after
        # The error envelope's `details` objects, when it gave any (which order of a batch a
        # refusal is about, a batch's size limit): read by `worker.closing.batch_answer`.
        self.details = details or []

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.excerpt:
            parts.append(f"body={self.excerpt!r}")
        return " ".join(parts)


class NotSent(ApiError):
    """The request never left this host, or was refused before the server read it."""


class RateLimited(ApiError):
    """429: the server refused the request without acting on it."""


class Rejected(ApiError):
    """A definitive 4xx (400, 403, 404, 409, 422, ...): the server said no and did nothing."""


class Unauthorized(Rejected):
    """401: the API key is missing, malformed or revoked."""


class Forbidden(Rejected):
    """403: the key may not act on this account."""


class NotFound(Rejected):
    """404: the account, instrument or position does not exist."""


class OutcomeUnknown(ApiError):
    """The request may have been applied. Never re-send a close on this without looking first."""


class ResendRefused(OutcomeUnknown):
    """The HTTP library tried to send one logical request a second time; we refused it.

    The first send may have been applied, so the fate is unknown, exactly like a dropped reply.
    """


class Conflict(Rejected):
    """409: a duplicate. For submit_orders: an order with this client id already exists.

    Nothing new was created by this request; the earlier one it collides with may be ours.
    """


class StillWorking(ApiError):
    """submit_orders with cancel_orders: the instrument's cancelled orders were still working
    when the wait for them ended, so no close was submitted (one could self-match or flip)."""
