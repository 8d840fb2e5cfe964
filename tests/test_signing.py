"""KeyRing: HMAC-SHA256 equal to the standard library's, per purpose, with rotation."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from sa_sessions.signing import KeyRing
from sa_sessions.signing import _KeyedSha256
from sa_sessions.signing import derive_key

MASTER = b"signing-test-master-key-0123456789abcdef"
OTHER = b"another-master-key-for-rotation-0123456789"


@pytest.mark.parametrize("key_size", [1, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("message_size", [0, 1, 55, 64, 1000, 100_000])
def test_keyed_sha256_is_hmac_sha256(key_size: int, message_size: int) -> None:
    key, message = os.urandom(key_size), os.urandom(message_size)
    expected = hmac.new(key, message, hashlib.sha256).digest()
    keyed = _KeyedSha256(key)
    assert keyed.digest((message,)) == expected
    assert keyed.digest((message,)) == expected  # the prepared states are not consumed
    cut = message_size // 3
    parts = (message[:cut], memoryview(message)[cut:])
    assert keyed.digest(parts) == expected


def test_sign_uses_the_derived_key_of_the_newest_master() -> None:
    ring = KeyRing([OTHER, MASTER], "purpose-a")
    derived = derive_key(MASTER, "purpose-a")
    assert ring.sign(b"hello") == hmac.new(derived, b"hello", hashlib.sha256).digest()
    assert ring.sign(b"hel", b"lo") == ring.sign(b"hello")
    assert KeyRing(MASTER, "purpose-b").sign(b"hello") != ring.sign(b"hello")


def test_verify_tries_every_key_and_refuses_tampering() -> None:
    old = KeyRing(OTHER, "p").sign(b"message")
    ring = KeyRing([OTHER, MASTER], "p")
    assert ring.verify(b"message", ring.sign(b"message")) == 0
    assert ring.verify(b"message", old) == 1
    assert ring.verify(b"mess", old, b"age") == 1
    assert ring.verify(b"massage", old) is None
    assert ring.verify(b"message", old[:-1] + bytes([old[-1] ^ 1])) is None
    assert ring.verify(b"message", b"") is None
    assert KeyRing(MASTER, "p").verify(b"message", old) is None
