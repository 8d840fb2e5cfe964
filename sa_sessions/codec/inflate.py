"""Bounded zlib inflation: the one zip-bomb guard for cookie bodies and server blobs.

A few hundred compressed bytes can inflate to gigabytes, so compressed input from
anywhere outside the process is inflated with a hard cap on the output, and must be
one complete stream with nothing after it.
"""

from __future__ import annotations

import zlib

from sa_sessions.exceptions import CodecError

__all__ = ["RAW_DEFLATE", "InflateError", "InflateTooLarge", "inflate"]

#: ``wbits`` for a raw deflate stream (no zlib header or checksum), as cookies use.
RAW_DEFLATE = -zlib.MAX_WBITS


class InflateError(CodecError):
    """The compressed data is corrupt, truncated, or followed by extra bytes."""


class InflateTooLarge(InflateError):
    """The data would inflate to more than the allowed number of bytes."""


def inflate(packed: bytes, max_bytes: int, *, wbits: int = zlib.MAX_WBITS) -> bytes:
    """The decompressed ``packed``: at most ``max_bytes`` bytes, or an :class:`InflateError`.

    ``wbits`` is :data:`zlib.MAX_WBITS` for a zlib stream and :data:`RAW_DEFLATE` for a
    raw one.  Inflation stops one byte past ``max_bytes``, so a bomb costs no more than
    the bound, and output of exactly ``max_bytes`` is told apart from more.
    """
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(packed, max_bytes + 1)
    except zlib.error:
        raise InflateError("compressed data is corrupt") from None
    if len(out) > max_bytes:
        raise InflateTooLarge(f"decompressed data is over the limit of {max_bytes} bytes")
    if not inflater.eof or inflater.unused_data:
        raise InflateError("compressed data is truncated or has trailing bytes")
    return out
