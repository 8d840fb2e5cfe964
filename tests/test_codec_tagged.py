"""Tagged JSON codec: exact round trips, refusals at encode time, and hostile input at decode."""

from __future__ import annotations

import collections
import contextlib
import enum
import json
import math
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from datetime import timezone
from decimal import Decimal
from typing import Any
from typing import NamedTuple
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from sa_sessions.codec import tagged
from sa_sessions.exceptions import CodecError

# --------------------------------------------------------------------------- helpers


def assert_same(expected: Any, actual: Any) -> None:
    """Equal value AND identical types, all the way down."""
    assert type(actual) is type(expected), (type(expected), type(actual))
    if type(expected) is dict:
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(expected[key], actual[key])
    elif type(expected) in (list, tuple):
        assert len(actual) == len(expected)
        for left, right in zip(expected, actual, strict=True):
            assert_same(left, right)
    elif type(expected) in (set, frozenset):
        assert actual == expected
        members = {member: member for member in actual}
        for member in expected:
            assert_same(member, members[member])
    elif type(expected) is float:
        assert actual == expected
        assert math.copysign(1.0, actual) == math.copysign(1.0, expected)
    elif type(expected) is Decimal:
        assert str(actual) == str(expected)
    elif type(expected) in (datetime, time):
        assert actual == expected
        assert actual.utcoffset() == expected.utcoffset()
        assert (actual.tzinfo is None) == (expected.tzinfo is None)
        assert actual.fold == expected.fold
    else:
        assert actual == expected


def round_trip(value: Any) -> Any:
    raw = tagged.dumps(value)
    assert isinstance(raw, bytes)
    return tagged.loads(raw)


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# --------------------------------------------------------------------------- round trips

PLUS_0530 = timezone(timedelta(hours=5, minutes=30))
ODD_OFFSET = timezone(-timedelta(hours=3, seconds=7, microseconds=11), "odd")

SUPPORTED = [
    None,
    True,
    False,
    0,
    -1,
    2**200,
    -(10**4000),
    1.5,
    -0.0,
    1e300,
    5e-324,
    "",
    "plain",
    'é ✓ 😀 \x00 \n "quoted" \\',
    "\ud800 lone surrogate",
    b"",
    b"\x00\xff" * 40,
    [],
    [1, "a", None],
    {},
    {"a": 1},
    (),
    (1,),
    (1, (2, (3,))),
    set(),
    {1, "a", (1, 2)},
    frozenset(),
    frozenset({b"x", frozenset({1})}),
    datetime(2024, 2, 29, 23, 59, 59, 999999),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=PLUS_0530),
    datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=ODD_OFFSET),
    datetime(2024, 10, 27, 2, 30, fold=1),
    datetime(2024, 1, 1, tzinfo=timezone(timedelta(microseconds=1))),
    datetime(2024, 1, 1, fold=1, tzinfo=timezone(-timedelta(microseconds=10))),
    date(2024, 2, 29),
    date(1, 1, 1),
    time(0, 0),
    time(23, 59, 59, 999999),
    time(12, 0, tzinfo=PLUS_0530),
    time(2, 30, fold=1),
    time(0, 0, tzinfo=timezone(timedelta(microseconds=1))),
    timedelta(0),
    timedelta(days=-3, seconds=5, microseconds=7),
    timedelta(days=999999999, seconds=86399, microseconds=999999),
    Decimal("1.50"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("-12345678901234567890.000000000000000001"),
    UUID("12345678-1234-5678-1234-567812345678"),
    UUID(int=0),
]


@pytest.mark.parametrize("value", SUPPORTED, ids=lambda v: type(v).__name__)
def test_round_trip_keeps_type_and_value(value: Any) -> None:
    assert_same(value, round_trip(value))
    assert_same({"v": value}, round_trip({"v": value}))


