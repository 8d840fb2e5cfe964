"""Every way :meth:`CookieCodec.decode` refuses a value, asserting WHICH check refused it.

``decode`` returns None for anything wrong, so a removed or weakened check would go
unnoticed if a later one happened to refuse the same value.  Each case here fails
exactly one check, and asserts that check's :class:`Rejection`; bodies after the
signature check are signed with the real key (:func:`forge`), as if it had leaked.
"""

from __future__ import annotations

import base64
import logging
import zlib
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from types import SimpleNamespace
from typing import Any

import pytest

from sa_sessions import cookies
from sa_sessions.codec import tagged
from sa_sessions.cookies import CookieCodec
from sa_sessions.cookies import CookieState
from sa_sessions.cookies import Rejection
from sa_sessions.signing import KeyRing

UTC = timezone.utc
KEY = b"rejection-test-key-0123456789abcdef-0123456789"
OTHER_KEY = b"rejection-other-key-0123456789abcdef-987654321"
NAME = "session"
SID = "Qm7xK2pLr9ZtWv4NbHc8JdYfGs3Ek6Ua1Ti5Oo0RnSe"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=7)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECURITY_LOGGER = "sa_sessions.security"


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def forge(body: bytes, kind: str = "d", *, key: bytes = KEY, prefix: str = "v1") -> str:
    """A value with a VALID signature over any body (as if the key had leaked)."""
    signed = f"{prefix}.{kind}.{b64(body)}"
    mac = KeyRing(key, "sa_sessions.cookie:" + NAME).sign(signed.encode("ascii"))
    return f"{signed}.{b64(mac)}"


def fields(kind: str = "d", **changes: Any) -> list[Any]:
    """The signed list of a good cookie (``changes`` by field name), ready to tweak."""
    values: dict[str, Any] = {
        "session_id": SID,
        "issued": micros(NOW),
        "expires": micros(LATER),
        "flags": 0,
        "extra": {},
        "data": {"user": 42},
    }
    values.update(changes)
    names = ["session_id", "issued", "expires", "flags", "extra"]
    return [values[name] for name in names + (["data"] if kind == "d" else [])]


def body(kind: str = "d", **changes: Any) -> bytes:
    return tagged.dumps(fields(kind, **changes))


def deflate(raw: bytes, level: int = 6) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    return packer.compress(raw) + packer.flush()


@pytest.fixture
def codec() -> CookieCodec:
    return CookieCodec(KEY, cookie_name=NAME)


def test_the_forged_controls_are_accepted(codec: CookieCodec) -> None:
    """Sanity: the untouched forged bodies decode, so each case below fails ONE check."""
    for kind in ("d", "i"):
        assert codec.rejection(forge(body(kind), kind), now=NOW) is None
        assert codec.decode(forge(body(kind), kind), now=NOW) is not None
    assert codec.rejection(forge(deflate(body()), "dz"), now=NOW) is None


# --------------------------------------------------------------------------- before the MAC


@pytest.mark.parametrize("value", ["", None, b"v1.d.x.y", 17], ids=repr)
def test_missing_value(codec: CookieCodec, value: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=SECURITY_LOGGER):
        assert codec.rejection(value, now=NOW) is Rejection.MISSING
        assert codec.decode(value, now=NOW) is None
    assert not caplog.records  # an absent cookie is not worth a log line


def test_too_long(codec: CookieCodec) -> None:
    value = forge(body(extra={"pad": "p" * 4000}))
    assert len(value) > 4096
    assert codec.rejection(value, now=NOW) is Rejection.TOO_LONG
    roomy = CookieCodec(KEY, cookie_name=NAME, max_value_bytes=len(value))
    assert roomy.rejection(value, now=NOW) is None


@pytest.mark.parametrize(
    "value",
    ["v2.d.abc.def", "V1.d.abc.def", "v1", "v1d.abc", "v11.d.abc.def", " v1.d.abc.def", "x"],
)
def test_unknown_version(codec: CookieCodec, value: str) -> None:
    assert codec.rejection(value, now=NOW) is Rejection.UNKNOWN_VERSION


def test_unknown_version_even_when_signed(codec: CookieCodec) -> None:
    for prefix in ("v2", "v0", "V1", "v11"):
        assert codec.rejection(forge(body(), prefix=prefix), now=NOW) is Rejection.UNKNOWN_VERSION


