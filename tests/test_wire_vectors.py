"""Fixed test vectors for every wire format: derived keys, cookies and sealed blobs.

Each expected value was computed once from the code and is hard-coded here.  Any change
to a derivation label, a length prefix, a field order, a separator, the compression
level or the nonce layout changes these bytes, and so would log every user out (and
orphan every stored session) at the next deploy: such a change must be deliberate,
come with a new format version, and update these vectors on purpose.

Every vector also decodes back to its inputs, and stops decoding with any one byte or
character changed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import zlib
from datetime import date
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sa_sessions import cookies
from sa_sessions.codec.blob import BlobCodec
from sa_sessions.codec.blob import BlobMeta
from sa_sessions.cookies import CookieCodec
from sa_sessions.cookies import CookieState
from sa_sessions.cookies import Rejection
from sa_sessions.exceptions import CodecError
from sa_sessions.signing import KeyRing
from sa_sessions.signing import derive_key

UTC = timezone.utc
KEY = b"wire-vector-master-key-0123456789abcdef"
OLD_KEY = b"wire-vector-retired-key-fedcba9876543210"
SID = "Qm7xK2pLr9ZtWv4NbHc8JdYfGs3Ek6Ua1Ti5Oo0RnSe"
HID = hashlib.sha256(SID.encode()).hexdigest()
ISSUED = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
EXPIRES = datetime(2026, 3, 8, 12, 0, 0, 654321, tzinfo=UTC)
NOW = ISSUED + timedelta(hours=1)
NONCE_SOURCE = bytes(range(100, 164))
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def bits(count: int) -> str:
    """``count`` chars of 'a'/'b' from SHA-256: deterministic forever, and a string on
    which deflate levels 5, 6 and 7 give different bytes, so the level is pinned too."""
    out = ""
    block = 0
    while len(out) < count:
        digest = hashlib.sha256(b"bits" + block.to_bytes(4, "big")).digest()
        block += 1
        out += "".join("ab"[(byte >> shift) & 1] for byte in digest for shift in range(8))
    return out[:count]


# --------------------------------------------------------------------------- key derivation

COOKIE_PURPOSE = "sa_sessions.cookie:session"
DERIVED = {
    COOKIE_PURPOSE: "4d95bf537a826d02c9f7963f02ecebbd1bcd3af0b1b82031cba102a2fefc603a",
    "": "b081a845db4b8e452f23f48258168966b275304c8c83f9108117ac8087505857",
    "p" * 300: "626d3b7948f0e6a8b70f2d76d858524a7af2e764ee5d1c6abc430c54967ced5f",
    "clé": "449ee423af5b84f0b523aa8f4dcc1a0b03784dadba36005d2b3041f27a0cf855",
}
RING_SIGNATURE = "b7610aed55fbbd8c11330ccbc75560ea3f36d143c863c9936030dddefaee1270"


@pytest.mark.parametrize("purpose", list(DERIVED), ids=["cookie", "empty", "300-bytes", "utf8"])
def test_derived_keys(purpose: str) -> None:
    assert derive_key(KEY, purpose).hex() == DERIVED[purpose]


def test_derivation_layout() -> None:
    """The layout the vectors pin: label, 4-byte big-endian length, UTF-8 purpose."""
    label = "clé".encode()
    info = b"sa_sessions.v1" + len(label).to_bytes(4, "big") + label
    assert hmac.new(KEY, info, hashlib.sha256).hexdigest() == DERIVED["clé"]


def test_key_ring_signature() -> None:
    ring = KeyRing([OLD_KEY, KEY], "sa_sessions.vectors")
    mac = bytes.fromhex(RING_SIGNATURE)
    assert ring.sign(b"message") == mac  # the LAST key of the list signs
    assert ring.verify(b"message", mac) == 0
    assert KeyRing(KEY, "sa_sessions.vectors").verify(b"message", mac) == 0
    assert KeyRing([KEY, OLD_KEY], "sa_sessions.vectors").verify(b"message", mac) == 1
    for position in range(len(mac)):
        changed = bytearray(mac)
        changed[position] ^= 0x01
        assert ring.verify(b"message", bytes(changed)) is None


# --------------------------------------------------------------------------- cookies

ID_STATE = CookieState("id", SID, ISSUED, EXPIRES, True, None, extra={"gen": 3})
PLAIN_STATE = CookieState(
    "data", SID, ISSUED, EXPIRES, False, {"user": 42, "name": "Ada", "day": date(2026, 3, 1)}
)
DEFLATED_STATE = CookieState("data", SID, ISSUED, EXPIRES, False, {"bits": bits(600)})
ENCRYPTED_STATE = CookieState(
    "data", SID, ISSUED, EXPIRES, False, {"user": 42, "name": "Ada"}, extra={"gen": 3}
)

ID_COOKIE = (
    "v1.i.WyJRbTd4SzJwTHI5WnRXdjROYkhjOEpkWWZHczNFazZVYTFUaTVPbzBSblNlIiwxNzcyMzY2NDAwMTIzND"
    "U2LDE3NzI5NzEyMDA2NTQzMjEsMSx7ImdlbiI6M31d.3iJQvjMQ-iYb3y-Vg7KmOEgS9kX5F_4L93GrCUWZn28"
)
PLAIN_COOKIE = (
    "v1.d.WyJRbTd4SzJwTHI5WnRXdjROYkhjOEpkWWZHczNFazZVYTFUaTVPbzBSblNlIiwxNzcyMzY2NDAwMTIzND"
    "U2LDE3NzI5NzEyMDA2NTQzMjEsMCx7fSx7InVzZXIiOjQyLCJuYW1lIjoiQWRhIiwiZGF5Ijp7IiBkIjoiMjAy"
    "Ni0wMy0wMSJ9fV0.fYyQ_jhmlWioc19QiJYh4927OfeIHmlH0v8fDKnw-zc"
)
DEFLATED_COOKIE = (
    "v1.dz.VVHbCsIwDP2XPu-h7bZOfRdFRfGGqPiQegERL-gQYfjv6pomcZc2PW1OzknXanwuXn17G9ybq3LxzIa-u2"
    "30dstD55G2T24OZnbMR1c9uUz3KjFFYVPnMq2NTbPc1UCzMFZrl2epNYlOqndSKX8sH6qlAPz3q__fADSK4LdVvx"
    "jRIp6vIYCARaYAAHGFB1GaJZFnMVwFCEaSEAHNWAkrsIgoKATIJUT9OeYkL4R4RoQn4Mq4E7sk-oIlecZFFEEA0C"
    "HwtMG5IFsUEbYbO0epwrRwzv0Gdin5Zbq4Z8EvhZMVMo73zF1W780H.ySw1mAOWtfRFFplUcXq642PY-FmMN3Lkl"
    "vHCRU2KrpA"
)
ENCRYPTED_COOKIE = (
    "v1.de.ZGVmZ2hpamtsbW5vl0piV7rFtulwkZ1aZhOtd6hH7035EC3JJ_fIHSb8riIoM_Ct92LyvUrRmLxestieq"
    "yXqEr2unmywzJnL52Znkw72RorRK9i9UzqMXBwWnYnoxq1JoFlbzOirXV_B9lGO-YQWRIlv8rC2HjaF5tWgykjD"
    "bpadizA5zhUlirD4PclVaU8Z4fU.OWmEp_U-lgrCV6nIYGPX0j-EtxSbHVVrrz-sQvkqTl4"
)

COOKIE_VECTORS = [
    pytest.param(ID_STATE, ID_COOKIE, False, id="signed-id"),
    pytest.param(PLAIN_STATE, PLAIN_COOKIE, False, id="plain-data"),
    pytest.param(DEFLATED_STATE, DEFLATED_COOKIE, False, id="deflated-data"),
    pytest.param(ENCRYPTED_STATE, ENCRYPTED_COOKIE, True, id="encrypted-data"),
]


@pytest.fixture
def fixed_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cookie module's only randomness, the AES-GCM nonce, made predictable."""
    monkeypatch.setattr(
        cookies, "secrets", SimpleNamespace(token_bytes=lambda size: NONCE_SOURCE[:size])
    )


