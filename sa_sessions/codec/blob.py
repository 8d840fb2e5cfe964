"""Sealed server blobs: the bytes stored in the session row and the cache entry.

Layout (all integers big-endian)::

    offset  size  field
    0       1     header: high nibble = format version (1, 2 or 3); low nibble = flags
                  0x01 payload is tagged JSON (else pickle protocol 5)
                  0x02 payload is zlib-compressed (formats 1 and 2 only)
                  0x04 ssl_only
                  0x08 keyed pickle: every value is pickled on its own (never with 0x01)
    formats 2 and 3:
    1       1     session flags: 0x01 pinned (kept server-side even when small)
                                 0x02 an idle timeout of its own follows the times
    then    8     expires_at, signed microseconds since the Unix epoch (UTC)
            8     touched_at, same encoding
            4     idle timeout in seconds (session flag 0x02 only)
            n     payload
    end-32  32    HMAC-SHA256(blob key, LABEL || hashed_id (64 ASCII) || version (8, signed)
                                        || every byte before the MAC)

Payloads:

* format 3, keyed (what the pickle serializer writes): an *indexed* payload, see
  :mod:`sa_sessions.codec.packed`: the key tuple, the stored length of each value, then
  the values, each its own pickle, compressed on its own when large.  Opening decodes
  only the index; a request that reads one key unpickles (and inflates) only that key,
  and a save copies the stored bytes of every key the request left alone.
* formats 1 and 2, keyed: a pickle of ``{key: pickle of the value}``, the whole payload
  optionally compressed.  Read, and written only with ``layout="keyed"`` (for a rolling
  upgrade from 0.1.0, which reads format 1 only).
* formats 1 and 2, not keyed: tagged JSON (the ``json`` serializer) or, in blobs from
  older releases, one plain pickle of the whole dict.

The MAC binds the blob to its row and version, so a blob copied from another row or
replayed at another version fails; it is checked in constant time before anything is
decompressed or deserialized, so write access to the database or the cache cannot plant
a payload or swap another session's blob.  Pickle is then loaded only through the exact
allow-list of :mod:`sa_sessions.codec.pickling`, and values are checked against that same
allow-list while pickling, so nothing is stored that loading would refuse.  The MAC, not
the allow-list, is what keeps untrusted bytes away from the unpickler: with a leaked key
an attacker still cannot run code, but can make the unpickler allocate memory.
"""

from __future__ import annotations

import logging
import zlib
from array import array
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from itertools import compress
from itertools import count
from itertools import repeat
from operator import is_not
from typing import Any
from typing import ClassVar
from typing import Final
from typing import Literal

from sa_sessions._clock import from_micros
from sa_sessions._clock import to_micros
from sa_sessions.codec import tagged
from sa_sessions.codec.inflate import inflate
from sa_sessions.codec.packed import COMPRESSED
from sa_sessions.codec.packed import Packed
from sa_sessions.codec.packed import index_header
from sa_sessions.codec.packed import is_compressed
from sa_sessions.codec.packed import lengths_array
from sa_sessions.codec.packed import unpacked
from sa_sessions.codec.pickling import DEFAULT_PICKLE_ALLOWLIST
from sa_sessions.codec.pickling import PickleRules
from sa_sessions.codec.pickling import Sink
from sa_sessions.codec.pickling import dumps_plain
from sa_sessions.codec.pickling import type_name
from sa_sessions.exceptions import CodecError
from sa_sessions.exceptions import SessionConfigError
from sa_sessions.exceptions import SessionTooLarge
from sa_sessions.ids import is_hashed_id
from sa_sessions.signing import KeyInput
from sa_sessions.signing import KeyRing

__all__ = [
    "DEFAULT_PICKLE_ALLOWLIST",
    "BlobCodec",
    "BlobMeta",
    "Layout",
    "Packed",
    "Serializer",
    "unpacked",
]

_log = logging.getLogger(__name__)
_security_log = logging.getLogger("sa_sessions.security")

Serializer = Literal["pickle", "json"]
#: How pickled sessions are laid out: ``indexed`` (format 3) or ``keyed`` (formats 1-2).
Layout = Literal["indexed", "keyed"]