def test_malformed(codec: CookieCodec) -> None:
    good = forge(body())
    prefix, kind, payload, sig = good.split(".")
    spare_bits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = spare_bits[spare_bits.index(sig[-1]) + 1]  # same 32 bytes, another spelling
    for value in (
        f"{prefix}.{kind}.{payload}",  # no signature
        f"{prefix}.{kind}.{payload}.{sig[:-1]}",  # 42-char signature
        f"{prefix}.{kind}.{payload}.{sig}A",  # 44-char signature
        f"{prefix}.{kind}.{payload}.{sig[:-1]}{twin}",  # non-canonical last char
        f"{prefix}.x.{payload}.{sig}",  # unknown kind
        f"{prefix}.dze.{payload}.{sig}",  # two transforms
        f"{prefix}.{kind}..{sig}",  # empty body
        f"{prefix}.{kind}.{payload[:5]}+{payload[6:]}.{sig}",  # not base64url
        f"{prefix}.{kind}.{payload}.{sig}.",  # trailing separator
        f"{prefix}.{kind}.{payload}\xe9.{sig}",  # non-ASCII
    ):
        assert codec.rejection(value, now=NOW) is Rejection.MALFORMED, value[:20]


def test_bad_signature(codec: CookieCodec) -> None:
    good = forge(body())
    signed, sig = good.rsplit(".", 1)
    flipped = "B" if sig[0] != "B" else "C"
    assert codec.rejection(f"{signed}.{flipped}{sig[1:]}", now=NOW) is Rejection.BAD_SIGNATURE
    assert codec.rejection(forge(body(), key=OTHER_KEY), now=NOW) is Rejection.BAD_SIGNATURE
    prefix, _, payload, _ = good.split(".")
    for other_kind in ("i", "dz", "de"):  # the kind is signed too
        value = f"{prefix}.{other_kind}.{payload}.{sig}"
        assert codec.rejection(value, now=NOW) is Rejection.BAD_SIGNATURE
    other_name = CookieCodec(KEY, cookie_name="other")
    assert other_name.rejection(good, now=NOW) is Rejection.BAD_SIGNATURE


# --------------------------------------------------------------------------- the body


def test_bad_base64(codec: CookieCodec) -> None:
    signed = "v1.d.abcde"  # 5 characters: no base64 text has that length
    mac = KeyRing(KEY, "sa_sessions.cookie:" + NAME).sign(signed.encode())
    assert codec.rejection(f"{signed}.{b64(mac)}", now=NOW) is Rejection.BAD_BASE64


def test_encrypted_body_too_short() -> None:
    sealed = CookieCodec(KEY, cookie_name=NAME, encrypt=True)
    for size in (1, 12, 27):  # a nonce (12) and a tag (16) need 28 bytes
        assert sealed.rejection(forge(bytes(size), "de"), now=NOW) is Rejection.ENCRYPTED_TOO_SHORT
    assert sealed.rejection(forge(bytes(28), "de"), now=NOW) is Rejection.UNDECRYPTABLE


def test_encrypted_body_that_does_not_decrypt() -> None:
    sealed = CookieCodec(KEY, cookie_name=NAME, encrypt=True)
    raw = bytearray(base64.urlsafe_b64decode(sealed.encode(state()).split(".")[2] + "=="))
    raw[-1] ^= 1  # the GCM tag: the MAC of forge() is valid, the tag is not
    assert sealed.rejection(forge(bytes(raw), "de"), now=NOW) is Rejection.UNDECRYPTABLE
    raw[-1] ^= 1
    assert sealed.rejection(forge(bytes(raw), "de"), now=NOW) is None  # control
    assert sealed.rejection(forge(bytes(raw), "ie"), now=NOW) is Rejection.UNDECRYPTABLE  # aad


def test_encrypted_cookie_without_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    value = CookieCodec(KEY, cookie_name=NAME, encrypt=True).encode(state())

    def missing() -> Any:
        raise ImportError("cryptography")

    monkeypatch.setattr(cookies, "_load_aesgcm", missing)
    plain = CookieCodec(KEY, cookie_name=NAME)
    assert plain.rejection(value, now=NOW) is Rejection.NO_CRYPTOGRAPHY
    assert plain.rejection(forge(body()), now=NOW) is None  # plain cookies still work


@pytest.mark.parametrize(
    "packed",
    [
        pytest.param(b"\xff\xff\xff", id="garbage"),
        pytest.param(deflate(body())[:-3], id="truncated"),
        pytest.param(deflate(body()) + b"\x00", id="trailing-byte"),
        pytest.param(deflate(body()) + deflate(b"x"), id="second-stream"),
        pytest.param(zlib.compress(body()), id="zlib-header"),
    ],
)
def test_corrupt_compressed_body(codec: CookieCodec, packed: bytes) -> None:
    assert codec.rejection(forge(packed, "dz"), now=NOW) is Rejection.CORRUPT_COMPRESSED