@pytest.mark.usefixtures("fixed_nonce")
@pytest.mark.parametrize(("state", "value", "encrypt"), COOKIE_VECTORS)
def test_cookie_encodes_to_the_vector(state: CookieState, value: str, encrypt: bool) -> None:
    codec = CookieCodec(KEY, cookie_name="session", encrypt=encrypt)
    assert codec.encode(state) == value


@pytest.mark.parametrize(("state", "value", "encrypt"), COOKIE_VECTORS)
def test_cookie_vector_decodes_back(state: CookieState, value: str, encrypt: bool) -> None:
    # Encrypting or not, a codec reads both forms: the vector pins the reader too.
    for reader in (encrypt, not encrypt):
        decoded = CookieCodec(KEY, cookie_name="session", encrypt=reader).decode(value, now=NOW)
        assert decoded == state
    rotated = CookieCodec([KEY, OLD_KEY], cookie_name="session").decode(value, now=NOW)
    assert rotated == state._replace(key_index=1)


@pytest.mark.parametrize(("state", "value", "encrypt"), COOKIE_VECTORS)
def test_cookie_vector_with_any_one_character_changed_is_refused(
    state: CookieState, value: str, encrypt: bool, caplog: pytest.LogCaptureFixture
) -> None:
    codec = CookieCodec(KEY, cookie_name="session", encrypt=encrypt)
    caplog.set_level(logging.CRITICAL, logger="sa_sessions.security")  # thousands of refusals
    for position, char in enumerate(value):
        if char == ".":
            continue  # a moved separator is covered by the shape check, not the MAC
        other = BASE64URL[(BASE64URL.index(char) + 1) % len(BASE64URL)]
        changed = value[:position] + other + value[position + 1 :]
        assert codec.decode(changed, now=NOW) is None, position
    body_start = value.index(".", 3) + 1
    changed = (
        value[:body_start] + ("B" if value[body_start] != "B" else "C") + value[body_start + 1 :]
    )
    assert codec.rejection(changed, now=NOW) is Rejection.BAD_SIGNATURE


