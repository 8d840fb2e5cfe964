"""Cache entries: their layout, and that every change to their bytes is caught."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest

from sa_sessions.cache.entry import HEADER_SIZE
from sa_sessions.cache.entry import TAG_PURPOSE
from sa_sessions.cache.entry import EndReason
from sa_sessions.cache.entry import Entry
from sa_sessions.cache.entry import EntryCodec
from sa_sessions.cache.entry import Kind
from sa_sessions.codec.blob import MAC_PURPOSE
from sa_sessions.codec.blob import BlobCodec
from sa_sessions.codec.blob import BlobMeta
from sa_sessions.exceptions import CodecError
from sa_sessions.signing import derive_key

from .conftest import OTHER_SECRET
from .conftest import SECRET

HASHED = hashlib.sha256(b"session one").hexdigest()
OTHER_HASHED = hashlib.sha256(b"session two").hexdigest()
STAMP = 1_700_000_000_000_000
MAC_SIZE = 32

CODEC = EntryCodec(SECRET)
BLOBS = BlobCodec(SECRET)


def meta() -> BlobMeta:
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    return BlobMeta(expires_at=now + timedelta(days=1), touched_at=now)


def sealed(hashed_id: str = HASHED, version: int = 7, data: str = "hello") -> bytes:
    """A valid blob, as the store seals it."""
    return BLOBS.seal(hashed_id, version, meta(), {"user": data})


def flipped(raw: bytes, index: int, mask: int = 0x01) -> bytes:
    return raw[:index] + bytes((raw[index] ^ mask,)) + raw[index + 1 :]


def all_kinds() -> list[tuple[str, bytes]]:
    return [
        ("copy", CODEC.copy(HASHED, 7, STAMP, sealed())),
        ("row-only", CODEC.row_only(HASHED, 7, STAMP)),
        ("ended", CODEC.ended(HASHED, EndReason.REVOKED, STAMP)),
    ]


KINDS = [pytest.param(raw, id=name) for name, raw in all_kinds()]


# --------------------------------------------------------------------------- round trips


def test_a_copy_round_trips() -> None:
    blob = sealed()
    raw = CODEC.copy(HASHED, 7, STAMP, blob)
    assert len(raw) == HEADER_SIZE + len(blob)
    assert raw[HEADER_SIZE:] == blob
    assert CODEC.decode(HASHED, raw) == Entry(Kind.COPY, 7, STAMP, blob)
    meta_back, data = BLOBS.open(HASHED, 7, blob)
    assert data == {"user": "hello"}
    assert meta_back == meta()


def test_a_row_only_marker_round_trips() -> None:
    raw = CODEC.row_only(HASHED, 12, STAMP)
    assert len(raw) == HEADER_SIZE
    assert CODEC.decode(HASHED, raw) == Entry(Kind.ROW_ONLY, 12, STAMP, None)


@pytest.mark.parametrize("reason", list(EndReason))
def test_an_end_marker_round_trips_with_its_reason(reason: EndReason) -> None:
    raw = CODEC.ended(HASHED, reason, STAMP)
    assert len(raw) == HEADER_SIZE
    entry = CODEC.decode(HASHED, raw)
    assert entry == Entry(Kind.ENDED, int(reason), STAMP, None)
    assert entry is not None and EndReason(entry.number) is reason


@pytest.mark.parametrize("number", [0, 1, -1, 2**63 - 1, -(2**63)])
@pytest.mark.parametrize("stamp", [0, -1, STAMP, 2**63 - 1, -(2**63)])
def test_extreme_versions_and_stamps_round_trip(number: int, stamp: int) -> None:
    raw = CODEC.row_only(HASHED, number, stamp)
    assert CODEC.decode(HASHED, raw) == Entry(Kind.ROW_ONLY, number, stamp, None)


def test_the_layout_is_the_documented_one() -> None:
    """kind (1) | version (8, signed big-endian) | stamp (8) | tag (32) | blob."""
    blob = sealed()
    raw = CODEC.copy(HASHED, -2, STAMP, blob)
    assert raw[0] == Kind.COPY
    assert int(Kind.COPY) == 1
    assert raw[1:9] == (-2).to_bytes(8, "big", signed=True)
    assert raw[9:17] == STAMP.to_bytes(8, "big", signed=True)
    key = derive_key(SECRET, TAG_PURPOSE)
    expected = hmac.new(key, HASHED.encode() + raw[:17] + blob[-MAC_SIZE:], "sha256").digest()
    assert raw[17:HEADER_SIZE] == expected
    marker = CODEC.ended(HASHED, EndReason.REPLACED, 5)
    assert marker[0] == Kind.ENDED
    assert int(Kind.ENDED) == 3
    assert marker[1:9] == (2).to_bytes(8, "big")
    assert marker[17:] == hmac.new(key, HASHED.encode() + marker[:17], "sha256").digest()
    assert CODEC.row_only(HASHED, 1, 1)[0] == Kind.ROW_ONLY
    assert int(Kind.ROW_ONLY) == 2


def test_a_copy_needs_a_sealed_blob_ending_with_its_mac() -> None:
    with pytest.raises(ValueError, match="32-byte MAC"):
        CODEC.copy(HASHED, 1, STAMP, b"x" * 31)
    assert CODEC.decode(HASHED, CODEC.copy(HASHED, 1, STAMP, b"x" * 32)) is not None


# --------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("raw", KINDS)
def test_another_key_rejects_every_kind(raw: bytes) -> None:
    assert CODEC.decode(HASHED, raw) is not None
    assert EntryCodec(OTHER_SECRET).decode(HASHED, raw) is None


@pytest.mark.parametrize("raw", KINDS)
def test_another_session_rejects_every_kind(raw: bytes) -> None:
    """An entry copied under another session's key is bound to its own hashed id."""
    assert CODEC.decode(OTHER_HASHED, raw) is None


