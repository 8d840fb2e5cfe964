"""Database URLs and error messages with their secrets masked, for output and logs.

SQLAlchemy's ``URL.render_as_string(hide_password=True)`` masks only the
password of the user-info part; drivers also take passwords and key
passphrases in the query string (``?password=``, ``?sslpassword=``), and driver
errors can quote the URL as it was typed.  Everything sa_sessions prints or
logs about a database goes through :func:`redact_url` or :func:`redact_text`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import quote
from urllib.parse import quote_plus
from urllib.parse import unquote
from urllib.parse import unquote_plus

from sqlalchemy.engine import URL

__all__ = ["MASK", "is_secret_name", "redact_text", "redact_url"]

MASK = "***"

#: A query key or option holding any of these words (any case) is a secret.
SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token")

# A URL inside free text: a scheme, "://", then anything up to white space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# key=value options outside URLs (libpq connection strings, driver messages).
_SECRET_WORD = "|".join(SECRET_WORDS)
_ASSIGNMENT = re.compile(
    rf"(?i)\b([\w.\-]*(?:{_SECRET_WORD})[\w.\-]*)(\s*=\s*)"
    # A bare value ends before the punctuation of the sentence around it.
    r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,)'\"]*[^\s&;,)'\".:!?])"
)
# 'password': 'value' as in the repr of a dict of connection arguments.
_DICT_ITEM = re.compile(
    rf"(?i)(['\"])([\w.\-]*(?:{_SECRET_WORD})[\w.\-]*)\1(\s*:\s*)"
    r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|b'(?:[^'\\]|\\.)*')"
)


def is_secret_name(name: str) -> bool:
    """True for a URL query key or connect option that holds a secret (any case)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact_url(url: str | URL) -> str:
    """``url`` as text, with the user-info password and secret query values masked.

    A string is masked as written, without parsing it as SQLAlchemy would, so a
    URL that SQLAlchemy refuses (a bad port, a raw ``@`` in the password) is
    still shown without its secrets.
    """
    if isinstance(url, URL):
        return _redact_url_object(url)
    if _split(url) is None:  # not a URL: maybe a "host=h password=p" connection string
        return _mask_assignments(url)
    return _redact_url_text(url)


def redact_text(text: str, *urls: str | URL) -> str:
    """``text`` (e.g. an error message) with every secret of a URL in it masked.

    The secrets of ``urls`` (the URLs the message may be about) are masked
    wherever they appear, even outside a URL, since drivers may quote them alone.
    """
    for secret in sorted(_secrets_of(urls), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_IN_TEXT.sub(_redact_url_match, text)
    text = _mask_assignments(text)
    return _DICT_ITEM.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}'{MASK}'", text
    )


# --------------------------------------------------------------------------- helpers


def _redact_url_match(match: re.Match[str]) -> str:
    """A URL found in text, less the punctuation of the sentence around it."""
    found = match.group(0)
    url = found.rstrip(".,;:!)]}")
    return _redact_url_text(url) + found[len(url) :]


def _mask_assignments(text: str) -> str:
    return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def _redact_url_object(url: URL) -> str:
    text = url.set(query={}).render_as_string(hide_password=True)
    pairs = [
        (key, MASK if is_secret_name(key) else quote_plus(value))
        for key in sorted(url.query)
        for value in _values(url.query[key])
    ]
    if pairs:
        text += "?" + "&".join(f"{quote_plus(key)}={value}" for key, value in pairs)
    return text


def _values(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


class _Parts(NamedTuple):
    scheme: str  # "mysql+mysqldb://"
    userinfo: str  # "user:password", or "" when there is no "@"
    location: str  # "host:port/database"
    question: str  # "?" when there is a query string, else ""
    query: str


def _split(text: str) -> _Parts | None:
    """The parts of a URL string, or None if it has no ``scheme://``.

    The user-info ends at the *last* ``@``, so a password holding a raw ``@``,
    ``/`` or ``?`` is masked whole (at worst, with more of the URL).
    """
    start = _URL_START.match(text)
    if start is None:
        return None
    body = text[start.end() :]
    userinfo, at, rest = body.rpartition("@")
    if not at:
        userinfo, rest = "", body
    location, question, query = rest.partition("?")
    return _Parts(start.group(0), userinfo, location, question, query)


def _redact_url_text(text: str) -> str:
    parts = _split(text)
    if parts is None:
        return text
    shown = parts.scheme
    if parts.userinfo:
        user, colon, password = parts.userinfo.partition(":")
        shown += f"{user}:{MASK}@" if colon and password else f"{parts.userinfo}@"
    shown += parts.location + parts.question
    return shown + "&".join(_redact_pair(pair) for pair in parts.query.split("&"))


def _redact_pair(pair: str) -> str:
    key, equals, value = pair.partition("=")
    if equals and value and is_secret_name(unquote_plus(key)):
        return f"{key}={MASK}"
    return pair


_ENCODINGS = (quote_plus, lambda text: quote(text, safe=" +"), lambda text: quote(text, safe=""))


def _secrets_of(urls: Iterable[str | URL]) -> set[str]:
    """Every password and secret query value of ``urls``, raw and percent-encoded."""
    found: set[str] = set()
    for url in urls:
        if isinstance(url, URL):
            if url.password:
                found.add(str(url.password))
            for key, value in url.query.items():
                if is_secret_name(key):
                    found.update(_values(value))
            continue
        parts = _split(url)
        if parts is None:
            continue
        password = parts.userinfo.partition(":")[2]
        if password:
            found.update({password, unquote(password)})
        for pair in parts.query.split("&"):
            key, _, value = pair.partition("=")
            if value and is_secret_name(unquote_plus(key)):
                found.update({value, unquote_plus(value)})
    # As SQLAlchemy and as urllib would write them back into a URL.
    found.update({form(secret) for secret in found for form in _ENCODINGS})
    found.discard("")
    return found