def test_nested_mix_round_trips() -> None:
    value = {
        "user": {"id": 42, "roles": ("admin", "dev"), "tags": {"a", "b"}},
        "when": [datetime(2024, 5, 1, tzinfo=timezone.utc), date(2024, 5, 1), time(1, 2)],
        "money": {"total": Decimal("10.20"), "parts": [Decimal("5.10"), Decimal("5.10")]},
        "blob": [b"\x01", (b"\x02", frozenset({(1, "x")}))],
        "ids": {str(UUID(int=i)): UUID(int=i) for i in range(3)},
        "deep": [[[[{"k": [(), set(), {}]}]]]],
    }
    assert_same(value, round_trip(value))


def test_output_is_compact_utf8() -> None:
    assert tagged.dumps({"a": [1, 2], "b": None}) == b'{"a":[1,2],"b":null}'
    assert tagged.dumps("é") == '"é"'.encode()
    assert tagged.dumps((1, b"\x00")) == b'{" t":[1,{" b":"AA=="}]}'


def test_lone_surrogates_stay_valid_utf8() -> None:
    raw = tagged.dumps({"s": "a\ud800b"})
    raw.decode("utf-8")  # strict: no surrogates leaked into the bytes
    assert tagged.loads(raw) == {"s": "a\ud800b"}


def test_zoneinfo_comes_back_as_equal_fixed_offset() -> None:
    paris = datetime(2024, 7, 1, 12, 30, tzinfo=ZoneInfo("Europe/Paris"))
    out = round_trip(paris)
    assert out == paris
    assert type(out.tzinfo) is timezone
    assert out.utcoffset() == timedelta(hours=2)


def test_top_level_can_be_any_supported_value() -> None:
    assert round_trip([1, 2]) == [1, 2]
    assert round_trip("x") == "x"
    assert_same((1,), round_trip((1,)))


def test_loads_accepts_str() -> None:
    assert tagged.loads('{"a":{" t":[1]}}') == {"a": (1,)}


# --------------------------------------------------------------------------- tag collisions

COLLIDING_DICTS = [
    {" t": 1},
    {" t": [1, 2]},
    {" b": "AA=="},
    {" o": [["a", 1]]},
    {" o": 1},
    {" ": None},
    {" unknown": "x"},
    {"  t": {" t": {" t": ()}}},
    {" t": [1], "second": 2},
    {"": 1},
    {"t": 1},
]


@pytest.mark.parametrize("value", COLLIDING_DICTS, ids=repr)
def test_user_dicts_that_look_like_tags_round_trip(value: dict[str, Any]) -> None:
    assert_same(value, round_trip(value))
    assert_same([value, (value,)], round_trip([value, (value,)]))


def test_escape_wire_form() -> None:
    assert tagged.dumps({" t": 1}) == b'{" o":[[" t",1]]}'
    # Only a one-key dict whose key starts with the marker is escaped.
    assert tagged.dumps({" t": 1, "x": 2}) == b'{" t":1,"x":2}'


# --------------------------------------------------------------------------- TypeError


class Color(enum.IntEnum):
    RED = 1


class Point(NamedTuple):
    x: int
    y: int


class MyDict(dict[str, Any]):
    pass


class MyStr(str):
    pass


class MyList(list[Any]):
    pass


class Secretive:
    def __repr__(self) -> str:
        return "SECRET-VALUE"


UNSUPPORTED = [
    (object(), "object"),
    (lambda: None, "function"),
    (Secretive(), "Secretive"),
    (MyDict(a=1), "MyDict"),
    (collections.OrderedDict(a=1), "OrderedDict"),
    (collections.defaultdict(int), "defaultdict"),
    (Color.RED, "Color"),
    (Point(1, 2), "Point"),
    (MyStr("SECRET-VALUE"), "MyStr"),
    (MyList(), "MyList"),
    (bytearray(b"x"), "bytearray"),
    (1 + 2j, "complex"),
    (memoryview(b"x"), "memoryview"),
    (range(3), "range"),
    (float("nan"), "float"),
    (float("inf"), "float"),
    (float("-inf"), "float"),
    (Decimal("NaN"), "Decimal"),
    (Decimal("sNaN"), "Decimal"),
    (Decimal("-Infinity"), "Decimal"),
    (10**5000, "int"),
    (datetime, "type"),
]