@pytest.mark.parametrize("raw", KINDS)
def test_a_flipped_bit_anywhere_in_the_header_is_caught(raw: bytes) -> None:
    for index in range(HEADER_SIZE):
        for mask in (0x01, 0x80):
            assert CODEC.decode(HASHED, flipped(raw, index, mask)) is None, (index, mask)


def test_a_flipped_bit_in_the_blob_mac_is_caught() -> None:
    raw = CODEC.copy(HASHED, 7, STAMP, sealed())
    for index in range(len(raw) - MAC_SIZE, len(raw)):
        assert CODEC.decode(HASHED, flipped(raw, index)) is None, index


def test_a_flipped_bit_in_the_blob_body_is_caught_by_the_blob_mac() -> None:
    """The tag covers the blob's own MAC, which covers the body: both checks run on a read."""
    blob = sealed()
    raw = CODEC.copy(HASHED, 7, STAMP, blob)
    for index in range(HEADER_SIZE, len(raw) - MAC_SIZE):
        entry = CODEC.decode(HASHED, flipped(raw, index))
        assert entry is not None and entry.blob is not None
        with pytest.raises(CodecError):
            BLOBS.open(HASHED, entry.number, entry.blob)


@pytest.mark.parametrize("raw", KINDS)
def test_every_truncation_is_rejected(raw: bytes) -> None:
    for length in range(len(raw)):
        assert CODEC.decode(HASHED, raw[:length]) is None, length


@pytest.mark.parametrize("raw", KINDS)
def test_appended_bytes_are_rejected(raw: bytes) -> None:
    for extra in (b"\x00", b"x" * 32, sealed()):
        entry = CODEC.decode(HASHED, raw + extra)
        if entry is None:
            continue
        # Only a copy whose blob still ends with the same MAC gets past the tag...
        assert raw[0] == Kind.COPY and extra.endswith(raw[-MAC_SIZE:])
        assert entry.blob is not None
        with pytest.raises(CodecError):  # ...and the blob's own MAC refuses it
            BLOBS.open(HASHED, entry.number, entry.blob)


@pytest.mark.parametrize("raw", KINDS)
def test_every_other_kind_byte_is_rejected(raw: bytes) -> None:
    for kind in range(256):
        if kind != raw[0]:
            assert CODEC.decode(HASHED, bytes((kind,)) + raw[1:]) is None, kind


