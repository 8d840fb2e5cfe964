"""Tagged JSON at its edges: exact bytes out, exact refusals, and the limits at the bound."""

from __future__ import annotations

import collections
from datetime import datetime
from datetime import time
from datetime import timedelta
from datetime import timezone
from typing import Any

import pytest

from sa_sessions.codec import tagged
from sa_sessions.exceptions import CodecError


def nested_lists(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_output_is_compact_utf8() -> None:
    """The bytes are a wire format (cookie bodies are signed over them)."""
    assert tagged.dumps({"k": "é", "n": [1, None, True]}) == '{"k":"é","n":[1,null,true]}'.encode()
    assert tagged.dumps(["é", 1.5]) == '["é",1.5]'.encode()


def test_lone_surrogates_fall_back_to_compact_ascii() -> None:
    assert tagged.dumps(["\ud800", "é", 1]) == b'["\\ud800","\\u00e9",1]'
    assert tagged.loads(tagged.dumps(["\ud800", "é", 1])) == ["\ud800", "é", 1]


def test_depth_at_the_edge() -> None:
    assert tagged.MAX_DEPTH == 64
    assert tagged.loads(tagged.dumps(nested_lists(64))) == nested_lists(64)
    assert tagged.loads(tagged.dumps({"k": nested_lists(63)})) == {"k": nested_lists(63)}
    with pytest.raises(TypeError, match=r"^cannot encode containers nested deeper than 64"):
        tagged.dumps({"k": nested_lists(64)})


def test_input_size_at_the_edge() -> None:
    raw = b" " * (tagged.DEFAULT_MAX_BYTES - 2) + b"[]"
    assert tagged.loads(raw) == []
    with pytest.raises(CodecError, match=r"is 16777217 bytes, over the limit of 16777216$"):
        tagged.loads(raw + b" ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(object(), "cannot encode a value of type object", id="builtin"),
        pytest.param(
            collections.OrderedDict(),
            "cannot encode a value of type collections.OrderedDict",
            id="module-qualified",
        ),
        pytest.param({1: "x"}, "cannot encode a dict key of type int", id="dict-key"),
        pytest.param(float("nan"), "cannot encode a non-finite float", id="nan"),
    ],
)
def test_refusals_name_the_type_exactly(value: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        tagged.dumps([value])
    assert str(info.value) == message


def test_unknown_tags_are_named_as_such() -> None:
    with pytest.raises(CodecError) as info:
        tagged.loads(b'{" zz": 1}')
    assert str(info.value) == "malformed tagged JSON (unknown tag)"
    assert tagged.loads(b'{"zz": 1}') == {"zz": 1}  # no leading space: a plain key
    assert tagged.loads(b'{" zz": 1, "b": 2}') == {" zz": 1, "b": 2}  # two keys: not a tag


@pytest.mark.parametrize("fold", [0, 1])
@pytest.mark.parametrize("offset_us", [1, -10, 999_999])
def test_sub_second_offsets_keep_their_fold(fold: int, offset_us: int) -> None:
    zone = timezone(timedelta(microseconds=offset_us))
    for value in (datetime(2024, 1, 1, 3, tzinfo=zone, fold=fold), time(3, tzinfo=zone, fold=fold)):
        back = tagged.loads(tagged.dumps(value))
        assert (back, back.fold, back.utcoffset()) == (value, fold, value.utcoffset())


@pytest.mark.parametrize(
    "payload",
    [
        '["2024-01-01T03:00:00", 2, 1]',  # fold is 0 or 1
        '["2024-01-01T03:00:00", true, 1]',  # an int, not a bool
        '["2024-01-01T03:00:00", 0, 1.0]',  # the offset is an int
        '["2024-01-01T03:00:00+01:00", 0, 1]',  # offset given twice
        '["2024-01-01T03:00:00", 0]',  # a pair only ever says fold=1
        '["2024-01-01T03:00:00", 1, 1, 1]',
    ],
)
def test_bad_clock_payloads(payload: str) -> None:
    with pytest.raises(CodecError):
        tagged.loads(f'{{" dt": {payload}}}'.encode())
