"""Every limit and validation of :mod:`sa_sessions.cookies`, at its edge and one past it.

A limit that moves by one (``<`` for ``<=``, 4096 for 4095) changes which cookies a
deployment accepts; these tests fail on any such move.  ``tools/mutate.py`` checks that.
"""

from __future__ import annotations

import base64
import secrets
import zlib
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

import pytest

from sa_sessions import cookies
from sa_sessions._clock import from_micros
from sa_sessions.codec import tagged
from sa_sessions.cookies import DEFAULT_MAX_HEADER_BYTES
from sa_sessions.cookies import MAX_COOKIE_BYTES
from sa_sessions.cookies import CookieCodec
from sa_sessions.cookies import CookieState
from sa_sessions.cookies import Rejection
from sa_sessions.exceptions import SessionConfigError
from sa_sessions.exceptions import SessionTooLarge
from tests.test_cookie_rejections import KEY
from tests.test_cookie_rejections import LATER
from tests.test_cookie_rejections import NAME
from tests.test_cookie_rejections import NOW
from tests.test_cookie_rejections import SID
from tests.test_cookie_rejections import body
from tests.test_cookie_rejections import deflate
from tests.test_cookie_rejections import fields
from tests.test_cookie_rejections import forge
from tests.test_cookie_rejections import state

BODY_BOUND = 64 * 1024


def sized_state(size: int, **changes: Any) -> CookieState:
    """A data state whose tagged-JSON body is exactly ``size`` bytes (and compresses well)."""
    overhead = len(tagged.dumps(fields(data={"x": ""})))
    result = state(data={"x": "x" * (size - overhead)}, **changes)
    assert len(tagged.dumps(fields(data=result.data))) == size
    return result


def sized_body(size: int) -> bytes:
    """A good signed body of exactly ``size`` bytes, for forging."""
    overhead = len(body(data={"x": ""}))
    raw = body(data={"x": "x" * (size - overhead)})
    assert len(raw) == size
    return raw


@pytest.fixture
def codec() -> CookieCodec:
    return CookieCodec(KEY, cookie_name=NAME)


# --------------------------------------------------------------------------- defaults


def test_one_home_for_the_browser_limits() -> None:
    """The cookie-size facts are defined once (in ``_cookie_header``) and re-exported."""
    from sa_sessions import _cookie_header

    assert MAX_COOKIE_BYTES == _cookie_header.MAX_COOKIE_BYTES == 4096
    assert DEFAULT_MAX_HEADER_BYTES == _cookie_header.DEFAULT_MAX_HEADER_BYTES == 8192


def test_defaults(codec: CookieCodec) -> None:
    assert codec.max_value_bytes == MAX_COOKIE_BYTES
    assert codec.compress_min_bytes == 256
    assert codec.future_leeway == timedelta(seconds=60)
    assert codec.encrypt is False
    assert CookieCodec.max_decompressed_bytes == BODY_BOUND
    assert CookieCodec.compress_level == 6
    assert repr(codec) == "CookieCodec(cookie_name='session', encrypt=False)"


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("cookie_name", ["", 42, None, b"session"], ids=repr)
def test_cookie_name_must_be_a_non_empty_string(cookie_name: Any) -> None:
    with pytest.raises(SessionConfigError, match="cookie_name"):
        CookieCodec(KEY, cookie_name=cookie_name)


def test_max_value_bytes_floor() -> None:
    with pytest.raises(SessionConfigError, match="at least 128"):
        CookieCodec(KEY, cookie_name=NAME, max_value_bytes=127)
    assert CookieCodec(KEY, cookie_name=NAME, max_value_bytes=128).max_value_bytes == 128


def test_compress_min_bytes_floor() -> None:
    with pytest.raises(SessionConfigError, match="negative"):
        CookieCodec(KEY, cookie_name=NAME, compress_min_bytes=-1)
    assert CookieCodec(KEY, cookie_name=NAME, compress_min_bytes=0).compress_min_bytes == 0


def test_future_leeway_floor() -> None:
    with pytest.raises(SessionConfigError, match="negative"):
        CookieCodec(KEY, cookie_name=NAME, future_leeway=timedelta(microseconds=-1))
    strict = CookieCodec(KEY, cookie_name=NAME, future_leeway=timedelta(0))
    assert strict.rejection(forge(body(issued=cookies.to_micros(NOW))), now=NOW) is None
    late = forge(body(issued=cookies.to_micros(NOW) + 1))
    assert strict.rejection(late, now=NOW) is Rejection.FROM_THE_FUTURE


