"""Cookie headers: a bounded tolerant ``Cookie`` reader and the ``Set-Cookie`` builder.

Private helper of :mod:`sa_sessions.cookies` (import the names from there).  Framework
free: the raw ``HTTP_COOKIE`` string goes in, complete header values come out, so the
library depends neither on ``http.cookies``' parser (which gives up on the first odd pair)
nor on a framework's cookie API, and every attribute it writes is checked here.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Literal

from ._clock import UTC
from .exceptions import SessionConfigError

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "MAX_COOKIE_BYTES",
    "CookiePolicy",
    "SameSite",
    "read_cookie_values",
]

SameSite = Literal["lax", "strict", "none"]

#: The largest cookie every browser must store, name, value and attributes included;
#: a larger one may be silently dropped, losing the session with it.
MAX_COOKIE_BYTES = 4096

#: ``Cookie`` headers longer than this are not parsed at all: no legitimate client
#: sends one (two full-size cookies fit), and it bounds the work a request can cause.
DEFAULT_MAX_HEADER_BYTES = 8192

#: Browsers ignore a cookie attribute longer than this: a longer Path or Domain would
#: silently not apply.
_MAX_ATTRIBUTE_BYTES = 1024

_log = logging.getLogger("sa_sessions.security")

# RFC 7230 tchar, which is what RFC 6265 means by a cookie-name token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What we ever put in a value: base64url plus "." separators, nothing to quote.
_VALUE = re.compile(r"[A-Za-z0-9._-]*")
# Printable ASCII without space, ";" and ",": no CR/LF/NUL, so no header injection.
_ATTRIBUTE = re.compile(r"[!-+\--:<-~]+")
_DOMAIN = re.compile(r"\.?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_SAMESITE_TEXT = {"lax": "Lax", "strict": "Strict", "none": "None"}
_RESERVED_PREFIXES = ("__host-", "__secure-")
_HOST_PREFIX = "__Host-"
_EPOCH_EXPIRES = "Thu, 01 Jan 1970 00:00:00 GMT"


def read_cookie_values(
    header: str | None, name: str, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> list[str]:
    """Every value sent under exactly ``name``, in header order.

    A tolerant linear split (``;``, strip, first ``=``) instead of ``http.cookies``' parser,
    which stops at the first malformed pair, keeps only the last duplicate and is
    quadratic on backslashes.  Duplicates are all returned, so the caller can try each
    and accept the first that verifies: a cookie planted for a wider path or domain
    cannot shadow the genuine one.
    """
    if not header:
        return []
    if len(header) > max_header_bytes:
        _log.info(
            "Cookie header of %d bytes exceeds the %d-byte limit; not parsed",
            len(header),
            max_header_bytes,
        )
        return []
    found: list[str] = []
    for part in header.split(";"):
        if name not in part:  # cheap pre-filter: most pairs are someone else's
            continue
        key, sep, value = part.partition("=")
        if not sep or key.strip(" \t") != name:
            continue
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]  # RFC 6265 allows a quoted value; some clients add them
        found.append(value)
    return found


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(moment: datetime) -> str:
    """An aware ``moment`` as an RFC 7231 IMF-fixdate in GMT (``Thu, 01 Jan 1970 00:00:00 GMT``).

    Written out directly: ``email.utils.format_datetime`` cost a sixth of a small
    session's whole save.  Day and month names are English whatever the locale.
    """
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (  # noqa: UP031 (measured: the fastest)
        _WEEKDAYS[moment.weekday()],
        moment.day,
        _MONTHS[moment.month - 1],
        moment.year,
        moment.hour,
        moment.minute,
        moment.second,
    )


def _check_attribute(what: str, value: str) -> None:
    if not value or _ATTRIBUTE.fullmatch(value) is None:
        raise SessionConfigError(
            f"cookie {what} {value!r} is not allowed: it must be non-empty printable ASCII "
            "without spaces, ';', ',', CR, LF or other control characters"
        )
    if len(value) > _MAX_ATTRIBUTE_BYTES:
        raise SessionConfigError(
            f"cookie {what} is longer than {_MAX_ATTRIBUTE_BYTES} bytes; browsers ignore it"
        )


class CookiePolicy:
    """Name and attributes of the session cookie, validated once at construction.

    ``secure``: ``None`` makes the cookie Secure on https requests and for ssl-only
    sessions; ``True`` always; ``False`` never (plain-http development; ssl-only
    sessions are then refused).  A Secure cookie is named ``__Host-<name>`` when
    ``host_prefix`` is true, so a sibling subdomain or a network attacker on http
    cannot plant or shadow it.

    Rule for the prefix: ``__Host-`` requires ``Path=/`` and no ``Domain``; asking for
    both ``host_prefix=True`` and a ``domain`` or another ``path`` raises
    :class:`SessionConfigError` unless ``secure=False`` (then no cookie is ever Secure,
    the prefix is never used, and the combination is harmless).  Pass
    ``host_prefix=False`` to scope a Secure cookie to a path or domain.

    ``samesite="none"`` requires ``secure=True``: browsers drop ``SameSite=None``
    cookies without ``Secure``, and with ``secure=None`` every http response would
    carry such a cookie.

    ``partitioned=True`` adds ``Partitioned`` (CHIPS: a cookie kept per top-level
    site, for an application embedded in other sites' pages); browsers accept it only
    on a Secure cookie, so it requires ``secure=True``.
    """

    __slots__ = (
        "_attrs_tail",
        "_delete_tail",
        "_domain_attr",
        "_path_attr",
        "_read_names",
        "domain",
        "host_prefix",
        "httponly",
        "name",
        "partitioned",
        "path",
        "samesite",
        "secure",
    )

    def __init__(
        self,
        name: str = "session",
        *,
        path: str = "/",
        domain: str | None = None,
        secure: bool | None = None,
        samesite: SameSite = "lax",
        httponly: bool = True,
        host_prefix: bool = True,
        partitioned: bool = False,
    ) -> None:
        if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
            raise SessionConfigError(
                f"cookie name {name!r} is not an RFC 6265 token "
                "(letters, digits and !#$%&'*+-.^_`|~ only)"
            )
        if name.lower().startswith(_RESERVED_PREFIXES):
            raise SessionConfigError(
                f"cookie name {name!r} must not carry the __Host-/__Secure- prefix itself; "
                "it is added automatically when the cookie is Secure (host_prefix=True)"
            )
        _check_attribute("path", path)
        if not path.startswith("/"):
            raise SessionConfigError(f"cookie path {path!r} must start with '/'")
        if domain is not None:
            _check_attribute("domain", domain)
            if _DOMAIN.fullmatch(domain) is None:
                raise SessionConfigError(f"cookie domain {domain!r} is not a host name")
        if secure not in (None, True, False):
            raise SessionConfigError("secure must be None, True or False")
        if samesite not in _SAMESITE_TEXT:
            raise SessionConfigError(
                f"samesite must be 'lax', 'strict' or 'none', not {samesite!r}"
            )
        if samesite == "none" and secure is not True:
            raise SessionConfigError(
                "samesite='none' requires secure=True: browsers reject SameSite=None "
                "cookies that are not Secure"
            )
        if partitioned and secure is not True:
            raise SessionConfigError(
                "partitioned=True requires secure=True: browsers accept Partitioned "
                "cookies only when they are Secure"
            )
        if host_prefix and secure is not False and (domain is not None or path != "/"):
            raise SessionConfigError(
                "the __Host- prefix (host_prefix=True) requires path='/' and no domain; "
                "pass host_prefix=False to scope a Secure cookie to a path or domain"
            )
        self.name = name
        self.path = path
        self.domain = domain
        self.secure = secure
        self.samesite: SameSite = samesite
        self.httponly = bool(httponly)
        self.host_prefix = bool(host_prefix)
        self.partitioned = bool(partitioned)
        self._path_attr = f"; Path={path}"
        self._domain_attr = f"; Domain={domain}" if domain is not None else ""
        tail = "; HttpOnly" if self.httponly else ""
        self._attrs_tail = f"{tail}; SameSite={_SAMESITE_TEXT[samesite]}" + (
            "; Partitioned" if partitioned else ""
        )
        self._delete_tail = f"; Expires={_EPOCH_EXPIRES}; Max-Age=0"
        # Indexed by "is the request https": read on every request, computed once.
        self._read_names = tuple(
            self.cookie_name(self.is_secure(https=https, ssl_only=False)) for https in (False, True)
        )

    def __repr__(self) -> str:
        return (
            f"CookiePolicy({self.name!r}, path={self.path!r}, domain={self.domain!r}, "
            f"secure={self.secure!r}, samesite={self.samesite!r}, "
            f"httponly={self.httponly!r}, host_prefix={self.host_prefix!r}, "
            f"partitioned={self.partitioned!r})"
        )

    def cookie_name(self, secure: bool) -> str:
        """The name on the wire: ``__Host-<name>`` for a Secure cookie with the prefix."""
        if secure and self.host_prefix:
            return _HOST_PREFIX + self.name
        return self.name

    def is_secure(self, *, https: bool, ssl_only: bool) -> bool:
        """Whether this response's cookie gets ``Secure``.

        :raises SessionConfigError: an ssl-only session with ``secure=False``.
        """
        if self.secure is False:
            if ssl_only:
                raise SessionConfigError(
                    "ssl_only sessions need Secure cookies, but the cookie policy has secure=False"
                )
            return False
        return self.secure is True or https or ssl_only

    def name_to_read(self, *, https: bool) -> str:
        """The one cookie name to look for on such a request (precomputed).

        Exactly the name this policy writes for a non-ssl-only session on such a
        request.  On https with ``secure=None`` the plain name is deliberately NOT read:
        anyone who can inject a cookie over http could then plant a session, which is
        what ``__Host-`` exists to prevent; a session begun over http restarts once on
        https.  On plain http a ``__Host-`` cookie is not read (browsers would not send
        it), except with ``secure=True``, where every cookie we write carries that name
        (e.g. behind a TLS proxy that does not report the scheme).
        """
        return self._read_names[https]

    def set_cookie_header(
        self,
        value: str,
        *,
        secure: bool,
        expires_at: datetime,
        now: datetime,
        persistent: bool = True,
    ) -> str:
        """The complete ``Set-Cookie`` value (without ``Set-Cookie:``).

        ``Expires`` is real GMT whatever the local time zone (the origin labelled local
        time GMT); ``Max-Age`` is whole seconds left, never negative.  Both are hints:
        the signed expiry is what is enforced, whatever the browser does with them.
        With ``persistent=False`` both are left out: the browser drops the cookie when
        it closes (the signed expiry still applies).
        """
        if _VALUE.fullmatch(value) is None:
            raise ValueError("cookie values may only contain [A-Za-z0-9._-]")
        if expires_at.tzinfo is None or now.tzinfo is None:
            raise ValueError("expires_at and now must be aware datetimes")
        lifetime = ""
        if persistent:
            max_age = max(0, int((expires_at - now).total_seconds()))
            lifetime = f"; Expires={http_date(expires_at)}; Max-Age={max_age}"
        return "".join(
            (
                self.cookie_name(secure),
                "=",
                value,
                self._path_attr,
                self._domain_attr,
                lifetime,
                "; Secure" if secure else "",
                self._attrs_tail,
            )
        )

    def delete_cookie_header(self, *, secure: bool) -> str:
        """A header that removes the cookie: same name, Path and Domain, expired.

        ``secure`` must match the cookie being deleted: browsers ignore a
        ``__Host-`` cookie, even an expiring one, that lacks ``Secure``.
        """
        return "".join(
            (
                self.cookie_name(secure),
                "=",
                self._path_attr,
                self._domain_attr,
                self._delete_tail,
                "; Secure" if secure else "",
                self._attrs_tail,
            )
        )
