"""Tagged JSON: compact JSON that round-trips the Python types sessions commonly hold.

This is the cookie codec (a client must never be able to make the server unpickle bytes) and
an optional server blob codec. Plain JSON values are written as-is; other supported types
become a *tag*: a JSON object with exactly one key, and that key starts with a space::

    {" t": [...]}   tuple               {" dt": "<isoformat>"}   datetime (*)
    {" s": [...]}   set                 {" d": "<isoformat>"}    date
    {" f": [...]}   frozenset           {" tm": "<isoformat>"}   time (*)
    {" b": "<b64>"} bytes (standard)    {" td": [d, s, us]}      timedelta
    {" n": "<str>"} Decimal (finite)    {" u": "<32 hex>"}       UUID
    {" o": [[key, value], ...]}         a user dict that would otherwise look like a tag

    (*) with ``fold=1`` the payload is ``["<isoformat>", 1]``; with an offset that has
        microseconds it is ``["<naive isoformat>", fold, <offset in microseconds>]``

Only a one-key dict whose key starts with a space can look like a tag, and exactly those are
escaped with ``" o"``, so every dict round-trips. Types are matched exactly: subclasses (a dict
subclass, an ``IntEnum``, a namedtuple) are refused rather than silently losing their class.

Time zones are kept as fixed offsets: an aware datetime comes back with a
``datetime.timezone`` of the same UTC offset (a ``zoneinfo`` zone and a tz name are not
preserved; ``fold`` is). Such values compare equal to the original except inside a
DST gap or fold, where Python's inter-zone comparison says otherwise.

Limits: :data:`MAX_DEPTH` containers deep on encode; on decode nesting is bounded by the
interpreter's recursion limit, and input by ``max_bytes``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from datetime import timezone
from decimal import Decimal
from typing import Any
from typing import Final
from typing import TypeVar
from uuid import UUID

from sa_sessions.exceptions import CodecError

__all__ = ["DEFAULT_MAX_BYTES", "MAX_DEPTH", "dumps", "loads"]

#: Deepest container nesting :func:`dumps` accepts (the top-level container is depth 1).
MAX_DEPTH: Final = 64
#: Default cap on the input size of :func:`loads`.
DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024

_Clock = TypeVar("_Clock", datetime, time)

_MARK: Final = " "
_ESCAPE: Final = " o"

# Types json writes natively and exactly (bool is its own exact type, so IntEnum is not here).
_PLAIN: Final = frozenset({str, int, bool, type(None)})
_STR_ONLY: Final = frozenset({str})

# allow_nan and check_circular never decide anything (so mutating them is pointless):
# non-finite floats and Decimals are refused before the encoder runs, and so is nesting
# past MAX_DEPTH, which any cycle reaches.  They stay as a second line of defence.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    separators=(",", ":"),
    allow_nan=False,  # pragma: no mutate
    check_circular=False,  # pragma: no mutate
)
_ASCII_ENCODER = json.JSONEncoder(
    ensure_ascii=True,
    separators=(",", ":"),
    allow_nan=False,  # pragma: no mutate
    check_circular=False,  # pragma: no mutate
)


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


# --------------------------------------------------------------------------- encoding


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 tagged JSON; TypeError for anything unsupported."""
    tree = value if _is_flat_plain_dict(value) else _encode(value, 0)
    try:
        text = _ENCODER.encode(tree)
    except ValueError:
        # Floats were checked already: only an int beyond sys.get_int_max_str_digits() gets here.
        raise TypeError("cannot encode an int with that many digits") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: \u escapes keep the output valid UTF-8 and the round trip exact.
        return _ASCII_ENCODER.encode(tree).encode("ascii")


def _encode(value: Any, depth: int) -> Any:
    """The JSON-ready form of ``value``: the same object whenever nothing needs a tag."""
    cls = type(value)
    if cls in _PLAIN:
        return value
    if cls is float:
        if math.isfinite(value):
            return value
        raise TypeError("cannot encode a non-finite float")
    encoder = _ENCODERS.get(cls)
    if encoder is None:
        raise TypeError(f"cannot encode a value of type {_type_name(cls)}")
    return encoder(value, depth)