@pytest.mark.parametrize(("value", "name"), UNSUPPORTED, ids=lambda v: type(v).__name__)
def test_unsupported_values_raise_type_error(value: Any, name: str) -> None:
    for wrapped in (value, {"k": value}, [1, (2, [value])]):
        with pytest.raises(TypeError, match=name) as info:
            tagged.dumps(wrapped)
        assert "SECRET-VALUE" not in str(info.value)


@pytest.mark.parametrize("key", [1, None, b"k", (1,), 1.5, True, MyStr("k")], ids=repr)
def test_non_str_dict_keys_raise_type_error(key: Any) -> None:
    with pytest.raises(TypeError, match="dict key"):
        tagged.dumps({key: 1})
    with pytest.raises(TypeError, match="dict key"):
        tagged.dumps({"ok": [{key: 1}]})


def test_depth_limit() -> None:
    assert tagged.MAX_DEPTH == 64
    assert round_trip(nested_lists(64)) == nested_lists(64)
    with pytest.raises(TypeError, match="nested deeper"):
        tagged.dumps(nested_lists(65))
    deep_tuple: Any = ()
    for _ in range(70):
        deep_tuple = (deep_tuple,)
    with pytest.raises(TypeError, match="nested deeper"):
        tagged.dumps({"t": deep_tuple})


def test_cycles_raise_type_error() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(TypeError):
        tagged.dumps(cyclic)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(TypeError):
        tagged.dumps(looped)


def test_input_is_never_mutated() -> None:
    value = {"a": (1,), "b": [{"c": {1}}], " t": 1}
    snapshot = repr(value)
    tagged.dumps(value)
    assert repr(value) == snapshot


# --------------------------------------------------------------------------- CodecError

MALFORMED: list[bytes | str] = [
    b"",
    b" ",
    b"\xff",
    b'"\xc3\x28"',
    b'"\xed\xa0\x80"',  # a UTF-8 encoded surrogate is not valid UTF-8
    b"\xef\xbb\xbf{}",  # BOM
    b"{",
    b"[1,]",
    b"{'a': 1}",
    b"1 2",
    b"[1] x",
    b"NaN",
    b"[Infinity]",
    b'{"a":-Infinity}',
    b"1e999",
    b"[-1e400]",
    b"1" * 4301,
    b"[" + b"9" * 5000 + b"]",
    b'{" x":1}',
    b'{" ":1}',
    b'{"a":{" nope":[1]}}',
    b'{" b":"!!!!"}',
    b'{" b":"YQ"}',
    b'{" b":"YR=="}',
    b'{" b":"YQ==garbage"}',
    b'{" b":"Y Q=="}',
    b'{" b":1}',
    b'{" b":"\xc3\xa9"}',
    b'{" dt":"yesterday"}',
    b'{" dt":"2024-02-30T00:00:00"}',
    b'{" dt":20240101}',
    b'{" dt":["2024-01-01T00:00:00",2]}',
    b'{" dt":["2024-01-01T00:00:00"]}',
    b'{" dt":[20240101,1]}',
    b'{" tm":["01:00",true]}',
    b'{" dt":["2024-01-01T00:00:00+01:00",0,5]}',
    b'{" dt":["2024-01-01T00:00:00",2,5]}',
    b'{" dt":["2024-01-01T00:00:00",0,86400000000]}',
    b'{" dt":["2024-01-01T00:00:00",0,1.5]}',
    b'{" tm":["00:00",0,null]}',
    b'{" tm":["00:00",0,1,2]}',
    b'{" d":"2024-13-01"}',
    b'{" d":"2024-01-01T00:00:00"}',
    b'{" tm":"25:00"}',
    b'{" td":[1,2]}',
    b'{" td":[1,2,"3"]}',
    b'{" td":[1.0,0,0]}',
    b'{" td":[true,0,0]}',
    b'{" td":[1000000000,0,0]}',
    b'{" td":"1 day"}',
    b'{" n":"abc"}',
    b'{" n":"NaN"}',
    b'{" n":"-Infinity"}',
    b'{" n":1.5}',
    b'{" u":"zz"}',
    b'{" u":"12345678123456781234567812345678AB"}',
    b'{" u":"12345678-1234-5678-1234-567812345678"}',
    b'{" u":"ABCDEF78123456781234567812345678"}',
    b'{" t":"abc"}',
    b'{" t":{"a":1}}',
    b'{" s":[[1]]}',
    b'{" f":[{"a":1}]}',
    b'{" s":1}',
    b'{" o":1}',
    b'{" o":[["a"]]}',
    b'{" o":[[1,2]]}',
    b'{" o":["ab"]}',
    b"[" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b'{" t":' * 50_000 + b"[]" + b"}" * 50_000,
    "\ud800",
]


