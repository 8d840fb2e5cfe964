"""Bounded inflation: output of exactly the bound passes, one byte more never does."""

from __future__ import annotations

import zlib
from types import SimpleNamespace
from typing import Any

import pytest

from sa_sessions.codec import inflate as inflate_module
from sa_sessions.codec.inflate import RAW_DEFLATE
from sa_sessions.codec.inflate import InflateError
from sa_sessions.codec.inflate import InflateTooLarge
from sa_sessions.codec.inflate import inflate
from sa_sessions.exceptions import CodecError

DATA = b"session data, " * 100


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, RAW_DEFLATE)
    return packer.compress(data) + packer.flush()


def test_round_trips() -> None:
    assert RAW_DEFLATE == -15
    assert inflate(zlib.compress(DATA), 10_000) == DATA
    assert inflate(raw_deflate(DATA), 10_000, wbits=RAW_DEFLATE) == DATA
    assert inflate(zlib.compress(b""), 0) == b""


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, RAW_DEFLATE])
def test_bound_at_the_edge(wbits: int) -> None:
    packed = zlib.compress(DATA) if wbits > 0 else raw_deflate(DATA)
    assert inflate(packed, len(DATA), wbits=wbits) == DATA
    with pytest.raises(InflateTooLarge, match=f"over the limit of {len(DATA) - 1} bytes"):
        inflate(packed, len(DATA) - 1, wbits=wbits)
    with pytest.raises(InflateTooLarge):
        inflate(zlib.compress(b"x"), 0)


def test_a_bomb_stops_at_the_bound() -> None:
    bomb = zlib.compress(bytes(10_000_000), 9)
    assert len(bomb) < 20_000
    with pytest.raises(InflateTooLarge) as info:
        inflate(bomb, 64 * 1024)
    assert isinstance(info.value, InflateError)
    assert isinstance(info.value, CodecError)


def test_inflation_stops_one_byte_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """zlib is never asked for more than ``max_bytes + 1`` bytes: that is the bomb's cost."""
    asked: list[int] = []

    class Spy:
        def __init__(self, wbits: int) -> None:
            self._real = zlib.decompressobj(wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            asked.append(max_length)
            return self._real.decompress(data, max_length)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    fake = SimpleNamespace(decompressobj=Spy, error=zlib.error)
    monkeypatch.setattr(inflate_module, "zlib", fake)
    assert inflate(zlib.compress(DATA), 5_000) == DATA
    assert asked == [5_001]


@pytest.mark.parametrize(
    ("packed", "wbits"),
    [
        pytest.param(b"\xff\xff\xff\xff", zlib.MAX_WBITS, id="garbage"),
        pytest.param(zlib.compress(DATA)[:-4], zlib.MAX_WBITS, id="no-checksum"),
        pytest.param(zlib.compress(DATA)[:20], zlib.MAX_WBITS, id="truncated"),
        pytest.param(zlib.compress(DATA) + b"\x00", zlib.MAX_WBITS, id="trailing-byte"),
        pytest.param(raw_deflate(DATA) + b"tail", RAW_DEFLATE, id="raw-trailing"),
        pytest.param(raw_deflate(DATA)[:-2], RAW_DEFLATE, id="raw-truncated"),
        pytest.param(zlib.compress(DATA), RAW_DEFLATE, id="zlib-read-as-raw"),
        pytest.param(raw_deflate(DATA), zlib.MAX_WBITS, id="raw-read-as-zlib"),
        pytest.param(b"", zlib.MAX_WBITS, id="empty"),
    ],
)
def test_corrupt_input(packed: bytes, wbits: int) -> None:
    with pytest.raises(InflateError) as info:
        inflate(packed, 10_000, wbits=wbits)
    assert type(info.value) is InflateError  # not mistaken for a bomb
