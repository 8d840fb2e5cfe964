"""The small interface the session cache needs from a cache server.

Five operations on bytes carry the protocol: ``get`` (with a token naming the
exact value read), ``add`` (store only where nothing is stored), ``cas`` (store
only if the value is still the one a ``get`` returned), ``set`` and
``set_many``; ``delete`` serves the region's plain dogpile use.
Every coherence rule of :mod:`sa_sessions.cache.guard` is written once on top
of these, so memcached, Redis and the in-process cache obey the same protocol.

An implementation raises :class:`CacheUnavailable` for anything that went wrong
(refused, timed out, garbage, node marked dead); it never retries on another
node, never unpickles and never returns anything but ``bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol
from typing import runtime_checkable

from sa_sessions.exceptions import SessionConfigError

#: Opaque proof of which value a ``get`` returned; only ``cas`` of the same backend reads it.
Token = object


class CacheUnavailable(Exception):
    """The cache could not answer; callers treat it as a miss or a failed write."""


@runtime_checkable
class SessionCacheBackend(Protocol):
    """Bytes in, bytes out, with atomic add and compare-and-swap (see the module docstring).

    ``ttl`` is in seconds (a positive float, rounded up by backends with whole
    seconds); the backend may cap it at its own maximum.
    """

    def get(self, key: str) -> tuple[bytes, Token] | None:
        """The stored value and its token, or None when nothing is stored."""
        ...

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if nothing is stored under ``key``; True if stored."""
        ...

    def cas(self, key: str, value: bytes, token: Token, ttl: float) -> bool:
        """Replace the value ``token`` came from, unless it changed or vanished since.

        A token may name a value by its first bytes and length (Redis does): exact for
        the session cache's entries, whose first bytes carry a MAC over all of them.
        """
        ...

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` whatever is stored.

        The session cache uses ``set`` and ``set_many`` only to mark sessions ended,
        so an implementation that skips servers it believes dead must still try them
        here: a server that answers again, while this process does not know it yet,
        would otherwise keep serving a session that ended.
        """
        ...

    def set_many(self, values: Mapping[str, bytes], ttl: float) -> None:
        """Store several values (one round trip per server where the protocol allows);
        servers believed dead are tried too, as for :meth:`set`."""
        ...

    def delete(self, key: str) -> None:
        """Remove the value, if any."""
        ...


def whole_seconds(ttl: float, cap: int) -> int:
    """``ttl`` rounded up to whole seconds, between 1 and ``cap`` (NaN: 1; infinity: cap)."""
    if not ttl > 0:
        return 1
    if ttl >= cap:
        return cap
    return max(1, math.ceil(ttl))


def checked_max_ttl(max_ttl: object, limit: int | None = None) -> int:
    """``max_ttl`` as whole seconds >= 1 (and <= ``limit``), or a SessionConfigError."""
    if isinstance(max_ttl, bool) or not isinstance(max_ttl, int) or max_ttl < 1:
        raise SessionConfigError(f"max_ttl must be a whole number of seconds >= 1, not {max_ttl!r}")
    if limit is not None and max_ttl > limit:
        raise SessionConfigError(
            f"max_ttl must be at most {limit} seconds (memcached reads longer expiries "
            "as a Unix time, which has passed: the item would be gone at once)"
        )
    return max_ttl
