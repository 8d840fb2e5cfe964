"""Sealed server blobs: the bytes stored in the session row and the cache entry.

Layout (all integers big-endian)::

    offset  size  field
    0       1     header: high nibble = format version (1 or 2); low nibble = flags
                  0x01 payload is tagged JSON (else pickle protocol 5)
                  0x02 payload is zlib-compressed
                  0x04 ssl_only
                  0x08 keyed pickle: the payload pickles {key: pickle of the value}
                       (never with 0x01)
    format 2 only:
    1       1     session flags: 0x01 pinned (kept server-side even when small)
                                 0x02 an idle timeout of its own follows the times
    then    8     expires_at, signed microseconds since the Unix epoch (UTC)
            8     touched_at, same encoding
            4     idle timeout in seconds (format 2 with session flag 0x02 only)
            n     payload
    end-32  32    HMAC-SHA256(blob key, LABEL || hashed_id (64 ASCII) || version (8, signed)
                                        || every byte before the MAC)

Format 1 (17 header bytes) is written whenever a session has no session flags, so
older releases keep reading what newer ones write; format 2 only when it must.

The MAC binds the blob to its row and version, so a blob copied from another row or replayed at
another version fails; it is checked in constant time before anything is decompressed or
deserialized, so write access to the database or the cache cannot plant a payload or swap
another session's blob. Pickle is then loaded only through an exact ``(module, name)``
allow-list, and values are checked against that same allow-list while pickling, so nothing
is stored that loading would refuse. The MAC, not the allow-list, is what keeps untrusted
bytes away from the unpickler: with a leaked key an attacker still cannot run code, but can make
the unpickler allocate memory. This is the only module of the package that imports pickle.

Keyed pickles (what :meth:`BlobCodec.seal` writes with the pickle serializer) pickle every
value on its own, so a request that reads one key of a large session unpickles only that key
(:meth:`BlobCodec.open_lazy` returns :class:`Packed` values), and a save reuses the stored
bytes of every key the request never touched.  The MAC still covers the whole payload.
"""

from __future__ import annotations

import copyreg
import io
import logging
import pickle
import sys
import zlib
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from datetime import timezone
from decimal import Decimal
from typing import Any
from typing import ClassVar
from typing import Final
from typing import Literal
from uuid import UUID

from sa_sessions._clock import UTC
from sa_sessions._clock import from_micros
from sa_sessions._clock import to_micros
from sa_sessions.codec import tagged
from sa_sessions.codec.inflate import inflate
from sa_sessions.exceptions import CodecError
from sa_sessions.exceptions import SessionConfigError
from sa_sessions.exceptions import SessionTooLarge
from sa_sessions.ids import is_hashed_id
from sa_sessions.signing import KeyInput
from sa_sessions.signing import KeyRing

__all__ = ["DEFAULT_PICKLE_ALLOWLIST", "BlobCodec", "BlobMeta", "Packed", "Serializer", "unpacked"]

_log = logging.getLogger(__name__)
_security_log = logging.getLogger("sa_sessions.security")

Serializer = Literal["pickle", "json"]

#: Purpose string of the key derived for blob MACs (see :class:`sa_sessions.signing.KeyRing`).
MAC_PURPOSE: Final = "sa_sessions.blob-mac"
FORMAT_VERSION: Final = 1
#: The format with a session-flags byte (pinned, own idle timeout).
FORMAT_WITH_FLAGS: Final = 2
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
_MIN_BLOB: Final = HEADER_SIZE + MAC_SIZE
_MAC_LABEL: Final = b"sa_sessions.blob.v1\x00"
_STR_ONLY: Final = frozenset({str})
_BYTES_ONLY: Final = frozenset({bytes})
_PICKLE_PROTOCOL: Final = 5
_PICKLE_MAGIC: Final = b"\x80\x05"

# Globals that protocol-5 pickles of the default types reference (checked with pickletools):
# tz-aware datetime/time also need timezone and timedelta; UUID needs only UUID (its state holds
# is_safe as an int); set, frozenset and bytearray have opcodes of their own and need none.
_DEFAULT_GLOBALS: Final[Mapping[tuple[str, str], type]] = {
    ("datetime", "datetime"): datetime,
    ("datetime", "date"): date,
    ("datetime", "time"): time,
    ("datetime", "timedelta"): timedelta,
    ("datetime", "timezone"): timezone,
    ("decimal", "Decimal"): Decimal,
    ("uuid", "UUID"): UUID,
    ("builtins", "complex"): complex,
}

