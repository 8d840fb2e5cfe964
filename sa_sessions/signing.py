"""HMAC-SHA256 keys: per-purpose derivation, rotation lists, hidden secrets.

Stdlib only.  A :class:`KeyRing` holds the application's master keys (oldest
first, the LAST one is current) and derives one key per purpose, so a cookie
signature can never pass as a blob MAC or vice versa (SECURITY.md R19).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from .exceptions import SessionConfigError

#: Shortest master key accepted, in bytes (SECURITY.md R56).
MIN_KEY_BYTES = 32

_DERIVATION_LABEL = b"sa_sessions.v1"


class Secret:
    """Bytes that never show up in ``repr``, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        """The raw key bytes; keep them out of anything that is printed."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


#: A master key, or a rotation list of them (oldest first; the last one signs).
KeyInput = bytes | str | Secret | Sequence[bytes | str | Secret]


def _as_key_bytes(key: bytes | str | Secret, what: str) -> bytes:
    if isinstance(key, Secret):
        key = key.reveal()
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes):
        raise SessionConfigError(f"{what} must be bytes or str, not {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise SessionConfigError(
            f"{what} must be at least {MIN_KEY_BYTES} bytes; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return key


def normalize_keys(keys: KeyInput, what: str = "secret key") -> tuple[Secret, ...]:
    """Validate a key or a rotation list (oldest first, newest last)."""
    if isinstance(keys, (bytes, str, Secret)):
        key_list: Sequence[bytes | str | Secret] = [keys]
    elif isinstance(keys, (list, tuple)):
        key_list = list(keys)
    else:
        raise SessionConfigError(f"{what} is required: bytes, str, or a list of them")
    if not key_list:
        raise SessionConfigError(f"{what} is required")
    return tuple(Secret(_as_key_bytes(k, what)) for k in key_list)


def derive_key(master: bytes, purpose: str) -> bytes:
    """One key per purpose; the purpose is length-prefixed so labels cannot collide."""
    label = purpose.encode("utf-8")
    info = _DERIVATION_LABEL + len(label).to_bytes(4, "big") + label
    return hmac.new(master, info, hashlib.sha256).digest()


class KeyRing:
    """Derived keys for one purpose: the newest signs, every key verifies.

    Each key's HMAC state after the key block is computed once and copied per
    message, which saves a fifth of the cost of signing a cookie-sized value.
    """

    __slots__ = ("_keyed", "_keys")

    def __init__(self, keys: KeyInput, purpose: str) -> None:
        secrets = normalize_keys(keys)
        # Newest first: verification tries the current key before the fallbacks.
        self._keys = tuple(derive_key(s.reveal(), purpose) for s in reversed(secrets))
        self._keyed = tuple(hmac.new(key, digestmod=hashlib.sha256) for key in self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self._keys)} keys>)"

    def sign(self, message: bytes | memoryview, *more: bytes | memoryview) -> bytes:
        """The 32-byte HMAC-SHA256 of ``message`` (followed by ``more``) under the current key.

        Parts are fed in turn, so a large message never has to be copied into one.
        """
        mac = self._keyed[0].copy()
        mac.update(message)
        for part in more:
            mac.update(part)
        return mac.digest()

    def verify(
        self, message: bytes | memoryview, mac: bytes, *more: bytes | memoryview
    ) -> int | None:
        """Index of the key that made ``mac`` over ``message`` (then ``more``), or None.

        Constant time per key.
        """
        for index, keyed in enumerate(self._keyed):
            expected = keyed.copy()
            expected.update(message)
            for part in more:
                expected.update(part)
            if hmac.compare_digest(expected.digest(), mac):
                return index
        return None