def _is_flat_plain_dict(value: Any) -> bool:
    """A dict of str keys and str/int/bool/None values that cannot look like a tag.

    Such a dict is its own tagged form: the common session (ids, names, flags)
    skips the Python walk and goes straight to the C encoder.
    """
    return (
        type(value) is dict
        and _STR_ONLY.issuperset(map(type, value))
        and _PLAIN.issuperset(map(type, value.values()))
        and (len(value) != 1 or next(iter(value))[:1] != _MARK)
    )


def _enter(depth: int) -> int:
    depth += 1
    if depth > MAX_DEPTH:
        raise TypeError(f"cannot encode containers nested deeper than {MAX_DEPTH} (or cyclic)")
    return depth


def _encode_dict(value: dict[Any, Any], depth: int) -> Any:
    depth = _enter(depth)
    if not _STR_ONLY.issuperset(map(type, value)):  # type scans run in C: the common case is cheap
        bad = next(key for key in value if type(key) is not str)
        raise TypeError(f"cannot encode a dict key of type {_type_name(type(bad))}")
    out: dict[str, Any] | None = None
    if not _PLAIN.issuperset(map(type, value.values())):
        for key, item in value.items():
            if type(item) in _PLAIN:
                continue
            new = _encode(item, depth)
            if new is not item:
                if out is None:
                    out = dict(value)
                out[key] = new
    result = value if out is None else out
    if len(result) == 1:
        ((key, item),) = result.items()
        if key[:1] == _MARK:
            return {_ESCAPE: [[key, item]]}
    return result


def _encode_items(value: list[Any] | tuple[Any, ...], depth: int) -> list[Any] | tuple[Any, ...]:
    """Encoded items; the input itself when no item changed (json writes tuples as arrays)."""
    depth = _enter(depth)
    if _PLAIN.issuperset(map(type, value)):  # pragma: no mutate (fast path, same result)
        return value
    out: list[Any] | None = None
    for index, item in enumerate(value):
        if type(item) in _PLAIN:
            continue
        new = _encode(item, depth)
        if new is not item:
            if out is None:
                out = list(value)
            out[index] = new
    return value if out is None else out


def _encode_list(value: list[Any], depth: int) -> Any:
    return _encode_items(value, depth)


def _encode_tuple(value: tuple[Any, ...], depth: int) -> Any:
    return {" t": _encode_items(value, depth)}


def _encode_set(value: set[Any], depth: int) -> Any:
    return {" s": _encode_items(list(value), depth)}


def _encode_frozenset(value: frozenset[Any], depth: int) -> Any:
    return {" f": _encode_items(list(value), depth)}


def _encode_bytes(value: bytes, depth: int) -> Any:
    return {" b": binascii.b2a_base64(value, newline=False).decode("ascii")}