#: Purpose string of the key derived for blob MACs (see :class:`sa_sessions.signing.KeyRing`).
MAC_PURPOSE: Final = "sa_sessions.blob-mac"
FORMAT_VERSION: Final = 1
#: The format with a session-flags byte (pinned, own idle timeout).
FORMAT_WITH_FLAGS: Final = 2
#: Format 2's header with an indexed payload.
FORMAT_INDEXED: Final = 3
_FORMATS: Final = frozenset({FORMAT_VERSION, FORMAT_WITH_FLAGS, FORMAT_INDEXED})
SESSION_PINNED: Final = 0x01
SESSION_IDLE: Final = 0x02
_SESSION_FLAG_MASK: Final = SESSION_PINNED | SESSION_IDLE
#: Longest idle timeout a blob can hold (4 unsigned bytes of seconds: over 136 years).
MAX_IDLE_SECONDS: Final = 2**32 - 1
FLAG_JSON: Final = 0x01
FLAG_ZLIB: Final = 0x02
FLAG_SSL_ONLY: Final = 0x04
FLAG_KEYED: Final = 0x08
HEADER_SIZE: Final = 17
MAC_SIZE: Final = 32

_FLAG_MASK: Final = FLAG_JSON | FLAG_ZLIB | FLAG_SSL_ONLY | FLAG_KEYED
_PAYLOAD_FLAGS: Final = FLAG_JSON | FLAG_ZLIB | FLAG_KEYED
_MIN_BLOB: Final = HEADER_SIZE + MAC_SIZE
_MAC_LABEL: Final = b"sa_sessions.blob.v1\x00"
_STR_ONLY: Final = frozenset({str})
_BYTES_ONLY: Final = frozenset({bytes})


@dataclass(frozen=True, slots=True)
class BlobMeta:
    """Row metadata sealed into the blob header, so the MAC covers it too."""

    expires_at: datetime
    touched_at: datetime
    ssl_only: bool = False
    #: Kept server-side even when it would fit its cookie (``Session.save(True)``).
    pinned: bool = False
    #: The session's own idle timeout (None: the application's).
    idle_timeout: timedelta | None = None


def _mac_prefix(hashed_id: str, version: int) -> bytes:
    if type(hashed_id) is not str or not is_hashed_id(hashed_id):
        raise ValueError("hashed_id must be 64 lowercase hex characters")
    if type(version) is not int or not -(2**63) <= version < 2**63:
        raise ValueError("version must be an int that fits in 8 signed bytes")
    return _MAC_LABEL + hashed_id.encode("ascii") + version.to_bytes(8, "big", signed=True)


