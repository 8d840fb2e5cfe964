"""The dogpile side of this library's cache backends: a region usable for plain bytes too.

The session store talks to a backend's ``session_cache`` (the interface of
:mod:`sa_sessions.cache.backend`).  dogpile itself calls the methods below,
so a region on one of these backends also works for an application's own
``region.get``/``region.set`` (bytes; dogpile serializes other values first).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Mapping

from dogpile.cache.api import NO_VALUE
from dogpile.cache.api import BytesBackend
from dogpile.cache.api import NoValue

from .backend import SessionCacheBackend

# What dogpile puts before a serialized value: its JSON metadata, then "|".
_FRAMED = re.compile(rb"\{[^|]{0,200}\}\|")


def _bytes_only(value: object) -> bytes:
    """The region serializer: bytes pass, anything else is refused rather than pickled."""
    if type(value) is not bytes:
        raise TypeError(
            f"this region stores bytes only, not {type(value).__name__}: pass "
            "serializer=/deserializer= to make_region() to store other values"
        )
    return value


def _as_stored(value: bytes) -> bytes:
    """The region deserializer: bytes come back as they were, never unpickled."""
    return value


class SessionCacheRegionBackend(BytesBackend):
    """A dogpile backend over a :class:`~sa_sessions.cache.backend.SessionCacheBackend`.

    Its default serializer stores bytes only: anyone able to write to the cache could
    otherwise make ``region.get()`` unpickle what they wrote.  A region made with its
    own ``serializer``/``deserializer`` uses those instead (its owner's choice).
    """

    serializer = staticmethod(_bytes_only)
    deserializer = staticmethod(_as_stored)

    #: The session cache interface (set by the subclass's ``__init__``).
    session_cache: SessionCacheBackend
    #: TTL of values written through the plain dogpile API (seconds).
    plain_ttl: float = 7 * 24 * 3600.0

    def get_serialized(self, key: str) -> bytes | NoValue:
        found = self.session_cache.get(key)
        if found is None or not _FRAMED.match(found[0]):
            return NO_VALUE  # not written through a region (e.g. a session entry): a miss
        return found[0]

    def get_serialized_multi(self, keys: Iterable[str]) -> list[bytes | NoValue]:
        return [self.get_serialized(key) for key in keys]

    def set_serialized(self, key: str, value: bytes) -> None:
        self.session_cache.set(key, value, self.plain_ttl)

    def set_serialized_multi(self, mapping: Mapping[str, bytes]) -> None:
        self.session_cache.set_many(mapping, self.plain_ttl)

    def delete(self, key: str) -> None:
        self.session_cache.delete(key)

    def delete_multi(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.session_cache.delete(key)