def _clock_payload(value: datetime | time) -> Any:
    offset = value.utcoffset()
    if offset is not None and offset.microseconds:
        # fromisoformat drops sub-second offsets under one second (CPython 3.11): spell them out.
        naive = value.replace(tzinfo=None).isoformat()
        return [naive, value.fold, offset // timedelta(microseconds=1)]
    return [value.isoformat(), 1] if value.fold else value.isoformat()


def _encode_datetime(value: datetime, depth: int) -> Any:
    return {" dt": _clock_payload(value)}


def _encode_date(value: date, depth: int) -> Any:
    return {" d": value.isoformat()}


def _encode_time(value: time, depth: int) -> Any:
    return {" tm": _clock_payload(value)}


def _encode_timedelta(value: timedelta, depth: int) -> Any:
    return {" td": [value.days, value.seconds, value.microseconds]}


def _encode_decimal(value: Decimal, depth: int) -> Any:
    if not value.is_finite():
        raise TypeError("cannot encode a non-finite Decimal")
    return {" n": str(value)}


def _encode_uuid(value: UUID, depth: int) -> Any:
    return {" u": value.hex}


_ENCODERS: Final[dict[type, Callable[[Any, int], Any]]] = {
    dict: _encode_dict,
    list: _encode_list,
    tuple: _encode_tuple,
    set: _encode_set,
    frozenset: _encode_frozenset,
    bytes: _encode_bytes,
    datetime: _encode_datetime,
    date: _encode_date,
    time: _encode_time,
    timedelta: _encode_timedelta,
    Decimal: _encode_decimal,
    UUID: _encode_uuid,
}


# --------------------------------------------------------------------------- decoding


def loads(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode tagged JSON; any malformed or oversized input raises :class:`CodecError`."""
    try:
        size = len(raw)
        if size > max_bytes:
            raise CodecError(f"tagged JSON input is {size} bytes, over the limit of {max_bytes}")
        text = raw if isinstance(raw, str) else str(raw, "utf-8")
        return _DECODER.decode(text)
    except CodecError:
        raise
    except Exception as exc:  # JSON, UTF-8, tag payload, RecursionError, MemoryError, ...
        raise CodecError(f"malformed tagged JSON ({type(exc).__name__})") from exc


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        return obj
    ((key, payload),) = obj.items()
    if key[:1] != _MARK:
        return obj
    decoder = _DECODERS.get(key)
    if decoder is None:
        raise CodecError("malformed tagged JSON (unknown tag)")
    return decoder(payload)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise ValueError("non-finite float")
    return value


def _reject_constant(text: str) -> Any:
    raise ValueError("NaN and Infinity are not allowed")


def _want(payload: Any, cls: type) -> Any:
    if type(payload) is not cls:
        raise ValueError(f"tag payload must be {cls.__name__}")
    return payload


def _decode_bytes(payload: Any) -> bytes:
    text: str = _want(payload, str)
    # validate=True only fails faster: the canonical check below refuses the same input.
    value = base64.b64decode(text, validate=True)  # pragma: no mutate
    if binascii.b2a_base64(value, newline=False) != text.encode("ascii"):
        raise ValueError("non-canonical base64")
    return value


def _decode_clock(parse: Callable[[str], _Clock], payload: Any) -> _Clock:
    if type(payload) is str:
        return parse(payload)
    parts: list[Any] = _want(payload, list)
    if len(parts) == 2 and type(parts[1]) is int and parts[1] == 1:
        return parse(_want(parts[0], str)).replace(fold=1)
    if len(parts) == 3 and type(parts[1]) is int and parts[1] in (0, 1) and type(parts[2]) is int:
        value = parse(_want(parts[0], str))
        if value.tzinfo is not None:
            raise ValueError("explicit offset given twice")
        tzinfo = timezone(timedelta(microseconds=parts[2]))
        return value.replace(tzinfo=tzinfo, fold=parts[1])
    raise ValueError("bad datetime/time tag payload")


def _decode_timedelta(payload: Any) -> timedelta:
    parts: list[Any] = _want(payload, list)
    if len(parts) != 3 or any(type(part) is not int for part in parts):
        raise ValueError("timedelta tag needs three ints")
    return timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])


def _decode_decimal(payload: Any) -> Decimal:
    value = Decimal(_want(payload, str))
    if not value.is_finite():
        raise ValueError("non-finite Decimal")
    return value


def _decode_uuid(payload: Any) -> UUID:
    text: str = _want(payload, str)
    value = UUID(hex=text)
    if value.hex != text:
        raise ValueError("non-canonical UUID")
    return value


def _decode_escaped(payload: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in _want(payload, list):
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
            raise ValueError("escaped dict needs [str, value] pairs")
        result[pair[0]] = pair[1]
    return result


_DECODERS: Final[dict[str, Callable[[Any], Any]]] = {
    " t": lambda payload: tuple(_want(payload, list)),
    " s": lambda payload: set(_want(payload, list)),
    " f": lambda payload: frozenset(_want(payload, list)),
    " b": _decode_bytes,
    " dt": lambda payload: _decode_clock(datetime.fromisoformat, payload),
    " d": lambda payload: date.fromisoformat(_want(payload, str)),
    " tm": lambda payload: _decode_clock(time.fromisoformat, payload),
    " td": _decode_timedelta,
    " n": _decode_decimal,
    " u": _decode_uuid,
    _ESCAPE: _decode_escaped,
}

_DECODER = json.JSONDecoder(
    object_hook=_object_hook, parse_float=_parse_float, parse_constant=_reject_constant
)