def test_compressed_body_over_the_bound(codec: CookieCodec) -> None:
    bomb = deflate(body(data={"pad": " " * 200_000}), 9)
    assert len(bomb) < 1024  # small enough for a cookie: only the bound stops it
    assert codec.rejection(forge(bomb, "dz"), now=NOW) is Rejection.INFLATED_TOO_LARGE


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="text"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[1,2", id="unterminated"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"9" * 5000, id="int-over-4300-digits"),
        pytest.param(b'[{" zz":1}]', id="unknown-tag"),
        pytest.param(b'[{" b":"not base64!"}]', id="bad-bytes-tag"),
    ],
)
def test_bad_json(codec: CookieCodec, raw: bytes) -> None:
    assert codec.rejection(forge(deflate(raw), "dz"), now=NOW) is Rejection.BAD_JSON
    if 0 < len(raw) < 1000:  # an empty or a long plain body fails an earlier check
        assert codec.rejection(forge(raw), now=NOW) is Rejection.BAD_JSON


# --------------------------------------------------------------------------- the fields


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(b"{}", "d", id="object"),
        pytest.param(b'"text"', "d", id="string"),
        pytest.param(b"null", "d", id="null"),
        pytest.param(b"[]", "d", id="empty-list"),
        pytest.param(tagged.dumps(fields("i")), "d", id="data-missing"),
        pytest.param(tagged.dumps([*fields("d"), {}]), "d", id="data-too-long"),
        pytest.param(tagged.dumps(fields("d")), "i", id="id-with-data"),
        pytest.param(tagged.dumps(fields("i")[:4]), "i", id="id-too-short"),
        pytest.param(tagged.dumps(tuple(fields("d"))), "d", id="tuple-tag"),
    ],
)
def test_wrong_shape(codec: CookieCodec, raw: bytes, kind: str) -> None:
    assert codec.rejection(forge(raw, kind), now=NOW) is Rejection.WRONG_SHAPE


@pytest.mark.parametrize(
    "session_id",
    [SID[:-1], SID + "a", SID[:-1] + "+", SID[:-1] + ".", "", 42, None, ["x"], SID[:-1] + "\xe9"],
    ids=repr,
)
def test_bad_id(codec: CookieCodec, session_id: Any) -> None:
    assert codec.rejection(forge(body(session_id=session_id)), now=NOW) is Rejection.BAD_ID


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"issued": float(micros(NOW))}, id="issued-float"),
        pytest.param({"issued": True}, id="issued-bool"),
        pytest.param({"issued": str(micros(NOW))}, id="issued-str"),
        pytest.param({"issued": None}, id="issued-null"),
        pytest.param({"expires": float(micros(LATER))}, id="expires-float"),
        pytest.param({"expires": True}, id="expires-bool"),
        pytest.param({"issued": micros(LATER) + 1, "expires": micros(LATER)}, id="issued-after"),
        pytest.param({"expires": 10**30}, id="expires-beyond-year-9999"),
        pytest.param({"issued": -(10**30)}, id="issued-before-year-1"),
    ],
)
def test_bad_timestamps(codec: CookieCodec, changes: dict[str, Any]) -> None:
    assert codec.rejection(forge(body(**changes)), now=NOW) is Rejection.BAD_TIMESTAMPS


@pytest.mark.parametrize("flags", [2, 3, -1, 1 << 40, 1.0, True, "1", None], ids=repr)
def test_unknown_flags(codec: CookieCodec, flags: Any) -> None:
    assert codec.rejection(forge(body(flags=flags)), now=NOW) is Rejection.UNKNOWN_FLAGS


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        pytest.param("d", {"extra": []}, id="extra-list"),
        pytest.param("d", {"extra": None}, id="extra-null"),
        pytest.param("i", {"extra": ["gen"]}, id="id-extra-list-of-str"),
        pytest.param("d", {"data": [1]}, id="data-list"),
        pytest.param("d", {"data": ["user"]}, id="data-list-of-str"),
        pytest.param("d", {"data": None}, id="data-null"),
        pytest.param("d", {"data": "user"}, id="data-str"),
        pytest.param("d", {"data": (("a", 1),)}, id="data-tuple"),
    ],
)
def test_non_mapping_payload(codec: CookieCodec, kind: str, changes: dict[str, Any]) -> None:
    value = forge(body(kind, **changes), kind)
    assert codec.rejection(value, now=NOW) is Rejection.NOT_A_MAPPING


def test_expired(codec: CookieCodec) -> None:
    value = forge(body())
    assert codec.rejection(value, now=LATER - timedelta(microseconds=1)) is None
    assert codec.rejection(value, now=LATER) is Rejection.EXPIRED
    assert codec.rejection(value, now=LATER + timedelta(days=400)) is Rejection.EXPIRED


def test_issued_in_the_future(codec: CookieCodec) -> None:
    leeway = timedelta(seconds=60)
    at_leeway = forge(body(issued=micros(NOW + leeway)))
    beyond = forge(body(issued=micros(NOW + leeway) + 1))
    assert codec.rejection(at_leeway, now=NOW) is None
    assert codec.rejection(beyond, now=NOW) is Rejection.FROM_THE_FUTURE
    lenient = CookieCodec(KEY, cookie_name=NAME, future_leeway=leeway * 2)
    assert lenient.rejection(beyond, now=NOW) is None


