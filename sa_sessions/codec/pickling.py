"""The restricted pickle dialect of server blobs: what may be stored, and how it loads.

Values are pickled with protocol 5 by a pickler that refuses, before writing it, anything
the loading side would refuse; they are loaded through an exact ``(module, name)``
allow-list that never resolves dotted names.  A pickle that names a class defined in
Python is loaded by the pure-Python unpickler with BUILD checked, so a forged pickle
cannot set attributes of a class for the whole process.  This is the only module of the
package that imports pickle; only authenticated bytes (a blob whose MAC checked out)
ever reach :meth:`PickleRules.loads`.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
from collections.abc import Iterable
from collections.abc import Mapping
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from datetime import timezone
from decimal import Decimal
from typing import Any
from typing import ClassVar
from typing import Final
from uuid import UUID

from sa_sessions._clock import UTC
from sa_sessions.exceptions import CodecError
from sa_sessions.exceptions import SessionConfigError
from sa_sessions.exceptions import SessionTooLarge

__all__ = [
    "DEFAULT_PICKLE_ALLOWLIST",
    "PICKLE_PROTOCOL",
    "PickleRules",
    "Sink",
    "ValuePickler",
    "dumps_plain",
    "type_name",
]

PICKLE_PROTOCOL: Final = 5
#: Every protocol 5 pickle starts with these two bytes.
PICKLE_MAGIC: Final = b"\x80\x05"

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


def type_name(cls: type) -> str:
    """``module.QualName`` of a class, for messages."""
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


class Sink:
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

    def __init__(self, sink: Sink, classes: frozenset[type], registered: frozenset[type]) -> None:
        super().__init__(sink, protocol=PICKLE_PROTOCOL)
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
            raise TypeError(f"cannot store a time with a {type_name(type(obj.tzinfo))} tzinfo")
        if isinstance(obj, type) and obj in self._classes:
            return NotImplemented
        if cls in self._registered:
            return _reduce_registered(obj, cls)
        raise TypeError(
            f"cannot store a value of type {type_name(cls)} in a pickled session "
            "(allow plain module-level classes with SessionStore(pickle_classes=[...]))"
        )


def _reduce_datetime(value: datetime) -> Any:
    """zoneinfo (and other tzinfo) datetimes pickle via builtins.getattr: store them as UTC."""
    tzinfo = value.tzinfo
    if tzinfo is None or type(tzinfo) is timezone:
        return NotImplemented
    if value.utcoffset() is None:
        raise TypeError(f"cannot store a datetime whose {type_name(type(tzinfo))} has no offset")
    try:
        return value.astimezone(UTC).__reduce_ex__(PICKLE_PROTOCOL)
    except (OverflowError, ValueError) as exc:
        raise TypeError("cannot normalise this datetime to UTC") from exc


def _reduce_registered(value: Any, cls: type) -> Any:
    """Plain instances only: a custom __reduce__ could name globals outside the allow-list."""
    reduced = value.__reduce_ex__(PICKLE_PROTOCOL)
    if (
        type(reduced) is tuple
        and len(reduced) >= 2
        and reduced[0] in (copyreg.__newobj__, copyreg.__newobj_ex__)  # type: ignore[attr-defined]
        and reduced[1][:1] == (cls,)
    ):
        return reduced
    raise TypeError(f"{type_name(cls)} customises pickling; only plain classes can be stored")


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


class ValuePickler:
    """Pickles one value at a time; each pickle loads on its own (no shared memo)."""

    __slots__ = ("_pickler", "_sink")

    def __init__(self, pickler: pickle.Pickler, sink: Sink) -> None:
        self._pickler = pickler
        self._sink = sink

    def dumps(self, value: Any) -> bytes:
        """The pickle of ``value``.

        :raises TypeError: a value the allow-list refuses, or nesting too deep to pickle.
        :raises SessionTooLarge: the sink's cap was passed.
        """
        pickler = self._pickler
        pickler.clear_memo()  # every value must unpickle on its own
        try:
            pickler.dump(value)
        except RecursionError as exc:
            raise TypeError("session data is nested too deeply (or cyclic) to pickle") from exc
        except pickle.PicklingError as exc:
            raise TypeError(f"cannot pickle session data: {exc}") from exc
        return self._sink.take()


def dumps_plain(obj: Any) -> bytes:
    """Pickle containers of str and bytes only (the key tuple, a legacy keyed dict).

    The plain pickler cannot be fooled by them; application values always go through
    :meth:`PickleRules.value_pickler`.
    """
    return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)


class PickleRules:
    """One allow-list, bound: a checking pickler to write and restricted unpicklers to read.

    Immutable once built and shared by threads (one per codec).
    """

    __slots__ = ("_classes", "_guarded", "_registered", "_unpickler", "allowed")

    def __init__(self, allowed_classes: Iterable[type] = ()) -> None:
        allowed = dict(_DEFAULT_GLOBALS)
        registered: set[type] = set()
        for cls in allowed_classes:
            key = _class_key(cls)
            if allowed.setdefault(key, cls) is not cls:
                raise SessionConfigError(f"{key[0]}.{key[1]} clashes with another allowed class")
            registered.add(cls)
        #: ``(module, name)`` -> class, for every global a stored pickle may name.
        self.allowed: Mapping[tuple[str, str], type] = allowed
        self._unpickler, self._guarded = _unpicklers_for(allowed)
        self._classes = frozenset(allowed.values())
        self._registered = frozenset(registered)

    def value_pickler(self, sink: Sink) -> ValuePickler:
        """Pickles values into ``sink``, refusing what :meth:`loads` would refuse."""
        return ValuePickler(_CheckingPickler(sink, self._classes, self._registered), sink)

    def loads(self, payload: bytes | memoryview) -> Any:
        """Load one protocol 5 pickle through the allow-list (nothing may follow STOP).

        :raises CodecError: not a protocol 5 pickle, or bytes after its end.  Other
            failures of crafted bytes (UnpicklingError, MemoryError, RecursionError,
            EOFError, ...) propagate for the caller to wrap.
        """
        if payload[:2] != PICKLE_MAGIC:
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
