"""Session ids: generation, shape check, and the hash that storage uses.

Ids are 256-bit ``secrets.token_urlsafe(32)`` strings (43 chars of
``[A-Za-z0-9_-]``).  An incoming id is shape-checked before it reaches any
backend or log line, and storage only ever sees ``sha256(id)`` (R1-R5).
"""

from __future__ import annotations

import hashlib
import re
import secrets

SESSION_ID_LENGTH = 43
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> str:
    """A fresh 256-bit session id."""
    return secrets.token_urlsafe(32)


def is_well_formed_id(value: object) -> bool:
    """True only for a string shaped exactly like an id this library issues."""
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def hash_session_id(session_id: str) -> str:
    """SHA-256 hex of the id: the primary key and cache key; never reversible."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def log_id(hashed_id: str) -> str:
    """A short, non-reversible tag for log lines (a prefix of the stored hash)."""
    return hashed_id[:12]
