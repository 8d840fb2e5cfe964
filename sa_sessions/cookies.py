"""The session cookie: reading it, the signed value format, and writing it.

Value layout (ASCII, only ``[A-Za-z0-9._-]``: nothing a header parser or a proxy
could need to quote or escape)::

    v1.<kind>.<body>.<sig>

``kind`` is ``d`` (the whole session is in the cookie) or ``i`` (the cookie carries
only the session id), followed by ``z`` when the body is raw-deflate compressed or
``e`` when it is AES-256-GCM encrypted.  ``body`` is base64url (no padding) of the
tagged-JSON list ``[session_id, issued_at_us, expires_at_us, flags, extra]`` plus
``data`` for ``d`` (``flags`` bit 0 = ssl-only); compressed or encrypted it is
``deflate(json)`` or ``nonce(12) || AES-GCM(json)``.  ``sig`` is base64url of
HMAC-SHA256 over the exact text before the last ``.`` with a key derived for
``"sa_sessions.cookie:" + cookie_name``, so a value signed for one cookie name (or
for any other purpose of the same master key) never verifies as another.  Nothing
is decompressed, decrypted or parsed before the signature verifies, inflation is
bounded, and every cookie is tagged JSON, never pickle: a client must never be able
to make the server unpickle bytes, even with a leaked key.

:meth:`CookieCodec.decode` never raises for a bad value; :meth:`CookieCodec.rejection`
names the check that refused one (a :class:`Rejection`), and every logged refusal
carries it as the ``rejection`` attribute of its log record.
"""

from __future__ import annotations

import binascii
import enum
import logging
import re
import secrets
import zlib
from collections.abc import Mapping
from datetime import datetime
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import NamedTuple

from ._clock import from_micros
from ._clock import to_micros
from ._cookie_header import DEFAULT_MAX_HEADER_BYTES as DEFAULT_MAX_HEADER_BYTES
from ._cookie_header import MAX_COOKIE_BYTES as MAX_COOKIE_BYTES
from ._cookie_header import CookiePolicy as CookiePolicy
from ._cookie_header import SameSite as SameSite
from ._cookie_header import read_cookie_values as read_cookie_values
from .codec import tagged
from .codec.inflate import RAW_DEFLATE
from .codec.inflate import InflateError
from .codec.inflate import InflateTooLarge
from .codec.inflate import inflate
from .exceptions import CodecError
from .exceptions import SessionConfigError
from .exceptions import SessionTooLarge
from .ids import is_well_formed_id
from .signing import KeyInput
from .signing import KeyRing
from .signing import normalize_keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "MAX_COOKIE_BYTES",
    "CookieCodec",
    "CookiePolicy",
    "CookieState",
    "Rejection",
    "SameSite",
    "read_cookie_values",
]

_log = logging.getLogger("sa_sessions.security")

Kind = Literal["data", "id"]

_VERSION = "v1"
_KIND_LETTER: dict[str, str] = {"data": "d", "id": "i"}
_KIND_NAME: dict[str, Kind] = {"d": "data", "i": "id"}
_DEFLATE, _AEAD = "z", "e"
_FLAG_SSL_ONLY = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
# The signature is 32 bytes = 43 base64url chars whose last char has two zero low
# bits, so there is exactly one spelling of every signature.
_SHAPE = re.compile(r"v1\.([di][ze]?)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{42}[AEIMQUYcgkosw048])")
_ENC_KEY_LABEL = b"aes-256-gcm"
_MICROSECOND = timedelta(microseconds=1)
_STR_ONLY = frozenset({str})


class CookieState(NamedTuple):
    """What a session cookie says, once its signature and timestamps have checked out.

    A named tuple rather than a frozen dataclass: one is built on every request that
    reads or writes a cookie, and a tuple is built in half the time.
    """

    kind: Kind
    session_id: str
    issued_at: datetime
    expires_at: datetime
    ssl_only: bool
    data: dict[str, Any] | None
    #: Index of the key that verified the cookie: 0 = current, >0 = an older key of
    #: the rotation list, so the caller re-signs it with the current one.
    key_index: int = 0
    #: Small signed metadata of the session layer (idle touch time, user generation).
    extra: Mapping[str, Any] = MappingProxyType({})


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PADDING = ("", "===", "==", "=")


def _b64encode(raw: bytes) -> str:
    """base64url without padding (binascii + translate: a third of ``base64``'s cost)."""
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    """Inverse of :func:`_b64encode`; callers have checked the alphabet already."""
    return binascii.a2b_base64(
        (text + _PADDING[len(text) % 4]).encode("ascii").translate(_FROM_URLSAFE)
    )


