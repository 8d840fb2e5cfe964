"""The bytes of a cache entry: a copy of a row, a row-only marker, or an end marker.

Layout (integers big-endian, signed)::

    offset  size  field
    0       1     kind: 1 copy of the row (the sealed blob follows)
                        2 row-only: the session is too large to cache; read the row
                        3 ended: the session was ended (logout, regeneration, revocation)
    1       8     version of the row (copy, row-only) or the reason it ended (ended)
    9       8     stamp, microseconds since the Unix epoch: when the copy was last known
                  to equal the row (copy, row-only), or when the session ended (ended)
    17      32    tag: HMAC-SHA256 with the cache-entry key over the hashed id, bytes
                  0..17 and, for a copy, the blob's own 32-byte MAC
    49      n     the sealed blob (copy only; see :mod:`sa_sessions.codec.blob`)

The blob's MAC already binds its content to the hashed id and the version; the
tag binds the stamp to that exact blob.  Without it, anyone able to write to the
cache could take an old copy, give it a fresh stamp, and so defeat the bound on
how long an unverified copy is served.  Entries whose tag fails are misses.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from sa_sessions.signing import KeyInput
from sa_sessions.signing import KeyRing

#: Purpose of the key derived for entry tags.
TAG_PURPOSE = "sa_sessions.cache-entry"

HEADER_SIZE = 49
_BLOB_MAC_SIZE = 32
_SIGNED_FIELDS = slice(0, 17)


class Kind(IntEnum):
    """What an entry says about its session."""

    COPY = 1
    ROW_ONLY = 2
    ENDED = 3


class EndReason(IntEnum):
    """Why a session ended; a request holding its cookie reacts differently to each."""

    #: ``terminate()``, an emptied session, or expiry: the cookie should be expired.
    ENDED = 1
    #: ``regenerate_id()``, or the session moved back into its cookie: the response
    #: that did it carries the new cookie, which a parallel request holding the old
    #: one must not expire.
    REPLACED = 2
    #: ``revoke()`` by an administrator or "log out everywhere".
    REVOKED = 3
    #: Found past its expiry or idle for too long, and deleted.
    EXPIRED = 4


class Entry(NamedTuple):
    """A decoded, authenticated entry."""

    kind: Kind
    #: Row version (COPY, ROW_ONLY) or :class:`EndReason` value (ENDED).
    number: int
    stamp_us: int
    #: A view into the entry's bytes (no copy of a large blob).
    blob: memoryview | None


class EntryCodec:
    """Builds and authenticates entries with a key derived from the store's secret keys."""

    __slots__ = ("_ring",)

    def __init__(self, keys: KeyInput) -> None:
        self._ring = KeyRing(keys, TAG_PURPOSE)

    def _tag(self, hashed_id: bytes, fields: bytes, blob_mac: bytes | memoryview) -> bytes:
        return self._ring.sign(hashed_id, fields, blob_mac)

    def _build(
        self, hashed_id: str, kind: Kind, number: int, stamp_us: int, blob: bytes | memoryview
    ) -> bytes:
        fields = (
            bytes((kind,))
            + number.to_bytes(8, "big", signed=True)
            + stamp_us.to_bytes(8, "big", signed=True)
        )
        tag = self._tag(hashed_id.encode("ascii"), fields, blob[-_BLOB_MAC_SIZE:] if blob else b"")
        return b"".join((fields, tag, blob))

    def copy(self, hashed_id: str, version: int, stamp_us: int, blob: bytes | memoryview) -> bytes:
        """An entry holding the sealed ``blob`` of ``version``, known current at ``stamp_us``."""
        if len(blob) < _BLOB_MAC_SIZE:
            raise ValueError("a sealed blob ends with its 32-byte MAC")
        return self._build(hashed_id, Kind.COPY, version, stamp_us, blob)

    def row_only(self, hashed_id: str, version: int, stamp_us: int) -> bytes:
        """An entry saying: ``version`` is current but too large to cache; read the row."""
        return self._build(hashed_id, Kind.ROW_ONLY, version, stamp_us, b"")

    def ended(self, hashed_id: str, reason: EndReason, ended_us: int) -> bytes:
        """An entry saying the session ended (it outlives any refill that was in flight)."""
        return self._build(hashed_id, Kind.ENDED, int(reason), ended_us, b"")

    def decode(self, hashed_id: str, raw: bytes) -> Entry | None:
        """The entry, or None for anything not made by :meth:`copy`/:meth:`row_only`/:meth:`ended`
        under this key and hashed id."""
        if len(raw) < HEADER_SIZE:
            return None
        kind = raw[0]
        blob = memoryview(raw)[HEADER_SIZE:]
        blob_mac: bytes | memoryview
        if kind == Kind.COPY:
            if len(blob) < _BLOB_MAC_SIZE:
                return None
            blob_mac = blob[-_BLOB_MAC_SIZE:]
        elif kind in (Kind.ROW_ONLY, Kind.ENDED):
            if blob:
                return None
            blob_mac = b""
        else:
            return None
        fields = raw[_SIGNED_FIELDS]
        tag = raw[17:HEADER_SIZE]
        if self._ring.verify(hashed_id.encode("ascii"), tag, fields, blob_mac) is None:
            return None
        return Entry(
            Kind(kind),
            int.from_bytes(raw[1:9], "big", signed=True),
            int.from_bytes(raw[9:17], "big", signed=True),
            blob if kind == Kind.COPY else None,
        )