def test_leeway_is_counted_in_microseconds() -> None:
    lenient = CookieCodec(KEY, cookie_name=NAME, future_leeway=timedelta(seconds=1))
    edge = cookies.to_micros(NOW) + 1_000_000
    assert lenient.rejection(forge(body(issued=edge)), now=NOW) is None
    assert lenient.rejection(forge(body(issued=edge + 1)), now=NOW) is Rejection.FROM_THE_FUTURE


def test_encrypt_without_cryptography_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Any:
        raise ImportError("cryptography")

    monkeypatch.setattr(cookies, "_load_aesgcm", missing)
    with pytest.raises(SessionConfigError, match=r"sa_sessions\[crypto\]"):
        CookieCodec(KEY, cookie_name=NAME, encrypt=True)
    assert CookieCodec(KEY, cookie_name=NAME).encrypt is False


def test_short_keys_are_refused() -> None:
    with pytest.raises(SessionConfigError, match=r"^cookie key must be at least 32 bytes"):
        CookieCodec(b"k" * 31, cookie_name=NAME)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"kind": "other", "data": None}, "unknown cookie kind", id="unknown-kind"),
        pytest.param({"kind": "other"}, "unknown cookie kind", id="unknown-kind-with-data"),
        pytest.param({"session_id": SID[:-1]}, "well-formed", id="bad-id"),
        pytest.param({"kind": "id"}, "must be None", id="id-with-data"),
        pytest.param({"data": None}, "required", id="data-missing"),
    ],
)
def test_inconsistent_states_are_caller_bugs(
    codec: CookieCodec, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        codec.encode(state(**changes))


# --------------------------------------------------------------------------- value length


def test_base64url_helpers_for_every_final_character() -> None:
    """Unpadded base64url both ways, whatever the last character (a body can end in any)."""
    for length in (1, 2, 3, 4):
        for last in range(256):
            raw = bytes(range(100, 100 + length - 1)) + bytes([last])
            text = cookies._b64encode(raw)
            assert text == base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
            assert cookies._b64decode(text) == raw


def test_max_value_bytes_at_the_edge() -> None:
    value = CookieCodec(KEY, cookie_name=NAME).encode(state())
    exact = CookieCodec(KEY, cookie_name=NAME, max_value_bytes=len(value))
    assert exact.encode(state()) == value
    assert exact.decode(value, now=NOW) == state()
    short = CookieCodec(KEY, cookie_name=NAME, max_value_bytes=len(value) - 1)
    with pytest.raises(SessionTooLarge) as info:
        short.encode(state())
    assert (info.value.size, info.value.limit) == (len(value), len(value) - 1)
    assert short.rejection(value, now=NOW) is Rejection.TOO_LONG


def test_default_value_limit_is_4096_characters() -> None:
    plain = CookieCodec(KEY, cookie_name=NAME, compress_min_bytes=10**9)  # default length cap
    # "v1.d." + base64 of 3035 bytes (4047 chars) + "." + 43-char signature = 4096.
    value = plain.encode(sized_state(3035))
    assert len(value) == 4096
    assert plain.decode(value, now=NOW) == sized_state(3035)
    with pytest.raises(SessionTooLarge) as info:
        plain.encode(sized_state(3036))
    assert (info.value.size, info.value.limit) == (4097, 4096)
    assert plain.rejection(value + "A", now=NOW) is Rejection.TOO_LONG


# --------------------------------------------------------------------------- body bound


def test_body_bound_round_trip(codec: CookieCodec) -> None:
    """A body of exactly 64 KiB is issued and read back; one byte more is never issued."""
    at_bound = sized_state(BODY_BOUND)
    value = codec.encode(at_bound)
    assert value.startswith("v1.dz.")
    assert codec.decode(value, now=NOW) == at_bound
    with pytest.raises(SessionTooLarge) as info:
        codec.encode(sized_state(BODY_BOUND + 1))
    assert (info.value.size, info.value.limit) == (BODY_BOUND + 1, BODY_BOUND)


def test_large_session_that_compresses_small_is_refused_not_lost(codec: CookieCodec) -> None:
    """The old defect: 70 KB of 'x' deflates far under 4096 bytes, and the decoder's bound
    then threw the cookie (and the session) away.  Now the encoder refuses it, and the
    session layer keeps such a session server-side."""
    with pytest.raises(SessionTooLarge):
        codec.encode(state(data={"x": "x" * 70_000}))


@pytest.mark.parametrize("encrypt", [False, True])
def test_body_bound_applies_to_every_kind_of_cookie(encrypt: bool) -> None:
    roomy = CookieCodec(KEY, cookie_name=NAME, encrypt=encrypt, max_value_bytes=10**6)
    noise = {"n": secrets.token_hex(BODY_BOUND // 2)}  # over the bound, barely compressible
    with pytest.raises(SessionTooLarge):
        roomy.encode(state(data=noise))
    small = state(data={"n": secrets.token_hex(100)})
    assert roomy.decode(roomy.encode(small), now=NOW) == small


def test_decoder_bound_at_the_edge(codec: CookieCodec) -> None:
    at_bound = forge(deflate(sized_body(BODY_BOUND)), "dz")
    assert codec.rejection(at_bound, now=NOW) is None
    over = forge(deflate(sized_body(BODY_BOUND + 1)), "dz")
    assert codec.rejection(over, now=NOW) is Rejection.INFLATED_TOO_LARGE


# --------------------------------------------------------------------------- compression


def test_compression_threshold_at_the_edge(codec: CookieCodec) -> None:
    assert codec.encode(sized_state(256)).startswith("v1.dz.")
    assert codec.encode(sized_state(255)).startswith("v1.d.")
    custom = CookieCodec(KEY, cookie_name=NAME, compress_min_bytes=200)
    assert custom.encode(sized_state(200)).startswith("v1.dz.")
    assert custom.encode(sized_state(199)).startswith("v1.d.")
    for size in (199, 200, 255, 256):
        assert codec.decode(custom.encode(sized_state(size)), now=NOW) == sized_state(size)


@pytest.mark.parametrize(
    ("issued_us", "expires_us", "saving", "kind"),
    [
        pytest.param(1773201751532923, 2304903453457950, 0, "i", id="same-size-stays-plain"),
        pytest.param(1772482129056418, 2129878819292635, 1, "iz", id="one-byte-smaller"),
    ],
)
def test_compression_only_when_strictly_smaller(
    issued_us: int, expires_us: int, saving: int, kind: str
) -> None:
    eager = CookieCodec(KEY, cookie_name=NAME, compress_min_bytes=0)
    now = from_micros(issued_us)
    payload = tagged.dumps([SID, issued_us, expires_us, 0, {}])
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert len(payload) - len(packer.compress(payload) + packer.flush()) == saving  # precondition
    id_state = state(kind="id", data=None, issued_at=now, expires_at=from_micros(expires_us))
    value = eager.encode(id_state)
    assert value.split(".")[1] == kind
    assert eager.decode(value, now=now) == id_state


# --------------------------------------------------------------------------- timestamps


def test_expiry_at_the_edge(codec: CookieCodec) -> None:
    value = codec.encode(state())
    assert codec.decode(value, now=LATER - timedelta(microseconds=1)) == state()
    assert codec.rejection(value, now=LATER) is Rejection.EXPIRED


def test_issued_equal_to_expiry_is_consistent(codec: CookieCodec) -> None:
    moment = cookies.to_micros(LATER)
    assert codec.rejection(forge(body(issued=moment, expires=moment)), now=NOW) is (
        Rejection.FROM_THE_FUTURE  # consistent timestamps: only the leeway refuses it
    )
    inverted = forge(body(issued=moment + 1, expires=moment))
    assert codec.rejection(inverted, now=NOW) is Rejection.BAD_TIMESTAMPS


def test_ssl_only_flag_is_bit_zero(codec: CookieCodec) -> None:
    decoded = codec.decode(forge(body(flags=1)), now=NOW)
    assert decoded is not None
    assert decoded.ssl_only is True
    plain = codec.decode(forge(body(flags=0)), now=NOW)
    assert plain is not None
    assert plain.ssl_only is False
    assert codec.decode(codec.encode(state(ssl_only=True)), now=NOW) == state(ssl_only=True)


def test_timestamps_at_the_ends_of_the_calendar(codec: CookieCodec) -> None:
    last = cookies.to_micros(datetime.max.replace(tzinfo=timezone.utc))
    far = forge(body(expires=last))
    decoded = codec.decode(far, now=NOW)
    assert decoded is not None
    assert decoded.expires_at.year == 9999
    assert codec.rejection(forge(body(expires=last + 1)), now=NOW) is Rejection.BAD_TIMESTAMPS