def _load_aesgcm() -> type[AESGCM]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


class Rejection(enum.Enum):
    """The check that refused a cookie value, in the order the checks run.

    Tests assert which check fired, so a check that is removed or weakened cannot
    hide behind a later one; operators can count them from the log records.
    """

    MISSING = "no value"
    TOO_LONG = "value over the length limit"
    UNKNOWN_VERSION = "unknown format or version"
    MALFORMED = "malformed value"
    BAD_SIGNATURE = "bad signature (tampered, or signed with an unknown key)"
    BAD_BASE64 = "signed body is not base64url"
    ENCRYPTED_TOO_SHORT = "encrypted body too short"
    NO_CRYPTOGRAPHY = "encrypted cookie but 'cryptography' is not installed"
    UNDECRYPTABLE = "encrypted body does not decrypt"
    CORRUPT_COMPRESSED = "corrupt compressed body"
    INFLATED_TOO_LARGE = "compressed body over the size bound"
    BAD_JSON = "signed body is not tagged JSON"
    WRONG_SHAPE = "signed body has the wrong shape"
    BAD_ID = "signed body has a malformed session id"
    BAD_TIMESTAMPS = "signed body has bad timestamps"
    UNKNOWN_FLAGS = "signed body has unknown flags"
    NOT_A_MAPPING = "signed body has a non-mapping payload"
    EXPIRED = "expired"
    FROM_THE_FUTURE = "issued-at lies in the future beyond the allowed leeway"
    UNEXPECTED = "undecodable signed body"


class _Reject(Exception):
    """Internal: a refused cookie and why (the message never carries the value)."""

    def __init__(self, reason: Rejection, detail: str = "") -> None:
        super().__init__(f"{reason.value} ({detail})" if detail else reason.value)
        self.reason = reason