def test_a_row_only_marker_cannot_become_a_copy_or_an_end_marker() -> None:
    marker = CODEC.row_only(HASHED, 7, STAMP)
    as_copy = bytes((Kind.COPY,)) + marker[1:] + sealed()
    assert CODEC.decode(HASHED, as_copy) is None
    assert CODEC.decode(HASHED, bytes((Kind.ENDED,)) + marker[1:]) is None


def test_an_end_marker_cannot_change_its_reason() -> None:
    marker = CODEC.ended(HASHED, EndReason.REPLACED, STAMP)
    for reason in EndReason:
        forged = marker[:1] + int(reason).to_bytes(8, "big") + marker[9:]
        assert (CODEC.decode(HASHED, forged) is not None) == (reason is EndReason.REPLACED)


@pytest.mark.parametrize(
    "other_blob",
    [
        pytest.param(sealed(version=8), id="same-session-other-version"),
        pytest.param(sealed(version=7, data="changed"), id="same-session-same-version"),
        pytest.param(sealed(OTHER_HASHED, 7), id="other-session"),
    ],
)
def test_a_copy_whose_blob_is_swapped_for_another_valid_blob_is_rejected(
    other_blob: bytes,
) -> None:
    raw = CODEC.copy(HASHED, 7, STAMP, sealed())
    assert CODEC.decode(HASHED, raw[:HEADER_SIZE] + other_blob) is None


def test_an_old_copy_cannot_be_given_a_fresh_stamp() -> None:
    """What the tag is for: the staleness bound cannot be defeated by restamping a copy."""
    raw = CODEC.copy(HASHED, 7, STAMP, sealed())
    restamped = raw[:9] + (STAMP + 3_600_000_000).to_bytes(8, "big") + raw[17:]
    assert CODEC.decode(HASHED, restamped) is None


def test_a_version_cannot_be_raised() -> None:
    raw = CODEC.row_only(HASHED, 7, STAMP)
    assert CODEC.decode(HASHED, raw[:1] + (8).to_bytes(8, "big") + raw[9:]) is None


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x00" * HEADER_SIZE, b"x" * 200])
def test_garbage_is_rejected(raw: bytes) -> None:
    assert CODEC.decode(HASHED, raw) is None


# --------------------------------------------------------------------------- key rotation


def test_entries_made_with_an_older_key_verify_while_it_is_listed() -> None:
    old = CODEC
    rotated = EntryCodec([SECRET, OTHER_SECRET])  # oldest first: OTHER_SECRET now signs
    for _, raw in all_kinds():
        assert rotated.decode(HASHED, raw) == old.decode(HASHED, raw)
        assert rotated.decode(HASHED, raw) is not None
    assert EntryCodec([OTHER_SECRET]).decode(HASHED, all_kinds()[0][1]) is None  # old key gone


def test_entries_are_made_with_the_newest_key() -> None:
    rotated = EntryCodec([SECRET, OTHER_SECRET])
    raw = rotated.row_only(HASHED, 1, STAMP)
    assert EntryCodec(OTHER_SECRET).decode(HASHED, raw) is not None
    assert EntryCodec(SECRET).decode(HASHED, raw) is None
    assert raw == EntryCodec(OTHER_SECRET).row_only(HASHED, 1, STAMP)


def test_the_tag_key_is_not_the_blob_key() -> None:
    """A blob's MAC key is derived for another purpose: an entry tag cannot pass as one."""
    raw = CODEC.row_only(HASHED, 1, STAMP)
    raw_key_tag = hmac.new(SECRET, HASHED.encode() + raw[:17], "sha256").digest()
    assert raw[17:HEADER_SIZE] != raw_key_tag
    assert TAG_PURPOSE != MAC_PURPOSE
    blob_key_tag = hmac.new(
        derive_key(SECRET, MAC_PURPOSE), HASHED.encode() + raw[:17], "sha256"
    ).digest()
    assert raw[17:HEADER_SIZE] != blob_key_tag