#: Exact ``(module, qualname)`` pairs the restricted unpickler resolves by default.
DEFAULT_PICKLE_ALLOWLIST: frozenset[tuple[str, str]] = frozenset(_DEFAULT_GLOBALS)

# Instances of these exact types pickle without help (containers are walked by the pickler).
_PICKLE_DATA: Final = frozenset(
    {type(None), bool, int, float, complex, str, bytes, bytearray, dict, list, tuple, set,
     frozenset, date, timedelta, timezone, Decimal, UUID}
)  # fmt: skip


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


class Packed:
    """A session value still in its stored form, unpickled on first use.

    Made only by :meth:`BlobCodec.open_lazy`, after the blob's MAC checked out.
    :meth:`BlobCodec.seal` writes a Packed value's bytes back unchanged, so a key
    the request never read costs neither unpickling nor pickling.
    """

    __slots__ = ("_codec", "raw")

    def __init__(self, codec: BlobCodec, raw: bytes) -> None:
        self._codec = codec
        self.raw = raw

    def value(self) -> Any:
        """The value (a new object on every call).

        :raises CodecError: the bytes are authentic but cannot be decoded (an
            allow-list or code change since they were written, or a leaked key).
        """
        return self._codec._unpickle_value(self.raw)

    def __repr__(self) -> str:
        return f"<Packed {len(self.raw)} bytes>"


