"""Session ids: generation, shape check, and the hash that storage uses.

Ids are 256-bit ``secrets.token_urlsafe(32)`` strings (43 chars of
``[A-Za-z0-9_-]``).  An incoming id is shape-checked before it reaches any
backend or log line, and storage (rows and cache keys) only ever sees
``sha256(id)``, so a dump of either yields no usable cookie.
"""

from __future__ import annotations

import hashlib
import re
import secrets

SESSION_ID_LENGTH = 43
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
_HASHED_PATTERN = re.compile(r"[0-9a-f]{64}")


def new_session_id() -> str:
    """A fresh 256-bit session id."""
    return secrets.token_urlsafe(32)


def is_well_formed_id(value: object) -> bool:
    """True only for a string shaped exactly like an id this library issues."""
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def hash_session_id(session_id: str) -> str:
    """SHA-256 hex of the id: the primary key and cache key; never reversible."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def is_hashed_id(value: object) -> bool:
    """True only for what :func:`hash_session_id` returns: 64 lowercase hex characters.

    Checked wherever a hashed id is turned into a cache key or bound into a MAC, since
    one read back from the database or the cache may have been tampered with.
    """
    return isinstance(value, str) and _HASHED_PATTERN.fullmatch(value) is not None


def log_id(hashed_id: str) -> str:
    """A short, non-reversible tag for log lines (a prefix of the stored hash)."""
    return hashed_id[:12]