def test_unexpected_failure_is_a_rejection_too(
    codec: CookieCodec, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(raw: bytes) -> Any:
        raise RecursionError("deep")

    monkeypatch.setattr(cookies, "tagged", SimpleNamespace(loads=broken))
    value = forge(body())
    assert codec.rejection(value, now=NOW) is Rejection.UNEXPECTED
    with caplog.at_level(logging.WARNING, logger=SECURITY_LOGGER):
        assert codec.decode(value, now=NOW) is None
    (record,) = caplog.records
    assert (
        record.getMessage() == "rejected session cookie: undecodable signed body (RecursionError)"
    )


# --------------------------------------------------------------------------- logging


def state(**changes: Any) -> CookieState:
    values: dict[str, Any] = {
        "kind": "data",
        "session_id": SID,
        "issued_at": NOW,
        "expires_at": LATER,
        "ssl_only": False,
        "data": {"user": 42},
    }
    values.update(changes)
    return CookieState(**values)


def test_rejections_are_logged_with_their_reason(
    codec: CookieCodec, caplog: pytest.LogCaptureFixture
) -> None:
    tampered = forge(body(), key=OTHER_KEY)
    expired = codec.encode(state())
    with caplog.at_level(logging.DEBUG, logger=SECURITY_LOGGER):
        assert codec.decode(tampered, now=NOW) is None
        assert codec.decode(expired, now=LATER) is None
        assert codec.decode("v1." + "a" * 5000, now=NOW) is None
    warning, debug, too_long = caplog.records
    assert (warning.name, warning.levelno) == (SECURITY_LOGGER, logging.WARNING)
    assert warning.rejection is Rejection.BAD_SIGNATURE  # type: ignore[attr-defined]
    assert warning.getMessage() == (
        "rejected session cookie: bad signature (tampered, or signed with an unknown key)"
    )
    assert tampered[-43:] not in caplog.text
    assert debug.levelno == logging.DEBUG
    assert debug.rejection is Rejection.EXPIRED  # type: ignore[attr-defined]
    assert debug.getMessage() == "rejected session cookie: expired"
    assert too_long.levelno == logging.WARNING
    assert too_long.getMessage() == (
        "rejected session cookie: value over the length limit (5003 > 4096 bytes)"
    )


LOGGED_TEXT = {
    Rejection.TOO_LONG: "value over the length limit",
    Rejection.UNKNOWN_VERSION: "unknown format or version",
    Rejection.MALFORMED: "malformed value",
    Rejection.BAD_SIGNATURE: "bad signature (tampered, or signed with an unknown key)",
    Rejection.BAD_BASE64: "signed body is not base64url",
    Rejection.ENCRYPTED_TOO_SHORT: "encrypted body too short",
    Rejection.NO_CRYPTOGRAPHY: "encrypted cookie but 'cryptography' is not installed",
    Rejection.UNDECRYPTABLE: "encrypted body does not decrypt",
    Rejection.CORRUPT_COMPRESSED: "corrupt compressed body",
    Rejection.INFLATED_TOO_LARGE: "compressed body over the size bound",
    Rejection.BAD_JSON: "signed body is not tagged JSON",
    Rejection.WRONG_SHAPE: "signed body has the wrong shape",
    Rejection.BAD_ID: "signed body has a malformed session id",
    Rejection.BAD_TIMESTAMPS: "signed body has bad timestamps",
    Rejection.UNKNOWN_FLAGS: "signed body has unknown flags",
    Rejection.NOT_A_MAPPING: "signed body has a non-mapping payload",
    Rejection.EXPIRED: "expired",
    Rejection.FROM_THE_FUTURE: "issued-at lies in the future beyond the allowed leeway",
    Rejection.UNEXPECTED: "undecodable signed body",
}


def test_every_reason_has_its_own_log_text() -> None:
    """Operators search the security log for these texts: they are an interface."""
    assert set(LOGGED_TEXT) == set(Rejection) - {Rejection.MISSING}
    assert Rejection.MISSING.value == "no value"
    for reason, text in LOGGED_TEXT.items():
        assert reason.value == text
        assert str(cookies._Reject(reason)) == text
        assert str(cookies._Reject(reason, "detail")) == f"{text} (detail)"


def test_rejection_does_not_log(codec: CookieCodec, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=SECURITY_LOGGER):
        assert codec.rejection(forge(body(), key=OTHER_KEY), now=NOW) is Rejection.BAD_SIGNATURE
    assert not caplog.records


def test_naive_now_is_a_caller_bug(codec: CookieCodec) -> None:
    with pytest.raises(ValueError, match="naive"):
        codec.rejection(forge(body()), now=datetime(2026, 1, 1))
