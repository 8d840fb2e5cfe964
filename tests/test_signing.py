"""KeyRing: HMAC-SHA256 equal to the standard library's, per purpose, with rotation."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import pytest

from sa_sessions.exceptions import SessionConfigError
from sa_sessions.signing import MIN_KEY_BYTES
from sa_sessions.signing import KeyRing
from sa_sessions.signing import Secret
from sa_sessions.signing import _KeyedSha256
from sa_sessions.signing import derive_key
from sa_sessions.signing import normalize_keys

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


# --------------------------------------------------------------------------- key validation


def test_keys_of_exactly_the_minimum_length() -> None:
    assert MIN_KEY_BYTES == 32
    assert normalize_keys(b"k" * 32)[0].reveal() == b"k" * 32
    assert normalize_keys("k" * 32)[0].reveal() == b"k" * 32
    assert normalize_keys("é" * 16)[0].reveal() == "é".encode() * 16  # bytes, not characters
    for short in (b"k" * 31, "k" * 31, "é" * 15 + "k", b""):
        with pytest.raises(SessionConfigError, match="at least 32 bytes"):
            normalize_keys(short)


@pytest.mark.parametrize("key", [12345, None, 3.5, bytearray(b"k" * 40), memoryview(b"k" * 40)])
def test_a_key_in_a_list_must_be_bytes_or_str(key: Any) -> None:
    with pytest.raises(SessionConfigError, match=r"cookie key must be bytes or str, not \w+"):
        normalize_keys([MASTER, key], "cookie key")


@pytest.mark.parametrize("keys", [12345, None, {MASTER}, iter([MASTER]), bytearray(MASTER)])
def test_keys_must_be_a_key_or_a_list_of_keys(keys: Any) -> None:
    with pytest.raises(SessionConfigError, match="secret key is required"):
        normalize_keys(keys)


@pytest.mark.parametrize("keys", [[], ()])
def test_an_empty_rotation_list_is_refused(keys: Any) -> None:
    with pytest.raises(SessionConfigError, match="blob key is required"):
        normalize_keys(keys, "blob key")


def test_rotation_lists_keep_their_order() -> None:
    secret = Secret(OTHER)
    keys = normalize_keys((MASTER, "s" * 32, secret))
    assert [key.reveal() for key in keys] == [MASTER, b"s" * 32, OTHER]
    assert normalize_keys(secret)[0].reveal() == OTHER


def test_secrets_stay_out_of_text() -> None:
    secret = Secret(MASTER)
    assert repr(secret) == str(secret) == "Secret('**********')"
    assert repr(KeyRing([OTHER, MASTER], "p")) == "KeyRing(<2 keys>)"
    assert MASTER.decode() not in repr(normalize_keys(MASTER))
