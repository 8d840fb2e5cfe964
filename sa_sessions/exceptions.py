"""Exceptions raised by sa_sessions.

Every error derives from :class:`SessionError`.  Messages never carry keys, raw
session ids or session contents: they are safe to log and to show operators.
Tampered or undecodable input is *not* an exception: it becomes a new empty
session plus a warning on the ``sa_sessions.security`` logger.
"""

from __future__ import annotations


class SessionError(Exception):
    """Root of every sa_sessions error."""


class SessionConfigError(SessionError, ValueError):
    """A setting is missing, unsafe or contradictory (raised at construction)."""


class SessionTooLarge(SessionError):
    """The encoded session exceeds the configured size cap; nothing was written."""

    def __init__(self, size: int, limit: int, where: str = "session") -> None:
        super().__init__(f"encoded {where} is {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class SessionConflict(SessionError):
    """A versioned save kept losing to concurrent writers past the retry bound."""


class SessionBackendUnavailable(SessionError):
    """The database could not be reached; server-side sessions cannot be served."""

    def __init__(self, message: str, original_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.original_error = original_error


class CodecError(SessionError):
    """Stored or transmitted bytes failed authentication or could not be decoded."""


class CleanupAlreadyRunning(SessionError):
    """Another cleaner holds the purge lock for this table; this one did nothing."""