class BlobCodec:
    """Seals session data into MAC-bound blobs and opens them again (see the module docstring).

    Immutable once built and safe to share between threads: one per store.
    ``hashed_id`` (64 lowercase hex chars) and ``version`` (8-byte signed int) come from the
    caller, not from stored bytes, so bad values are bugs and raise ValueError.
    """

    #: Cap on the serialized payload before compression, and on the stored blob.
    default_max_bytes: ClassVar[int] = 4 * 1024 * 1024
    #: A value (or, in formats 1-2 and JSON, a payload) is compressed only above this
    #: size: below it, inflating on every read costs more than the bytes saved.
    compress_threshold: ClassVar[int] = 32 * 1024
    #: zlib level used when compressing: level 1 costs a third of level 6 for ~5 % more bytes.
    compress_level: ClassVar[int] = 1

    __slots__ = ("_ring", "_rules", "layout", "max_bytes", "serializer")

    def __init__(
        self,
        keys: KeyInput | KeyRing,
        *,
        serializer: Serializer = "pickle",
        max_bytes: int | None = None,
        allowed_classes: Iterable[type] = (),
        layout: Layout = "indexed",
    ) -> None:
        self._ring = keys if isinstance(keys, KeyRing) else KeyRing(keys, purpose=MAC_PURPOSE)
        if serializer not in ("pickle", "json"):
            raise SessionConfigError(f"serializer must be 'pickle' or 'json', not {serializer!r}")
        if layout not in ("indexed", "keyed"):
            raise SessionConfigError(f"layout must be 'indexed' or 'keyed', not {layout!r}")
        if max_bytes is None:
            max_bytes = self.default_max_bytes
        if type(max_bytes) is not int or max_bytes < 1:
            raise SessionConfigError("max_bytes must be a positive int")
        self.serializer: Serializer = serializer
        self.layout: Layout = layout
        self.max_bytes: int = max_bytes
        self._rules = PickleRules(allowed_classes)

    def __repr__(self) -> str:
        return (
            f"BlobCodec(serializer={self.serializer!r}, layout={self.layout!r}, "
            f"max_bytes={self.max_bytes})"
        )

    # ----------------------------------------------------------------------- sealing

    def seal(self, hashed_id: str, version: int, meta: BlobMeta, data: Mapping[str, Any]) -> bytes:
        """The stored form of ``data``.

        :raises TypeError: a value the serializer (and so :meth:`open`) cannot handle.
        :raises SessionTooLarge: the payload or the blob would exceed ``max_bytes``.
        """
        prefix = _mac_prefix(hashed_id, version)
        times = to_micros(meta.expires_at).to_bytes(8, "big", signed=True) + to_micros(
            meta.touched_at
        ).to_bytes(8, "big", signed=True)
        if type(data) is not dict:
            data = dict(data)
        if not _STR_ONLY.issuperset(map(type, data)):
            bad = next(key for key in data if type(key) is not str)
            raise TypeError(f"session keys must be str, not {type_name(type(bad))}")
        indexed = self.serializer == "pickle" and self.layout == "indexed"
        if indexed:
            payload, flags = self._indexed(data), FLAG_KEYED
        else:
            payload, flags = self._whole(data)
        if len(payload) > self.max_bytes:
            raise SessionTooLarge(len(payload), self.max_bytes, "session")
        if not indexed and len(payload) > self.compress_threshold:
            packed = zlib.compress(payload, self.compress_level)
            if len(packed) < len(payload):
                payload = packed
                flags |= FLAG_ZLIB
        if meta.ssl_only:
            flags |= FLAG_SSL_ONLY
        session_flags = SESSION_PINNED if meta.pinned else 0
        extra = b""
        if meta.idle_timeout is not None:
            seconds = int(meta.idle_timeout.total_seconds())
            if not 1 <= seconds <= MAX_IDLE_SECONDS:
                raise ValueError("idle_timeout must be between 1 second and 2**32 - 1 seconds")
            session_flags |= SESSION_IDLE
            extra = seconds.to_bytes(4, "big")
        if indexed:
            head = bytes(((FORMAT_INDEXED << 4) | flags, session_flags))
        elif session_flags:
            head = bytes(((FORMAT_WITH_FLAGS << 4) | flags, session_flags))
        else:
            head = bytes(((FORMAT_VERSION << 4) | flags,))
        body = b"".join((head, times, extra, payload))
        blob = body + self._ring.sign(prefix, body)
        if len(blob) > self.max_bytes:
            raise SessionTooLarge(len(blob), self.max_bytes, "session")
        return blob

    def _whole(self, data: dict[str, Any]) -> tuple[bytes, int]:
        """A format 1-2 payload: tagged JSON, or a keyed pickle (``{key: pickle}``)."""
        if self.serializer == "json":
            return tagged.dumps(unpacked(data)), FLAG_JSON
        dump = self._dumper(Sink(self.max_bytes))
        entries = {key: bytes(dump(key, value, compress=False)) for key, value in data.items()}
        # Only str keys and bytes values: the plain pickler cannot be fooled here.
        return dumps_plain(entries), FLAG_KEYED

    def _indexed(self, data: dict[str, Any]) -> bytes:
        """A format 3 payload (see :mod:`sa_sessions.codec.packed`)."""
        keys = tuple(data)
        values = list(data.values())
        dump = self._dumper(Sink(self.max_bytes))
        base = next((value for value in values if type(value) is Packed), None)
        reused = None
        if base is not None and base.codec is self:
            reused = self._reuse(base, keys, values, dump)
        if reused is None:
            parts = [dump(key, value, compress=True) for key, value in data.items()]
            lengths = lengths_array(map(len, parts))
        else:
            parts, lengths = reused
        head = index_header(dumps_plain(keys), len(keys), lengths)
        return b"".join((head, *parts))

    def _reuse(
        self, base: Packed, keys: tuple[str, ...], values: list[Any], dump: _Dump
    ) -> tuple[list[bytes | memoryview], array[int]] | None:
        """Value parts and lengths when ``keys`` begin with ``base``'s keys, in order.

        The usual save (a few keys of a loaded session changed, some added): the
        unchanged values are copied as whole runs of ``base``'s stored bytes and only
        the changed ones are pickled, so the cost follows the change, not the session.
        None when keys were deleted or reordered, or most values changed.
        """
        stored = base.keys
        kept = len(stored)
        if keys[:kept] != stored:
            return None
        changed = list(compress(count(), map(is_not, values, repeat(base))))
        if len(changed) > kept // 2 + 8:
            return None
        view = base.values_view()
        spans = base.spans()
        lengths = lengths_array(base.lengths())
        dump.sink.count(len(view))
        parts: list[bytes | memoryview] = []
        run_start: int | None = 0
        for position in changed:
            key = keys[position]
            if position < kept:
                start, end = spans[key]
                dump.sink.count(start - end)  # the old bytes of this key leave
                parts.append(view[run_start:start])
                run_start = end
                raw = dump(key, values[position], compress=True)
                lengths[position] = len(raw)
            else:
                if run_start is not None:  # the first appended key: base ends here
                    parts.append(view[run_start:])
                    run_start = None
                raw = dump(key, values[position], compress=True)
                lengths.append(len(raw))
            parts.append(raw)
        if run_start is not None:
            parts.append(view[run_start:])
        return parts, lengths

    def _dumper(self, sink: Sink) -> _Dump:
        return _Dump(self, sink)

    # ----------------------------------------------------------------------- opening

    def open(
        self, hashed_id: str, version: int, blob: bytes | memoryview
    ) -> tuple[BlobMeta, dict[str, Any]]:
        """Verify the MAC, then decode every value.

        :raises CodecError: anything wrong with ``blob`` (tampered, foreign, truncated, oversized,
            undecodable, refused by the allow-list); the message never quotes its content.
        """
        meta, data = self.open_lazy(hashed_id, version, blob)
        try:
            return meta, unpacked(data)
        except CodecError:
            _security_log.error("session blob %s has an undecodable value", hashed_id[:12])
            raise

    def open_lazy(
        self, hashed_id: str, version: int, blob: bytes | memoryview
    ) -> tuple[BlobMeta, dict[str, Any]]:
        """Like :meth:`open`, but the values of a keyed pickle stay :class:`Packed`.

        Everything but the values is checked here: MAC, format, and that the payload
        describes a dict of unique str keys.  A value that cannot be decoded raises
        CodecError when :meth:`Packed.value` is called for it.
        """
        prefix = _mac_prefix(hashed_id, version)
        if type(blob) is memoryview:  # a view into a cache entry: read in place
            if blob.format != "B" or not blob.c_contiguous:
                blob = blob.tobytes()
        elif type(blob) is not bytes:
            try:
                blob = bytes(blob)
            except Exception as exc:
                raise CodecError("session blob is not bytes") from exc
        size = len(blob)
        if size < _MIN_BLOB:
            raise CodecError("session blob is too short")
        if size > self.max_bytes:
            raise CodecError(f"session blob is {size} bytes, over the limit of {self.max_bytes}")
        header = blob[0]
        form = header >> 4
        if (
            form not in _FORMATS
            or header & 0x0F & ~_FLAG_MASK
            or header & (FLAG_JSON | FLAG_KEYED) == FLAG_JSON | FLAG_KEYED
            or (form != FORMAT_VERSION and blob[1] & ~_SESSION_FLAG_MASK)
            or (
                form == FORMAT_INDEXED
                and header & (FLAG_JSON | FLAG_ZLIB | FLAG_KEYED) != FLAG_KEYED
            )
        ):
            raise CodecError("unknown session blob format")
        view = memoryview(blob)
        key_index = self._ring.verify(prefix, bytes(view[-MAC_SIZE:]), view[:-MAC_SIZE])
        if key_index is None:
            raise CodecError("session blob failed authentication")
        if key_index:
            _log.debug("session blob verified with fallback key #%d", key_index)
        try:
            return self._decode(header, view)
        except Exception as exc:  # UnpicklingError, MemoryError, RecursionError, EOFError, ...
            # Authentic but undecodable: a leaked key, or an allow-list/code change.
            _security_log.error(
                "session blob %s passed its MAC but cannot be decoded (%s)",
                hashed_id[:12],
                type(exc).__name__,
            )
            if isinstance(exc, CodecError):
                raise
            raise CodecError(f"cannot decode session blob ({type(exc).__name__})") from exc

    def _decode(self, header: int, blob: memoryview) -> tuple[BlobMeta, dict[str, Any]]:
        form = header >> 4
        at, session_flags, idle = 1, 0, None
        if form != FORMAT_VERSION:
            at, session_flags = 2, blob[1]
        times_end = at + 16
        if session_flags & SESSION_IDLE:
            idle = timedelta(seconds=int.from_bytes(blob[times_end : times_end + 4], "big"))
            times_end += 4
        if len(blob) < times_end + MAC_SIZE:
            raise CodecError("session blob is too short")
        meta = BlobMeta(
            from_micros(int.from_bytes(blob[at : at + 8], "big", signed=True)),
            from_micros(int.from_bytes(blob[at + 8 : at + 16], "big", signed=True)),
            bool(header & FLAG_SSL_ONLY),
            bool(session_flags & SESSION_PINNED),
            idle,
        )
        if form == FORMAT_INDEXED:
            packed = Packed.from_payload(self, blob[times_end:-MAC_SIZE], self._rules.loads)
            if not _STR_ONLY.issuperset(map(type, packed.keys)):
                raise CodecError("session blob does not hold a dict with str keys")
            data = dict.fromkeys(packed.keys, packed)
            if len(data) != len(packed):
                raise CodecError("session blob repeats a key")
            return meta, data
        payload = blob[times_end:-MAC_SIZE].tobytes()  # formats 1-2: decoded whole anyway
        if header & FLAG_ZLIB:
            payload = inflate(payload, self.max_bytes)  # its CodecError says what is wrong
        if header & FLAG_JSON:
            whole = tagged.loads(payload, max_bytes=self.max_bytes)
        else:
            whole = self._rules.loads(payload)
        if type(whole) is not dict or not _STR_ONLY.issuperset(map(type, whole)):
            raise CodecError("session blob does not hold a dict with str keys")
        if header & FLAG_KEYED:
            if not _BYTES_ONLY.issuperset(map(type, whole.values())):
                raise CodecError("keyed session blob holds a value that is not bytes")
            packed = Packed.from_mapping(self, whole)
            return meta, dict.fromkeys(packed.keys, packed)
        return meta, whole

    def decode_value(self, raw: bytes | memoryview) -> Any:
        """One stored value; every failure (a MemoryError or RecursionError from crafted
        bytes included) is a CodecError."""
        try:
            if is_compressed(raw):
                return self._rules.loads(inflate(bytes(raw[1:]), self.max_bytes))
            return self._rules.loads(raw)
        except CodecError:
            raise
        except Exception as exc:  # UnpicklingError, MemoryError, RecursionError, EOFError, ...
            raise CodecError(f"cannot decode a session value ({type(exc).__name__})") from exc


class _Dump:
    """Stores one value at a time for :meth:`BlobCodec.seal`, counting against the cap."""

    __slots__ = ("_codec", "_pickler", "sink")

    def __init__(self, codec: BlobCodec, sink: Sink) -> None:
        self._codec = codec
        self.sink = sink
        self._pickler = codec._rules.value_pickler(sink)

    def __call__(self, key: str, value: Any, *, compress: bool) -> bytes | memoryview:
        """The stored bytes of ``value`` (``compress``: a large one may be compressed)."""
        codec = self._codec
        if type(value) is Packed:
            if value.codec is codec:
                stored = value.raw(key)
                if compress or not is_compressed(stored):
                    self.sink.count(len(stored))  # stored bytes, reused as they are
                    return stored
            value = value.value(key)  # another store's bytes: its rules, not ours
        raw = self._pickler.dumps(value)
        if compress and len(raw) > codec.compress_threshold:
            squeezed = COMPRESSED + zlib.compress(raw, codec.compress_level)
            if len(squeezed) < len(raw):
                return squeezed
        return raw