def test_deflated_vector_body_is_raw_deflate_at_level_6() -> None:
    """What the deflated vector pins, spelled out: raw deflate (no zlib header), level 6."""
    body = DEFLATED_COOKIE.split(".")[2]
    packed = cookies._b64decode(body)
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = zlib.decompress(packed, -15)
    assert packer.compress(payload) + packer.flush() == packed
    for level in (5, 7):
        other = zlib.compressobj(level, zlib.DEFLATED, -15)
        assert other.compress(payload) + other.flush() != packed


def test_encrypted_vector_layout() -> None:
    """nonce (12 bytes) || AES-256-GCM(json) under a key derived per cookie name."""
    raw = cookies._b64decode(ENCRYPTED_COOKIE.split(".")[2])
    assert raw[:12] == NONCE_SOURCE[:12]
    key = KeyRing(KEY, "sa_sessions.cookie-enc:session").sign(b"aes-256-gcm")
    plain = AESGCM(key).decrypt(raw[:12], raw[12:], b"v1.de")
    assert plain.startswith(f'["{SID}",'.encode())


# --------------------------------------------------------------------------- sealed blobs

BLOB_META = BlobMeta(EXPIRES, ISSUED, ssl_only=True)
BLOB_DATA: dict[str, Any] = {"user": 42, "cart": [1, 2], "name": "Ada"}
BLOB_VECTORS = {
    # format 3: indexed keyed pickle (what the pickle serializer writes by default)
    ("pickle", "indexed"): (
        "3c0000064c82069cabf100064bf535b0f240000000030000002380059518000000000000008c0475736572"
        "948c0463617274948c046e616d659487942e05000000140000001200000080054b2a2e8005950900000000"
        "0000005d94284b014b02652e80059507000000000000008c03416461942e2425709c38ea1eccc0c6ff2156"
        "a03abaf5c2eac09244fb7f78af4b5b8b7b1b6c"
    ),
    # format 1: keyed pickle (layout="keyed", what 0.1.0 reads and writes)
    ("pickle", "keyed"): (
        "1c00064c82069cabf100064bf535b0f2408005954e000000000000007d94288c047573657294430580054b"
        "2a2e948c046361727494431480059509000000000000005d94284b014b02652e948c046e616d6594431280"
        "059507000000000000008c03416461942e94752efb219a7d2fcd5976a4bb3dd7b951c41c4e79e0574445ea"
        "2707c24fa3cc5aed4b"
    ),
    ("json", "indexed"): (
        "1500064c82069cabf100064bf535b0f2407b2275736572223a34322c2263617274223a5b312c325d2c226e"
        "616d65223a22416461227d98c1a9e4a128088d9f2db8d88a8be570752b617494c761866ac4929851eb70f0"
    ),
}


@pytest.mark.parametrize(("serializer", "layout"), list(BLOB_VECTORS))
def test_sealed_blob_vector(serializer: Any, layout: Any) -> None:
    codec = BlobCodec(KEY, serializer=serializer, layout=layout)
    blob = bytes.fromhex(BLOB_VECTORS[serializer, layout])
    assert codec.seal(HID, 7, BLOB_META, BLOB_DATA) == blob
    assert codec.open(HID, 7, blob) == (BLOB_META, BLOB_DATA)
    for other_serializer in ("pickle", "json"):
        for other_layout in ("indexed", "keyed"):
            other = BlobCodec(KEY, serializer=other_serializer, layout=other_layout)
            assert other.open(HID, 7, blob) == (BLOB_META, BLOB_DATA)  # the header says which


@pytest.mark.parametrize(("serializer", "layout"), list(BLOB_VECTORS))
def test_sealed_blob_vector_with_any_one_byte_changed_is_refused(
    serializer: Any, layout: Any
) -> None:
    codec = BlobCodec(KEY, serializer=serializer, layout=layout)
    blob = bytes.fromhex(BLOB_VECTORS[serializer, layout])
    for position in range(len(blob)):
        changed = bytearray(blob)
        changed[position] ^= 0x01
        with pytest.raises(CodecError):
            codec.open(HID, 7, bytes(changed))
    with pytest.raises(CodecError):
        codec.open(HID, 8, blob)  # another version of the same row
