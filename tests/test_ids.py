"""Session ids: their exact shape, the shape check at its edges, and the storage hash."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from sa_sessions import ids
from sa_sessions.ids import SESSION_ID_LENGTH
from sa_sessions.ids import hash_session_id
from sa_sessions.ids import is_hashed_id
from sa_sessions.ids import is_well_formed_id
from sa_sessions.ids import log_id
from sa_sessions.ids import new_session_id

GOOD_ID = "Qm7xK2pLr9ZtWv4NbHc8JdYfGs3Ek6Ua1Ti5Oo0R-_e"
GOOD_HASH = hashlib.sha256(GOOD_ID.encode("ascii")).hexdigest()


def test_new_ids_carry_256_random_bits() -> None:
    fresh = {new_session_id() for _ in range(50)}
    assert len(fresh) == 50
    for session_id in fresh:
        assert len(session_id) == SESSION_ID_LENGTH == 43
        assert is_well_formed_id(session_id)
        assert len(base64.urlsafe_b64decode(session_id + "=")) == 32


def test_well_formed_id_at_its_edges() -> None:
    assert is_well_formed_id(GOOD_ID)
    assert is_well_formed_id("A" * 43)
    assert is_well_formed_id("-" * 43)
    assert is_well_formed_id("_" * 43)
    assert not is_well_formed_id(GOOD_ID[:-1])  # 42
    assert not is_well_formed_id(GOOD_ID + "a")  # 44
    assert not is_well_formed_id("")
    for char in "+/=. \n\x00\xe9":
        assert not is_well_formed_id(GOOD_ID[:-1] + char)
        assert not is_well_formed_id(char + GOOD_ID[1:])


@pytest.mark.parametrize(
    "value", [GOOD_ID.encode(), bytearray(GOOD_ID.encode()), None, 43, 4.3, [GOOD_ID]], ids=repr
)
def test_well_formed_id_refuses_non_strings(value: Any) -> None:
    assert is_well_formed_id(value) is False


def test_hash_is_sha256_hex_of_the_ascii_id() -> None:
    """A storage format: every row and cache key is addressed by this value."""
    expected = "b3b584ff02a0c75237e957ce2e4899c5887297a967f1624ac822371bc87b94d1"
    assert hash_session_id(GOOD_ID) == GOOD_HASH == expected


def test_hashed_id_at_its_edges() -> None:
    assert is_hashed_id(GOOD_HASH)
    assert is_hashed_id("0" * 64)
    assert not is_hashed_id(GOOD_HASH[:-1])
    assert not is_hashed_id(GOOD_HASH + "0")
    assert not is_hashed_id(GOOD_HASH.upper())
    assert not is_hashed_id(GOOD_HASH[:-1] + "g")
    assert not is_hashed_id(GOOD_HASH[:-1] + "\n")


@pytest.mark.parametrize("value", [GOOD_HASH.encode(), None, 64, [GOOD_HASH]], ids=repr)
def test_hashed_id_refuses_non_strings(value: Any) -> None:
    assert is_hashed_id(value) is False


def test_log_id_is_a_12_character_prefix() -> None:
    assert log_id(GOOD_HASH) == GOOD_HASH[:12]
    assert len(log_id(GOOD_HASH)) == 12
    assert ids.log_id("abc") == "abc"