class CookieCodec:
    """Encodes a :class:`CookieState` into a signed cookie value and back.

    The newest key signs and every key verifies, so keys rotate without logging anyone
    out.  ``encrypt=True`` also hides the body with AES-256-GCM (needs ``pip install
    sa_sessions[crypto]``); encrypted bodies are never compressed, so their length does
    not reveal how well secret and attacker-chosen values compress together.  Both
    codecs read both forms, so switching ``encrypt`` keeps existing cookies valid.
    """

    #: Hard bound on a cookie's tagged-JSON body.  Inflation stops there (a few
    #: hundred compressed bytes could otherwise inflate to gigabytes), so
    #: :meth:`encode` refuses any larger body rather than issue a cookie that
    #: :meth:`decode` would throw away.
    max_decompressed_bytes = 64 * 1024
    #: zlib level: 6 is within a few bytes of 9 on session-sized JSON, and faster.
    compress_level = 6

    __slots__ = (
        "_aead",
        "_enc_keys",
        "_leeway_us",
        "_ring",
        "compress_min_bytes",
        "cookie_name",
        "encrypt",
        "future_leeway",
        "max_value_bytes",
    )

    def __init__(
        self,
        keys: KeyInput,
        *,
        cookie_name: str,
        encrypt: bool = False,
        max_value_bytes: int = MAX_COOKIE_BYTES,
        compress_min_bytes: int = 256,
        future_leeway: timedelta = timedelta(seconds=60),
    ) -> None:
        if not isinstance(cookie_name, str) or not cookie_name:
            raise SessionConfigError("cookie_name must be a non-empty string")
        if max_value_bytes < 128:
            raise SessionConfigError("max_value_bytes must be at least 128")
        if compress_min_bytes < 0:
            raise SessionConfigError("compress_min_bytes must not be negative")
        if future_leeway < timedelta(0):
            raise SessionConfigError("future_leeway must not be negative")
        master = normalize_keys(keys, "cookie key")
        self._ring = KeyRing(master, "sa_sessions.cookie:" + cookie_name)
        # One AES key per master key, newest first (the same order as the ring's
        # indexes), so the key that verified the MAC picks the key that decrypts.
        enc_purpose = "sa_sessions.cookie-enc:" + cookie_name
        self._enc_keys = tuple(
            KeyRing((secret,), enc_purpose).sign(_ENC_KEY_LABEL) for secret in reversed(master)
        )
        self._aead: tuple[AESGCM, ...] | None = None
        if encrypt:
            try:
                self._aead_ciphers()
            except ImportError as exc:
                raise SessionConfigError(
                    "encrypt=True needs the 'cryptography' package: "
                    "pip install 'sa_sessions[crypto]'"
                ) from exc
        self.cookie_name = cookie_name
        self.encrypt = bool(encrypt)
        self.max_value_bytes = max_value_bytes
        self.compress_min_bytes = compress_min_bytes
        self.future_leeway = future_leeway
        self._leeway_us = future_leeway // _MICROSECOND

    def __repr__(self) -> str:
        return f"CookieCodec(cookie_name={self.cookie_name!r}, encrypt={self.encrypt!r})"

    def _aead_ciphers(self) -> tuple[AESGCM, ...]:
        if self._aead is None:
            aesgcm = _load_aesgcm()
            self._aead = tuple(aesgcm(key) for key in self._enc_keys)
        return self._aead

    # ------------------------------------------------------------------ encode

    def encode(self, state: CookieState) -> str:
        """The signed cookie value for ``state`` (its ``key_index`` is ignored).

        :raises TypeError: the data or extra hold a value tagged JSON cannot encode;
            the caller keeps such a session server-side (cookies never carry pickle).
        :raises SessionTooLarge: the value would exceed ``max_value_bytes``, or its body
            ``max_decompressed_bytes`` (which :meth:`decode` could not inflate); the
            caller keeps such a session server-side.
        :raises ValueError: ``state`` is inconsistent (bad id, naive datetime, data
            on an id cookie).
        """
        payload = self._payload(state)
        if len(payload) > self.max_decompressed_bytes:
            raise SessionTooLarge(len(payload), self.max_decompressed_bytes, "cookie body")
        kind = _KIND_LETTER[state.kind]
        if self.encrypt:
            kind += _AEAD
            nonce = secrets.token_bytes(_NONCE_BYTES)
            aad = f"{_VERSION}.{kind}".encode("ascii")
            payload = nonce + self._aead_ciphers()[0].encrypt(nonce, payload, aad)
        elif len(payload) >= self.compress_min_bytes:
            squeezer = zlib.compressobj(self.compress_level, zlib.DEFLATED, RAW_DEFLATE)
            packed = squeezer.compress(payload) + squeezer.flush()
            if len(packed) < len(payload):
                kind += _DEFLATE
                payload = packed
        signed = f"{_VERSION}.{kind}.{_b64encode(payload)}"
        value = f"{signed}.{_b64encode(self._ring.sign(signed.encode('ascii')))}"
        if len(value) > self.max_value_bytes:
            raise SessionTooLarge(len(value), self.max_value_bytes, "cookie value")
        return value

    @staticmethod
    def _payload(state: CookieState) -> bytes:
        """Tagged JSON of ``[id, issued_us, expires_us, flags, extra(, data)]``.

        The fixed fields are validated and written directly (an id has no character
        that JSON escapes); only ``extra`` and ``data`` go through the tagged encoder.
        """
        if state.kind not in _KIND_LETTER:
            raise ValueError(f"unknown cookie kind {state.kind!r}")
        if not is_well_formed_id(state.session_id):
            raise ValueError("session_id is not a well-formed session id")
        data = state.data
        if (state.kind == "data") != (data is not None):
            raise ValueError("data is required for kind 'data' and must be None for kind 'id'")
        flags = _FLAG_SSL_ONLY if state.ssl_only else 0
        try:
            tail = tagged.dumps(dict(state.extra))
            if data is not None:
                tail += b"," + tagged.dumps(data)
        except ValueError as exc:  # defensive: "cannot encode" by another name
            raise TypeError(f"session data cannot be encoded for a cookie: {exc}") from exc
        head = (
            f'["{state.session_id}",{to_micros(state.issued_at)},'
            f"{to_micros(state.expires_at)},{flags},"
        )
        return b"".join((head.encode("ascii"), tail, b"]"))

    # ------------------------------------------------------------------ decode

    def decode(self, value: str, *, now: datetime) -> CookieState | None:
        """The verified state, or None for anything wrong with ``value`` (never raises
        for a bad value; a naive ``now`` is a caller bug and raises ValueError).

        Checks run cheapest first: length, version, charset and shape, then the MAC,
        and only then decryption, bounded decompression and tagged-JSON parsing.
        Rejections are logged on ``sa_sessions.security`` without the value: WARNING
        for garbage or tampering, DEBUG for plain expiry, nothing for an empty value.
        """
        now_us = to_micros(now)
        try:
            return self._verified(value, now_us)
        except _Reject as exc:
            reason = exc.reason
            if reason is not Rejection.MISSING:
                level = logging.DEBUG if reason is Rejection.EXPIRED else logging.WARNING
                _log.log(
                    level,
                    "rejected %s cookie: %s",
                    self.cookie_name,
                    exc,
                    extra={"rejection": reason},
                )
        return None

    def rejection(self, value: str, *, now: datetime) -> Rejection | None:
        """Why :meth:`decode` refuses ``value`` (None: it accepts it), without logging."""
        try:
            self._verified(value, to_micros(now))
        except _Reject as exc:
            return exc.reason
        return None

    def _verified(self, value: str, now_us: int) -> CookieState:
        if not isinstance(value, str) or not value:
            raise _Reject(Rejection.MISSING)
        if len(value) > self.max_value_bytes:
            raise _Reject(Rejection.TOO_LONG, f"{len(value)} > {self.max_value_bytes} bytes")
        if not value.startswith(_VERSION + "."):
            raise _Reject(Rejection.UNKNOWN_VERSION)
        match = _SHAPE.fullmatch(value)
        if match is None:
            raise _Reject(Rejection.MALFORMED)
        kind, body, sig = match.groups()
        signed = value[: match.start(3) - 1]
        key_index = self._ring.verify(signed.encode("ascii"), _b64decode(sig))
        if key_index is None:
            raise _Reject(Rejection.BAD_SIGNATURE)
        try:
            return self._parse(kind, body, key_index, now_us)
        except _Reject:
            raise
        except Exception as exc:  # a signed body that breaks in a way no check foresaw
            raise _Reject(Rejection.UNEXPECTED, type(exc).__name__) from None

    def _parse(self, kind: str, body: str, key_index: int, now_us: int) -> CookieState:
        try:
            raw = _b64decode(body)
        except binascii.Error:
            raise _Reject(Rejection.BAD_BASE64) from None
        transform = kind[1:]
        if transform == _AEAD:
            raw = self._decrypt(kind, raw, key_index)
        elif transform == _DEFLATE:
            try:
                raw = inflate(raw, self.max_decompressed_bytes, wbits=RAW_DEFLATE)
            except InflateTooLarge:
                raise _Reject(Rejection.INFLATED_TOO_LARGE) from None
            except InflateError:
                raise _Reject(Rejection.CORRUPT_COMPRESSED) from None
        try:
            fields = tagged.loads(raw)
        except CodecError:
            raise _Reject(Rejection.BAD_JSON) from None
        return self._state(_KIND_NAME[kind[0]], fields, key_index, now_us)

    def _decrypt(self, kind: str, raw: bytes, key_index: int) -> bytes:
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            raise _Reject(Rejection.ENCRYPTED_TOO_SHORT)
        try:
            cipher = self._aead_ciphers()[key_index]
        except ImportError:
            raise _Reject(Rejection.NO_CRYPTOGRAPHY) from None
        aad = f"{_VERSION}.{kind}".encode("ascii")
        try:
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
        except Exception:  # InvalidTag: tampered, or not encrypted by us
            raise _Reject(Rejection.UNDECRYPTABLE) from None

    def _state(self, kind: Kind, fields: Any, key_index: int, now_us: int) -> CookieState:
        want = 6 if kind == "data" else 5
        if type(fields) is not list or len(fields) != want:
            raise _Reject(Rejection.WRONG_SHAPE)
        session_id, issued_us, expires_us, flags, extra = fields[:5]
        if not is_well_formed_id(session_id):
            raise _Reject(Rejection.BAD_ID)
        if type(issued_us) is not int or type(expires_us) is not int or issued_us > expires_us:
            raise _Reject(Rejection.BAD_TIMESTAMPS)
        if type(flags) is not int or flags & ~_FLAG_SSL_ONLY:
            raise _Reject(Rejection.UNKNOWN_FLAGS)
        data = fields[5] if kind == "data" else None
        if not _is_str_dict(extra) or (kind == "data" and not _is_str_dict(data)):
            raise _Reject(Rejection.NOT_A_MAPPING)
        if expires_us <= now_us:
            raise _Reject(Rejection.EXPIRED)
        if issued_us > now_us + self._leeway_us:
            raise _Reject(Rejection.FROM_THE_FUTURE)
        try:
            issued_at, expires_at = from_micros(issued_us), from_micros(expires_us)
        except OverflowError:  # outside the years 1..9999 that datetime can hold
            raise _Reject(Rejection.BAD_TIMESTAMPS) from None
        ssl_only = bool(flags & _FLAG_SSL_ONLY)
        return CookieState(
            kind, session_id, issued_at, expires_at, ssl_only, data, key_index, extra
        )


def _is_str_dict(value: Any) -> bool:
    return type(value) is dict and _STR_ONLY.issuperset(map(type, value))
