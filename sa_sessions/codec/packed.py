"""Packed: the values of an opened blob, still in their stored form until read.

A request usually reads one or two keys of its session, so opening a blob decodes
only its key index: the keys (one tuple, unpickled in one C call) and the stored
length of every value (one array of 32-bit integers, no Python object per key).  The
session's dict maps every key to the one :class:`Packed` of its blob; a value is
located and decoded when the application reads it, and a save copies the stored bytes
of every value the request did not change.

Layout of an indexed payload (format 3 blobs; integers big-endian unless said)::

    4     number of keys, n
    4     length K of the key tuple's pickle
    K     protocol 5 pickle of a tuple of n str
    4n    stored length of each value, in key order (unsigned, little-endian)
    ...   the values, in key order, each either a protocol 5 pickle (it starts with
          0x80) or the byte ``z`` followed by the zlib stream of one
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from collections.abc import Mapping
from itertools import accumulate
from itertools import pairwise
from typing import Any
from typing import Final
from typing import Protocol

from sa_sessions.exceptions import CodecError

__all__ = [
    "COMPRESSED",
    "is_compressed",
    "Packed",
    "ValueDecoder",
    "index_header",
    "lengths_array",
    "unpacked",
]

#: First byte of a value stored compressed (a pickle starts with 0x80 instead).
COMPRESSED: Final = b"z"
_COMPRESSED_TAG: Final = COMPRESSED[0]


def is_compressed(raw: bytes | memoryview) -> bool:
    """Whether stored value bytes are a compressed pickle."""
    return len(raw) > 0 and raw[0] == _COMPRESSED_TAG


_HEAD: Final = 8
_LENGTH_TYPE: Final = "I" if array("I").itemsize == 4 else "L"
_SWAP: Final = sys.byteorder == "big"


class ValueDecoder(Protocol):
    """What a :class:`Packed` needs from its codec: turning stored bytes into a value."""

    def decode_value(self, raw: bytes | memoryview) -> Any: ...


def lengths_array(lengths: Iterable[int] = ()) -> array[int]:
    """An array of stored value lengths (each must fit 32 unsigned bits)."""
    return array(_LENGTH_TYPE, lengths)


def index_header(keys_pickle: bytes, count: int, lengths: array[int]) -> bytes:
    """The bytes that precede the values of an indexed payload."""
    if _SWAP:
        lengths = array(_LENGTH_TYPE, lengths)
        lengths.byteswap()
    return b"".join(
        (count.to_bytes(4, "big"), len(keys_pickle).to_bytes(4, "big"), keys_pickle, lengths)
    )


class Packed:
    """The stored values of one blob, located and decoded on first use.

    Made by :meth:`BlobCodec.open_lazy` only after the blob's MAC checked out.
    :meth:`value` returns a new object on every call; :meth:`raw` gives the stored
    bytes, which :meth:`BlobCodec.seal` writes back unchanged.
    """

    __slots__ = ("_lengths", "_spans", "_values", "codec", "keys")

    def __init__(
        self,
        codec: ValueDecoder,
        keys: tuple[str, ...],
        lengths: array[int],
        values: memoryview,
    ) -> None:
        #: The codec that stored the values (a save by another codec decodes them).
        self.codec = codec
        #: Every key, in stored order.
        self.keys = keys
        self._lengths = lengths
        self._values = values
        self._spans: dict[str, tuple[int, int]] | None = None

    @classmethod
    def from_payload(cls, codec: ValueDecoder, payload: memoryview, load_keys: Any) -> Packed:
        """Parse an indexed payload; ``load_keys`` unpickles the key tuple.

        :raises CodecError: the index does not describe the payload exactly.
        """
        size = len(payload)
        if size < _HEAD:
            raise CodecError("indexed payload is too short")
        count = int.from_bytes(payload[:4], "big")
        keys_end = _HEAD + int.from_bytes(payload[4:8], "big")
        lengths_end = keys_end + 4 * count
        if lengths_end > size:
            raise CodecError("indexed payload is shorter than its index")
        keys = load_keys(payload[_HEAD:keys_end])
        if type(keys) is not tuple or len(keys) != count:
            raise CodecError("indexed payload does not hold its key tuple")
        lengths = array(_LENGTH_TYPE)
        lengths.frombytes(payload[keys_end:lengths_end])
        if _SWAP:
            lengths.byteswap()
        if lengths_end + sum(lengths) != size:
            raise CodecError("indexed payload's value lengths do not add up")
        return cls(codec, keys, lengths, payload[lengths_end:])

    @classmethod
    def from_mapping(cls, codec: ValueDecoder, raws: dict[str, bytes]) -> Packed:
        """The values of a format 1/2 keyed payload (a dict of key -> stored bytes)."""
        values = b"".join(raws.values())
        return cls(codec, tuple(raws), lengths_array(map(len, raws.values())), memoryview(values))

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"<Packed {len(self.keys)} values, {len(self._values)} bytes>"

    def spans(self) -> dict[str, tuple[int, int]]:
        """key -> (start, end) of its stored bytes among the values (built once)."""
        spans = self._spans
        if spans is None:
            spans = dict(
                zip(self.keys, pairwise(accumulate(self._lengths, initial=0)), strict=True)
            )
            self._spans = spans
        return spans

    def values_view(self) -> memoryview:
        """All stored values, back to back, in key order."""
        return self._values

    def lengths(self) -> array[int]:
        """The stored length of every value, in key order (do not modify)."""
        return self._lengths

    def _span(self, key: str) -> tuple[int, int]:
        spans = self._spans
        if spans is not None:
            return spans[key]
        # The first reads of a request: a scan in C beats building every span.
        try:
            position = self.keys.index(key)
        except ValueError:
            raise KeyError(key) from None
        lengths = self._lengths
        start = sum(lengths[:position])
        return start, start + lengths[position]

    def raw(self, key: str) -> memoryview:
        """The stored bytes of ``key``'s value (KeyError if the blob has no such key)."""
        start, end = self._span(key)
        return self._values[start:end]

    def size(self, key: str) -> int:
        """How many bytes ``key``'s value takes stored."""
        start, end = self._span(key)
        return end - start

    def value(self, key: str) -> Any:
        """``key``'s value, decoded now (a new object on every call).

        :raises CodecError: the bytes are authentic but cannot be decoded (an
            allow-list or code change since they were written, or a leaked key).
        """
        return self.codec.decode_value(self.raw(key))


def unpacked(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every :class:`Packed` value decoded (a new dict; CodecError on failure)."""
    return {
        key: value.value(key) if type(value) is Packed else value for key, value in data.items()
    }