@pytest.mark.parametrize("raw", MALFORMED, ids=lambda r: repr(r[:40]))
def test_malformed_input_raises_codec_error(raw: bytes | str) -> None:
    with pytest.raises(CodecError) as info:
        tagged.loads(raw)
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize("raw", [None, 123, 1.5, ["[]"], object()], ids=repr)
def test_wrong_input_types_raise_codec_error(raw: Any) -> None:
    with pytest.raises(CodecError):
        tagged.loads(raw)


def test_size_cap() -> None:
    raw = tagged.dumps({"a": "x" * 100})
    assert tagged.loads(raw, max_bytes=len(raw)) == {"a": "x" * 100}
    with pytest.raises(CodecError, match="over the limit"):
        tagged.loads(raw, max_bytes=len(raw) - 1)
    assert tagged.DEFAULT_MAX_BYTES == 16 * 1024 * 1024
    with pytest.raises(CodecError, match="over the limit"):
        tagged.loads(b" " * (tagged.DEFAULT_MAX_BYTES + 1))


def test_error_message_hides_content() -> None:
    with pytest.raises(CodecError) as info:
        tagged.loads(b'{"password":"SECRET-VALUE",')
    assert "SECRET-VALUE" not in str(info.value)


def test_bytearray_and_memoryview_input_are_accepted() -> None:
    raw = tagged.dumps({"a": 1})
    assert tagged.loads(bytearray(raw)) == {"a": 1}  # type: ignore[arg-type]
    assert tagged.loads(memoryview(raw)) == {"a": 1}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

fixed_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=-timedelta(hours=23, minutes=59, seconds=59),
        max_value=timedelta(hours=23, minutes=59, seconds=59),
    ),
)
tzinfos = st.none() | st.just(timezone.utc) | fixed_offsets

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.binary(),
    st.datetimes(timezones=tzinfos),
    st.dates(),
    st.times(timezones=tzinfos),
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
)
hashables = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
keys = st.text(max_size=8) | st.sampled_from([" t", " o", " b", " ", " dt", "  x"])
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=6))
def test_property_supported_data_round_trips(value: dict[str, Any]) -> None:
    raw = tagged.dumps(value)
    raw.decode("utf-8")
    assert_same(value, tagged.loads(raw))


@settings(max_examples=300)
@given(values)
def test_property_any_supported_value_round_trips(value: Any) -> None:
    assert_same(value, round_trip(value))


def loads_or_codec_error(raw: Any) -> None:
    """Decoding may fail, but only ever with CodecError."""
    with contextlib.suppress(CodecError):
        tagged.loads(raw)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_property_arbitrary_bytes_only_raise_codec_error(raw: bytes) -> None:
    loads_or_codec_error(raw)


@settings(max_examples=500)
@given(st.text(max_size=300))
def test_property_arbitrary_text_only_raises_codec_error(raw: str) -> None:
    loads_or_codec_error(raw)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from([" t", " s", " f", " b", " dt", " d", " tm", " td", " n", " u", " o"])
            | st.text(max_size=4),
            inner,
            max_size=2,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=500)
@given(json_like)
def test_property_tag_shaped_garbage_only_raises_codec_error(tree: Any) -> None:
    loads_or_codec_error(json.dumps(tree))


@settings(max_examples=300)
@given(values, st.data())
def test_property_corrupted_encodings_only_raise_codec_error(
    value: Any, data: st.DataObject
) -> None:
    raw = bytearray(tagged.dumps(value))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255))
    loads_or_codec_error(bytes(raw))
    loads_or_codec_error(bytes(raw[:index]))