def unpacked(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every :class:`Packed` value decoded (a new dict; CodecError on failure)."""
    return {key: value.value() if type(value) is Packed else value for key, value in data.items()}


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_key(cls: object) -> tuple[str, str]:
    """The allow-list entry for an application class; refuse anything pickle cannot name."""
    if not isinstance(cls, type) or issubclass(cls, type):
        raise SessionConfigError(f"pickle_classes entries must be plain classes, not {cls!r}")
    module, name = cls.__module__, cls.__qualname__
    if not module or not name or "<" in module or "." in name or "<" in name:
        raise SessionConfigError(
            f"{module}.{name}: only module-level classes can be allowed (no nested/local classes)"
        )
    if getattr(sys.modules.get(module), name, None) is not cls:
        raise SessionConfigError(f"{module}.{name} is not importable under that name")
    return module, name


def _mac_prefix(hashed_id: str, version: int) -> bytes:
    if type(hashed_id) is not str or not is_hashed_id(hashed_id):
        raise ValueError("hashed_id must be 64 lowercase hex characters")
    if type(version) is not int or not -(2**63) <= version < 2**63:
        raise ValueError("version must be an int that fits in 8 signed bytes")
    return _MAC_LABEL + hashed_id.encode("ascii") + version.to_bytes(8, "big", signed=True)


class _Sink:
    """File-like target for the pickler that stops as soon as the size cap is passed."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.count(len(data))
        self.parts.append(bytes(data))
        return len(data)

    def count(self, size: int) -> None:
        """Add ``size`` bytes to the running total; SessionTooLarge past the limit."""
        total = self.size + size
        if total > self.limit:
            raise SessionTooLarge(total, self.limit, "session")
        self.size = total

    def take(self) -> bytes:
        """The bytes written since the last take (one value's pickle)."""
        parts = self.parts
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        return raw


class _CheckingPickler(pickle.Pickler):
    """Refuses, before writing it, any value the restricted unpickler would refuse."""

    def __init__(self, sink: _Sink, classes: frozenset[type], registered: frozenset[type]) -> None:
        super().__init__(sink, protocol=_PICKLE_PROTOCOL)
        self._classes = classes
        self._registered = registered

    def reducer_override(self, obj: Any) -> Any:
        # The C pickler handles exact str/int/float/bytes/dict/list/tuple/set/... without
        # calling this; everything else (and every class it would name) comes through here.
        cls = type(obj)
        if cls in _PICKLE_DATA:
            return NotImplemented
        if cls is datetime:
            return _reduce_datetime(obj)
        if cls is time:
            if obj.tzinfo is None or type(obj.tzinfo) is timezone:
                return NotImplemented
            raise TypeError(f"cannot store a time with a {_type_name(type(obj.tzinfo))} tzinfo")
        if isinstance(obj, type) and obj in self._classes:
            return NotImplemented
        if cls in self._registered:
            return _reduce_registered(obj, cls)
        raise TypeError(
            f"cannot store a value of type {_type_name(cls)} in a pickled session "
            "(allow plain module-level classes with SessionStore(pickle_classes=[...]))"
        )


def _reduce_datetime(value: datetime) -> Any:
    """zoneinfo (and other tzinfo) datetimes pickle via builtins.getattr: store them as UTC."""
    tzinfo = value.tzinfo
    if tzinfo is None or type(tzinfo) is timezone:
        return NotImplemented
    if value.utcoffset() is None:
        raise TypeError(f"cannot store a datetime whose {_type_name(type(tzinfo))} has no offset")
    try:
        return value.astimezone(UTC).__reduce_ex__(_PICKLE_PROTOCOL)
    except (OverflowError, ValueError) as exc:
        raise TypeError("cannot normalise this datetime to UTC") from exc


def _reduce_registered(value: Any, cls: type) -> Any:
    """Plain instances only: a custom __reduce__ could name globals outside the allow-list."""
    reduced = value.__reduce_ex__(_PICKLE_PROTOCOL)
    if (
        type(reduced) is tuple
        and len(reduced) >= 2
        and reduced[0] in (copyreg.__newobj__, copyreg.__newobj_ex__)  # type: ignore[attr-defined]
        and reduced[1][:1] == (cls,)
    ):
        return reduced
    raise TypeError(f"{_type_name(cls)} customises pickling; only plain classes can be stored")


#: ``Py_TPFLAGS_IMMUTABLETYPE``: a type whose attributes cannot be set (built-in and
#: extension types such as datetime or Decimal).
_IMMUTABLE_TYPE = 1 << 8


def _immutable(cls: type) -> bool:
    return bool(cls.__flags__ & _IMMUTABLE_TYPE)


class _NeedsGuard(Exception):
    """Internal: the pickle names a class whose attributes can be set; load it guarded."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only exact allow-listed ``(module, name)`` pairs, never dotted names.

    A dotted name would let protocol 4+ pickles walk attributes (``module.sub.func``)
    out of an allowed module.  This C unpickler resolves only immutable types (datetime,
    Decimal, ...): a pickle naming a class defined in Python (``uuid.UUID``, the
    application's ``pickle_classes``) is loaded again by :class:`_GuardedUnpickler`,
    which refuses to set attributes on a class.

    Subclassed once per codec with its allow-list as a class attribute (see
    :func:`_unpicklers_for`), so building one per value stays in C: a keyed pickle
    builds one per value read.
    """

    allowed: ClassVar[Mapping[tuple[str, str], type]] = {}

    def find_class(self, module_name: str, global_name: str, /) -> Any:
        if "." not in global_name:
            found = self.allowed.get((module_name, global_name))
            if found is not None:
                if not _immutable(found):
                    raise _NeedsGuard
                return found
        raise pickle.UnpicklingError(
            f"global {module_name[:100]!r} {global_name[:100]!r} is not in the allow-list"
        )


class _GuardedUnpickler(pickle._Unpickler):
    """The same allow-list on the pure-Python unpickler, which lets BUILD be checked.

    BUILD sets the state of the object below it on the stack; aimed at a class instead
    of an instance, it would set that class's attributes for the whole process (a
    forged blob, with a leaked key, changing a default such as ``is_admin``).  The
    Python unpickler (``pickle._Unpickler``, the standard library's reference
    implementation) is slower, so only pickles that name a class defined in Python
    take this path.
    """

    allowed: ClassVar[Mapping[tuple[str, str], type]] = {}
    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)

    def find_class(self, module_name: str, global_name: str, /) -> Any:
        if "." not in global_name:
            found = self.allowed.get((module_name, global_name))
            if found is not None:
                return found
        raise pickle.UnpicklingError(
            f"global {module_name[:100]!r} {global_name[:100]!r} is not in the allow-list"
        )

    def load_build(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]
        if isinstance(stack[-2], type):
            raise pickle.UnpicklingError("a pickle may not set the attributes of a class")
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch[pickle.BUILD[0]] = load_build


