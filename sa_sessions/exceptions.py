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


class SessionIdTaken(SessionError):
    """A new session was to be stored under an id that already has a row.

    The row is never merged into or overwritten: a cookie planted in a victim's
    browser must not lead into someone else's session.  Store it under a fresh id.
    """


class SessionIntegrityError(SessionError):
    """The database refused the session row (a foreign key, NOT NULL or unique
    constraint on a derived column); nothing was written.

    The message names no values (they may be session data); ``original_error``
    holds the database's own exception.
    """

    def __init__(self, message: str, original_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.original_error = original_error


class UnstorableValue(SessionError, TypeError):
    """The session holds a value its codec cannot store (e.g. a socket, a lambda, a class
    not allowed in pickled sessions); nothing was written."""


class SessionBackendUnavailable(SessionError):
    """The database could not be reached; server-side sessions cannot be served."""

    def __init__(self, message: str, original_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.original_error = original_error


class CodecError(SessionError):
    """Stored or transmitted bytes failed authentication or could not be decoded."""


class CleanupAlreadyRunning(SessionError):
    """Another cleaner holds the purge lock for this table; this one did nothing."""