def _unpicklers_for(
    allowed: Mapping[tuple[str, str], type],
) -> tuple[type[_RestrictedUnpickler], type[_GuardedUnpickler]]:
    """The fast and the guarded unpickler classes bound to one allow-list."""
    return (
        type("_BoundUnpickler", (_RestrictedUnpickler,), {"allowed": allowed}),
        type("_BoundGuardedUnpickler", (_GuardedUnpickler,), {"allowed": allowed}),
    )


class BlobCodec:
    """Seals session data into MAC-bound blobs and opens them again (see the module docstring).

    Immutable once built and safe to share between threads: one per store.
    ``hashed_id`` (64 lowercase hex chars) and ``version`` (8-byte signed int) come from the
    caller, not from stored bytes, so bad values are bugs and raise ValueError.
    """

    #: Cap on the serialized payload before compression, and on the stored blob.
    default_max_bytes: ClassVar[int] = 4 * 1024 * 1024
    #: Payloads up to this size are never compressed: below it, inflating on every
    #: cache hit costs more than the bytes saved on loopback memcached and the row.
    compress_threshold: ClassVar[int] = 32 * 1024
    #: zlib level used when compressing: level 1 costs a third of level 6 for ~5 % more bytes.
    compress_level: ClassVar[int] = 1

    __slots__ = (
        "_classes",
        "_globals",
        "_guarded",
        "_registered",
        "_ring",
        "_unpickler",
        "max_bytes",
        "serializer",
    )

    def __init__(
        self,
        keys: KeyInput | KeyRing,
        *,
        serializer: Serializer = "pickle",
        max_bytes: int | None = None,
        allowed_classes: Iterable[type] = (),
    ) -> None:
        self._ring = keys if isinstance(keys, KeyRing) else KeyRing(keys, purpose=MAC_PURPOSE)
        if serializer not in ("pickle", "json"):
            raise SessionConfigError(f"serializer must be 'pickle' or 'json', not {serializer!r}")
        if max_bytes is None:
            max_bytes = self.default_max_bytes
        if type(max_bytes) is not int or max_bytes < 1:
            raise SessionConfigError("max_bytes must be a positive int")
        self.serializer: Serializer = serializer
        self.max_bytes: int = max_bytes
        allowed = dict(_DEFAULT_GLOBALS)
        registered: set[type] = set()
        for cls in allowed_classes:
            key = _class_key(cls)
            if allowed.setdefault(key, cls) is not cls:
                raise SessionConfigError(f"{key[0]}.{key[1]} clashes with another allowed class")
            registered.add(cls)
        self._globals: Mapping[tuple[str, str], type] = allowed
        self._unpickler, self._guarded = _unpicklers_for(allowed)
        self._classes = frozenset(allowed.values())
        self._registered = frozenset(registered)

    def __repr__(self) -> str:
        return f"BlobCodec(serializer={self.serializer!r}, max_bytes={self.max_bytes})"

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
        payload, flags = self._serialize(data)
        if len(payload) > self.max_bytes:
            raise SessionTooLarge(len(payload), self.max_bytes, "session")
        if len(payload) > self.compress_threshold:
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
        if session_flags:
            head = bytes(((FORMAT_WITH_FLAGS << 4) | flags, session_flags))
        else:
            head = bytes(((FORMAT_VERSION << 4) | flags,))
        body = b"".join((head, times, extra, payload))
        blob = body + self._ring.sign(prefix, body)
        if len(blob) > self.max_bytes:
            raise SessionTooLarge(len(blob), self.max_bytes, "session")
        return blob

    def _serialize(self, data: Mapping[str, Any]) -> tuple[bytes, int]:
        if type(data) is not dict:
            data = dict(data)
        if not _STR_ONLY.issuperset(map(type, data)):
            bad = next(key for key in data if type(key) is not str)
            raise TypeError(f"session keys must be str, not {_type_name(type(bad))}")
        if self.serializer == "json":
            return tagged.dumps(unpacked(data)), FLAG_JSON
        sink = _Sink(self.max_bytes)
        pickler = _CheckingPickler(sink, self._classes, self._registered)
        entries: dict[str, bytes] = {}
        try:
            for key, value in data.items():
                if type(value) is Packed:
                    if value._codec is self:
                        sink.count(len(value.raw))  # stored bytes, reused as they are
                        entries[key] = value.raw
                        continue
                    value = value.value()  # another store's bytes: its rules, not ours
                pickler.clear_memo()  # every value must unpickle on its own
                pickler.dump(value)
                entries[key] = sink.take()
        except RecursionError as exc:
            raise TypeError("session data is nested too deeply (or cyclic) to pickle") from exc
        except pickle.PicklingError as exc:
            raise TypeError(f"cannot pickle session data: {exc}") from exc
        # Only str keys and bytes values: the plain pickler cannot be fooled here.
        return pickle.dumps(entries, protocol=_PICKLE_PROTOCOL), FLAG_KEYED

    # ----------------------------------------------------------------------- opening

    def open(self, hashed_id: str, version: int, blob: bytes) -> tuple[BlobMeta, dict[str, Any]]:
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
        self, hashed_id: str, version: int, blob: bytes
    ) -> tuple[BlobMeta, dict[str, Any]]:
        """Like :meth:`open`, but the values of a keyed pickle stay :class:`Packed`.

        Everything but the values is checked here: MAC, format, and that the payload
        is a dict of str keys (and, keyed, of bytes values).  A value that cannot be
        decoded raises CodecError when its :meth:`Packed.value` is called.
        """
        prefix = _mac_prefix(hashed_id, version)
        if type(blob) is not bytes:
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
        if (
            header >> 4 not in (FORMAT_VERSION, FORMAT_WITH_FLAGS)
            or header & 0x0F & ~_FLAG_MASK
            or header & (FLAG_JSON | FLAG_KEYED) == FLAG_JSON | FLAG_KEYED
            or (header >> 4 == FORMAT_WITH_FLAGS and blob[1] & ~_SESSION_FLAG_MASK)
        ):
            raise CodecError("unknown session blob format")
        key_index = self._ring.verify(prefix, blob[-MAC_SIZE:], memoryview(blob)[:-MAC_SIZE])
        if key_index is None:
            raise CodecError("session blob failed authentication")
        if key_index:
            _log.debug("session blob verified with fallback key #%d", key_index)
        try:
            return self._decode(header, blob)
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

    def _decode(self, header: int, blob: bytes) -> tuple[BlobMeta, dict[str, Any]]:
        at, session_flags, idle = 1, 0, None
        if header >> 4 == FORMAT_WITH_FLAGS:
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
        payload = blob[times_end:-MAC_SIZE]
        if header & FLAG_ZLIB:
            payload = inflate(payload, self.max_bytes)  # its CodecError says what is wrong
        if header & FLAG_JSON:
            data = tagged.loads(payload, max_bytes=self.max_bytes)
        else:
            data = self._unpickle(payload)
        if type(data) is not dict or not _STR_ONLY.issuperset(map(type, data)):
            raise CodecError("session blob does not hold a dict with str keys")
        if header & FLAG_KEYED:
            if not _BYTES_ONLY.issuperset(map(type, data.values())):
                raise CodecError("keyed session blob holds a value that is not bytes")
            data = {key: Packed(self, raw) for key, raw in data.items()}
        return meta, data

    def _unpickle_value(self, raw: bytes) -> Any:
        """One value of a keyed pickle; every failure (a MemoryError or RecursionError
        from crafted bytes included) is a CodecError."""
        try:
            return self._unpickle(raw)
        except CodecError:
            raise
        except Exception as exc:  # UnpicklingError, MemoryError, RecursionError, EOFError, ...
            raise CodecError(f"cannot decode a session value ({type(exc).__name__})") from exc

    def _unpickle(self, payload: bytes) -> Any:
        if payload[:2] != _PICKLE_MAGIC:
            raise CodecError("session blob payload is not a protocol 5 pickle")
        stream = io.BytesIO(payload)
        try:
            data = self._unpickler(stream, fix_imports=False).load()
        except _NeedsGuard:
            stream = io.BytesIO(payload)
            data = self._guarded(stream, fix_imports=False).load()
        if stream.tell() != len(payload):  # pickle.load ignores bytes after STOP
            raise CodecError("session blob payload has trailing bytes")
        return data
