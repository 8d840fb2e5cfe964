"""The bad-input catalogue: every hostile input a session sees, one test (or case) per
row, end to end (the row numbers follow the catalogue in docs/security.md).

NEW  = a fresh empty session; the dead cookie expired in the response; when the handler
       writes, a new id (never the supplied one), nothing stored under the supplied id;
       the handler's status (never 500); a WARNING on ``sa_sessions.security`` for
       malformed or forged input, without the raw value.
REJECT-CFG = exception at construction.  ERR = typed error inside the request,
       stored state unchanged.

Every test runs with all log records captured; an autouse fixture then checks that no
issued session id, no supplied raw value and no key appears in any of them.
Runs on SQLite + memory region, MariaDB + real memcached and PostgreSQL + real Redis
(rows 28 and 30 use a real server only where the fault needs it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import pickle
import socket
import struct
import time
import zlib
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from sqlalchemy import update

import sa_sessions.session
from sa_sessions import SessionConfigError
from sa_sessions import SessionConflict
from sa_sessions import SessionMiddleware
from sa_sessions import SessionStore
from sa_sessions import SessionTooLarge
from sa_sessions import UnstorableValue
from sa_sessions import memcached_region
from sa_sessions._clock import to_micros
from sa_sessions.cache.entry import Kind
from sa_sessions.codec.blob import MAC_PURPOSE
from sa_sessions.cookies import read_cookie_values
from sa_sessions.ids import hash_session_id
from sa_sessions.ids import new_session_id
from sa_sessions.signing import KeyRing

from .conftest import OTHER_SECRET
from .conftest import SECRET
from .conftest import MemcachedProcess
from .webapp import COOKIE
from .webapp import HOST_COOKIE
from .webapp import Result
from .webapp import Web
from .webapp import call
from .webapp import clock_fixture  # noqa: F401
from .webapp import db_kind_fixture  # noqa: F401
from .webapp import finish
from .webapp import make_app
from .webapp import make_middleware
from .webapp import open_session
from .webapp import random_text
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401

SECURITY = "sa_sessions.security"
BACKSLASH = "\\"
MYSQL_MEMCACHED = pytest.param(
    "mysql", id="mariadb-memcached", marks=[pytest.mark.mysql, pytest.mark.memcached]
)


# --------------------------------------------------------------------------- log watch


@dataclass
class Watch:
    """Values that must never show up in a log record."""

    issued: list[str]
    values: set[str] = field(default_factory=set)

    def add(self, *values: str) -> None:
        self.values.update(v for v in values if len(v) >= 10)


@pytest.fixture(autouse=True)
def watch(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    issued: list[str] = []
    real = sa_sessions.session.new_session_id

    def recording() -> str:
        sid = real()
        issued.append(sid)
        return sid

    monkeypatch.setattr(sa_sessions.session, "new_session_id", recording)
    caplog.set_level(logging.DEBUG, logger="sa_sessions")
    w = Watch(issued)
    yield w
    texts = [caplog.text] + [r.getMessage() for r in caplog.records]
    secrets = [*issued, *w.values, SECRET.decode(), OTHER_SECRET.decode()]
    for text in texts:
        for secret in secrets:
            assert secret not in text, "a raw id, cookie value or key leaked into the logs"


def warnings_on_security(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SECURITY and r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- forging


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def forge_raw(body: bytes, kind: str = "i", key: bytes = SECRET) -> str:
    """A cookie value with a valid signature over any body (as with a leaked key)."""
    signed = f"v1.{kind}.{b64(body)}"
    sig = KeyRing(key, "sa_sessions.cookie:" + COOKIE).sign(signed.encode("ascii"))
    return f"{signed}.{b64(sig)}"


def fields(
    web: Web,
    sid: Any = None,
    *,
    iat: timedelta = timedelta(0),
    exp: timedelta = timedelta(days=1),
    data: Any = None,
) -> bytes:
    now = web.clock()
    items: list[Any] = [
        new_session_id() if sid is None else sid,
        to_micros(now + iat),
        to_micros(now + exp),
        0,
        {},
    ]
    if data is not None:
        items.append(data)
    return json.dumps(items).encode()


def server(web: Web, **options: Any) -> SessionMiddleware:
    return web.middleware(cookie_only_threshold=0, **options)


def create(web: Web, mw: SessionMiddleware, query: str = "set=a:1", **kw: Any) -> tuple[str, str]:
    """Create a session through the middleware: (cookie value, sid)."""
    r = call(mw, query + "&show", **kw)
    assert r.status == 200
    (sc,) = r.set_cookies
    return sc.value, r.json["sid"]


# --------------------------------------------------------------------------- NEW checks


def assert_expired(r: Result, *, https: bool = False) -> None:
    """The response deletes the session cookie it was sent, and sets no other."""
    (sc,) = r.set_cookies
    assert sc.deleted and sc.value == ""
    assert sc.name == (HOST_COOKIE if https else COOKIE)


def assert_new(
    web: Web,
    caplog: pytest.LogCaptureFixture,
    mw: SessionMiddleware,
    cookie: str,
    *,
    https: bool = False,
    warning: bool | str = True,
    backend: tuple[int, int, int, int] | None = (0, 0, 0, 0),
    supplied_id: str | None = None,
    expired: bool = True,
) -> float:
    """The request sees a fresh empty session and expires the dead cookie; a write gets a
    new id.  Returns the read time."""
    before = web.row(supplied_id) if supplied_id and len(supplied_id) == 43 else None
    web.reset()
    caplog.clear()
    started = time.perf_counter()
    r = call(mw, "show", cookie=cookie, https=https)
    elapsed = time.perf_counter() - started
    assert r.status == 200
    d = r.json
    assert (d["active"], d["data"], d["sid"]) == (False, {}, None)
    if expired:
        assert_expired(r, https=https)  # the browser stops presenting it
    else:
        assert r.set_cookies == []  # nothing of ours was read
    if backend is not None:
        assert web.counts() == backend
    if warning is True:
        assert warnings_on_security(caplog), "expected a WARNING on sa_sessions.security"
    elif warning == "info":
        assert [r for r in caplog.records if r.name == SECURITY and r.levelno >= logging.INFO]
    elif warning is False:
        assert not warnings_on_security(caplog)
    web.reset()
    w = call(mw, "set=n:1&show", cookie=cookie, https=https)
    assert w.status == 200
    assert w.json["data"] == {"n": 1}
    new_id = w.json["sid"]
    assert new_id and new_id != supplied_id
    (sc,) = w.set_cookies
    assert not sc.deleted
    if backend == (0, 0, 0, 0):  # the write touches only the new id
        writes = 1 if mw.settings.cookie_only_threshold == 0 else 0
        assert web.sql.count("INSERT") == writes and len(web.sql.statements) == writes
    if supplied_id is not None and len(supplied_id) == 43:
        assert web.row(supplied_id) == before  # nothing written under the supplied id
        if before is None:
            assert not web.cached(supplied_id)
    return elapsed


# --------------------------------------------------------------------------- rows 1-10


def test_row01_no_cookie_is_lazy(web: Web) -> None:
    mw = server(web)
    web.reset()
    r = call(mw, "show&get=a&has=a")
    assert r.json["active"] is False
    assert r.set_cookies == []
    assert web.counts() == (0, 0, 0, 0)
    r = call(mw, "set=a:1")
    assert web.sql.count("INSERT") == 1 and len(web.sql.statements) == 1
    assert web.counts()[1:] == (0, 1, 0)


def test_row02_empty_value(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    assert_new(web, caplog, server(web), f"{HOST_COOKIE}=", https=True, warning=None)
    assert_new(web, caplog, server(web), f"{COOKIE}=", warning=None)


@pytest.mark.parametrize("length", [42, 44, 1, 10_000])
def test_row03_wrong_length_id(
    web: Web, caplog: pytest.LogCaptureFixture, watch: Watch, length: int
) -> None:
    bad = random_text(length)
    watch.add(bad)
    mw = server(web)
    # as the raw cookie value, and inside a body signed with our key
    unread = length > 5000  # a header over the 8 KiB limit is not parsed at all
    warning = "info" if unread else True
    assert_new(web, caplog, mw, f"{COOKIE}={bad}", warning=warning, expired=not unread)
    forged = forge_raw(fields(web, bad))
    assert_new(web, caplog, mw, f"{COOKIE}={forged}", warning=warning, expired=not unread)


@pytest.mark.parametrize(
    "bad",
    [
        "A" * 40 + "+/=",
        "A" * 42 + ".",
        "A" * 40 + "%2F",
        "A" * 41 + "==",
        "A" * 42 + "~",
    ],
)
def test_row04_chars_outside_the_id_alphabet(
    web: Web, caplog: pytest.LogCaptureFixture, watch: Watch, bad: str
) -> None:
    watch.add(bad)
    mw = server(web)
    assert_new(web, caplog, mw, f"{COOKIE}={bad}")
    assert_new(web, caplog, mw, f"{COOKIE}={forge_raw(fields(web, bad))}")


@pytest.mark.parametrize("bad", ["' OR '1'='1", "x'; DROP TABLE s;--", "%' --", "1 UNION SELECT"])
def test_row05_sql_looking_id(
    web: Web, caplog: pytest.LogCaptureFixture, watch: Watch, bad: str
) -> None:
    watch.add(bad)
    mw = server(web)
    assert_new(web, caplog, mw, f"{COOKIE}={bad}")
    assert_new(web, caplog, mw, f"{COOKIE}={forge_raw(fields(web, bad))}")
    assert_new(web, caplog, mw, f"{COOKIE}={forge_raw(fields(web, bad.ljust(43, 'x')))}")


@pytest.mark.parametrize(
    "bad",
    [
        "abc def",
        "abc\r\nset x 0 0 1\r\n1",
        "abc\tdef",
        "abc\x00def",
        "abc\x01def",
        "A" * 42 + "\x01",
    ],
    ids=["space", "crlf", "tab", "nul", "ctrl01", "ctrl01-43"],
)
def test_row06_memcached_injection_id(
    web: Web, caplog: pytest.LogCaptureFixture, watch: Watch, bad: str
) -> None:
    watch.add(bad)
    mw = server(web)
    assert_new(web, caplog, mw, f"{COOKIE}={bad}")
    assert_new(web, caplog, mw, f"{COOKIE}={forge_raw(fields(web, bad))}")


def test_row07_well_formed_never_issued_id(
    web: Web, caplog: pytest.LogCaptureFixture, watch: Watch
) -> None:
    forged = new_session_id()
    watch.add(forged)
    mw = server(web)
    # the bare id is not a cookie of ours at all: rejected before any backend
    assert_new(web, caplog, mw, f"{COOKIE}={forged}", supplied_id=forged)
    # a validly signed id cookie naming it: one lookup, then a NEW session under a new id
    signed = forge_raw(fields(web, forged))
    assert_new(
        web,
        caplog,
        mw,
        f"{COOKIE}={signed}",
        warning=None,
        backend=(1, 1, 0, 0),
        supplied_id=forged,
    )
    assert web.row(forged) is None


def test_row08_id_of_a_logged_out_session(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    mw = server(web)
    value, sid = create(web, mw)
    assert call(mw, "terminate", cookie=f"{COOKIE}={value}").status == 200
    assert web.row(sid) is None
    # The end marker answers: no SQL at all.
    assert_new(
        web, caplog, mw, f"{COOKIE}={value}", warning=None, backend=(0, 1, 0, 0), supplied_id=sid
    )
    assert web.row(sid) is None


@pytest.mark.parametrize("which", ["absolute", "idle"])
def test_row09_expired_but_not_purged(
    web: Web, caplog: pytest.LogCaptureFixture, which: str
) -> None:
    mw = server(web, idle_timeout=timedelta(hours=1) if which == "idle" else None)
    value, sid = create(web, mw, "set=secret:42")
    row = web.row(sid)
    web.clock.advance(days=8) if which == "absolute" else web.clock.advance(minutes=61)
    supplied = sid if which == "absolute" else None  # found idle, the row is deleted
    assert_new(
        web, caplog, mw, f"{COOKIE}={value}", warning=False, backend=None, supplied_id=supplied
    )
    if which == "absolute":
        assert web.row(sid) == row  # the signed cookie expired first: never looked up
    else:
        assert web.row(sid) is None  # found idle: deleted, row and cache entry
        assert web.ended_in_cache(sid)
    # and for cookie sessions
    mw = web.middleware(idle_timeout=timedelta(hours=1) if which == "idle" else None)
    value, sid = create(web, mw, "set=secret:42")
    web.clock.advance(days=8) if which == "absolute" else web.clock.advance(minutes=61)
    assert_new(web, caplog, mw, f"{COOKIE}={value}", warning=False, supplied_id=sid)


def test_row10_past_absolute_lifetime_while_active(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    for threshold in (0, 4096):
        mw = web.middleware(
            cookie_only_threshold=threshold,
            lifetime=timedelta(hours=2),
            idle_timeout=timedelta(hours=1),
        )
        start = web.clock()
        value, sid = create(web, mw)
        for _ in range(2):
            web.clock.advance(minutes=50)
            r = call(mw, "show", cookie=f"{COOKIE}={value}")
            assert r.json["active"] is True
            for sc in r.set_cookies:
                value = sc.value  # a touched data cookie
        web.clock.now = start + timedelta(hours=2)
        assert_new(
            web, caplog, mw, f"{COOKIE}={value}", warning=False, backend=None, supplied_id=sid
        )
        web.clock.now = start


# --------------------------------------------------------------------------- rows 11-23


def data_cookie(web: Web, query: str = 'set=a:1&set=b:"some text"') -> str:
    value, _ = create(web, web.middleware(), query)
    assert value.split(".")[1] == "d"
    return value


def test_row11_flipped_payload_char(
    web: Web, caplog: pytest.LogCaptureFixture, watch: Watch
) -> None:
    value = data_cookie(web)
    watch.add(value)
    prefix, kind, body, sig = value.split(".")
    for i in (0, len(body) // 2, len(body) - 1):
        flipped = body[:i] + ("B" if body[i] != "B" else "C") + body[i + 1 :]
        assert_new(web, caplog, server(web), f"{COOKIE}={prefix}.{kind}.{flipped}.{sig}")
        caplog.clear()
        call(server(web), "show", cookie=f"{COOKIE}={prefix}.{kind}.{flipped}.{sig}")
        assert any("tampered" in r.getMessage() for r in warnings_on_security(caplog))
    kind_flipped = f"{prefix}.i.{body}.{sig}"
    assert_new(web, caplog, server(web), f"{COOKIE}={kind_flipped}")


def test_row12_random_signature(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    value = data_cookie(web)
    signed = value.rsplit(".", 1)[0]
    for _ in range(3):
        sig = b64(os.urandom(32))
        assert_new(web, caplog, server(web), f"{COOKIE}={signed}.{sig}")


def test_row13_truncated_mid_base64(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    value = data_cookie(web)
    body_end = value.rindex(".")
    for cut in (5, body_end // 2 + 1, body_end - 1, body_end + 1, len(value) - 1, len(value) - 5):
        assert_new(web, caplog, server(web), f"{COOKIE}={value[:cut]}")


def test_row14_signed_cookie_replayed_after_expiry(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    value = data_cookie(web)
    web.clock.advance(days=7)
    assert_new(web, caplog, server(web), f"{COOKIE}={value}", warning=False)
    assert_new(
        web,
        caplog,
        server(web),
        f"{COOKIE}={forge_raw(fields(web, exp=timedelta(0)))}",
        warning=False,
    )


def test_row15_issued_in_the_future(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    mw = web.middleware()
    ahead = forge_raw(fields(web, iat=timedelta(seconds=61), data={"admin": True}), kind="d")
    assert_new(web, caplog, mw, f"{COOKIE}={ahead}")
    far = forge_raw(fields(web, iat=timedelta(days=3), exp=timedelta(days=9), data={"a": 1}), "d")
    assert_new(web, caplog, mw, f"{COOKIE}={far}")
    within = forge_raw(fields(web, iat=timedelta(seconds=30), data={"a": 1}), kind="d")
    assert call(mw, "show", cookie=f"{COOKIE}={within}").json["data"] == {"a": 1}


def test_row16_cookie_replayed_after_logout_is_accepted(web: Web) -> None:
    """Documented limitation: a cookie-only session cannot be revoked."""
    mw = web.middleware()
    value = data_cookie(web)
    r = call(mw, "terminate", cookie=f"{COOKIE}={value}")
    assert r.set_cookies[0].deleted
    assert call(mw, "show", cookie=f"{COOKIE}={value}").json["data"] == {"a": 1, "b": "some text"}
    # mitigation: sessions with derived (revocable) columns always live server-side
    store = web.new_store(columns={"user_id": lambda d: d.get("user_id")})
    mw = web.middleware(store)
    value, sid = create(web, mw, "set=user_id:7")
    assert value.split(".")[1] == "i"
    assert store.revoke(web.model.user_id == 7) == 1
    assert web.row(sid, store) is None
    assert call(mw, "show", cookie=f"{COOKIE}={value}").json["active"] is False


def test_row17_key_removed_from_the_fallback_list(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    value = data_cookie(web)  # signed with SECRET
    mw = web.middleware(cookie_key=OTHER_SECRET)
    assert_new(web, caplog, mw, f"{COOKIE}={value}")


def test_row18_fallback_key_loads_and_re_signs(web: Web) -> None:
    for threshold in (4096, 0):
        value, sid = create(web, web.middleware(cookie_only_threshold=threshold))
        mw = web.middleware(cookie_key=[SECRET, OTHER_SECRET], cookie_only_threshold=threshold)
        r = call(mw, "show", cookie=f"{COOKIE}={value}")
        assert r.json["data"] == {"a": 1} and r.json["sid"] == sid
        (sc,) = r.set_cookies
        new_only = web.middleware(cookie_key=OTHER_SECRET, cookie_only_threshold=threshold)
        assert call(new_only, "show", cookie=f"{COOKIE}={sc.value}").json["sid"] == sid


class Gadget:
    """Runs code when unpickled: makes a directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (os.mkdir, (self.path,))


def test_row19_pickle_gadget(web: Web, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    gadget = pickle.dumps(Gadget(str(target)))
    # Bottle's format, signed with the (leaked) key
    msg = base64.b64encode(pickle.dumps([COOKIE, Gadget(str(target))], -1))
    sig = base64.b64encode(hmac.new(SECRET, msg, hashlib.sha256).digest())
    bottle_value = (b"!" + sig + b"?" + msg).decode()
    mw = web.middleware()
    assert_new(web, caplog, mw, f"{COOKIE}={bottle_value}")
    assert_new(web, caplog, mw, f'{COOKIE}="{bottle_value}"')
    # ours, with a pickle body (plain and deflated) signed with the key
    squeezer = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = squeezer.compress(gadget) + squeezer.flush()
    for body, kind in ((gadget, "d"), (gadget, "i"), (deflated, "dz")):
        assert_new(web, caplog, mw, f"{COOKIE}={forge_raw(body, kind)}")
    assert not target.exists(), "the gadget ran"


@pytest.mark.parametrize(
    "case", ["list", "dict-v99", "huge-int", "nan", "unknown-tag", "data-list", "flags", "short"]
)
def test_row20_valid_signature_wrong_shape(
    web: Web, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    sid = new_session_id()
    now = to_micros(web.clock())
    later = now + 10**9
    bodies = {
        "list": (b"[1, 2]", "d"),
        "dict-v99": (b'{"v": 99}', "d"),
        "huge-int": (f'["{sid}",{"9" * 5000},{later},0,{{}},{{}}]'.encode(), "d"),
        "nan": (f'["{sid}",NaN,{later},0,{{}},{{"a":1}}]'.encode(), "d"),
        "unknown-tag": (f'["{sid}",{now},{later},0,{{}},{{"a":{{" zz":1}}}}]'.encode(), "d"),
        "data-list": (f'["{sid}",{now},{later},0,{{}},[1]]'.encode(), "d"),
        "flags": (f'["{sid}",{now},{later},6,{{}}]'.encode(), "i"),
        "short": (f'["{sid}",{now}]'.encode(), "i"),
    }
    body, kind = bodies[case]
    assert_new(web, caplog, web.middleware(), f"{COOKIE}={forge_raw(body, kind)}")


def test_row21_tolerant_parser_finds_the_cookie(web: Web) -> None:
    mw = web.middleware()
    value = data_cookie(web)
    web.reset()
    for header in (
        f'a=1; bad"c=2; {COOKIE}={value}',
        f"{COOKIE}=garbage; {COOKIE}={value}",
        f"x=\x00; ;; =; {COOKIE} = {value} ;",
        f'{COOKIE}="{value}"',
    ):
        assert call(mw, "show", cookie=header).json["data"] == {"a": 1, "b": "some text"}
    other = data_cookie(web, "set=a:2")
    both = f"{COOKIE}={value}; {COOKIE}={other}"
    assert call(mw, "get=a", cookie=both).json["got"] == {"a": 1}  # first valid wins
    assert web.counts() == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "text",
    ["é", "😀", "v1.d.é.x", "ünïcödé" * 10],
    ids=["e-acute", "emoji", "shaped", "long"],
)
def test_row22_non_ascii_cookie(web: Web, caplog: pytest.LogCaptureFixture, text: str) -> None:
    latin1 = text.encode("utf-8").decode("latin-1")  # what a WSGI server hands us
    mw = server(web)
    assert_new(web, caplog, mw, f"{COOKIE}={latin1}")
    valid = data_cookie(web)
    for i in (3, len(valid) // 2, len(valid) - 2):
        assert_new(web, caplog, mw, f"{COOKIE}={valid[:i]}{latin1}{valid[i + 1 :]}")


def test_row23_oversized_cookie_and_header(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    mw = server(web)
    valid = data_cookie(web)
    cases = [
        (f"{COOKIE}=v1.d.{'A' * 5000}.{'B' * 43}", True, True),  # 5 KB value
        (f"{COOKIE}={valid}; big={'x' * 16_000}", "info", False),  # 16 KB header: unread
        (f"{COOKIE}=" + BACKSLASH * 16_000, "info", False),  # backslashes (CVE-2024-7592)
        ('a="' + BACKSLASH * 7000 + f'"; {COOKIE}={valid[:-3]}xyz', True, True),  # < 8 KiB
    ]
    for header, warning, expired in cases:
        # Best of three: a quadratic parser takes seconds every time, a busy CI
        # machine only delays one attempt now and then.
        fastest = min(
            assert_new(web, caplog, mw, header, warning=warning, expired=expired) for _ in range(3)
        )
        assert fastest < 0.05


# --------------------------------------------------------------------------- rows 24-30


def test_row24_growth_moves_server_side(web: Web) -> None:
    mw = web.middleware()
    value, sid = create(web, mw)
    for n in range(1000, 6000, 250):
        r = call(mw, f"rand=big:{n}&show", cookie=f"{COOKIE}={value}")
        assert r.status == 200  # and every Set-Cookie <= 4096 bytes (checked by Result)
        for sc in r.set_cookies:
            value = sc.value
    assert value.split(".")[1] == "i"
    moved = call(mw, "show", cookie=f"{COOKIE}={value}").json["sid"]
    assert moved != sid  # a session moving into a row gets a fresh id
    assert web.row(moved) is not None and web.row(sid) is None
    assert call(mw, "get=a", cookie=f"{COOKIE}={value}").json["got"] == {"a": 1}


def test_row25_over_max_session_bytes(web: Web) -> None:
    errors: list[BaseException] = []
    store = web.new_store(max_session_bytes=64 * 1024)
    mw = make_middleware(store, clock=web.clock, errors=errors, cookie_only_threshold=0)
    value, sid = create(web, mw, "rand=mid:20000")
    row = web.row(sid, store)
    web.reset()
    r = call(mw, "rand=big:100000", cookie=f"{COOKIE}={value}")
    assert r.status == 500
    assert [type(e) for e in errors] == [SessionTooLarge]
    assert r.set_cookies == []
    assert web.row(sid, store) == row  # previous row unchanged, no truncated row
    assert web.sql.count("UPDATE") == 0
    r = call(mw, "get=mid", cookie=f"{COOKIE}={value}")
    assert r.json["got"]["mid"] == random_text(20000)
    # a new session that is too large: nothing stored at all
    errors.clear()
    rows = web.rows()
    r = call(mw, "rand=big:100000")
    assert r.status == 500 and [type(e) for e in errors] == [SessionTooLarge]
    assert r.set_cookies == [] and web.rows() == rows


def test_row26_over_the_cache_item_limit(web: Web) -> None:
    mw = web.middleware()
    web.reset()
    value, sid = create(web, mw, "bytes=blob:1100000")  # over the 1000 KiB default
    assert value.split(".")[1] == "i"
    assert web.sql.count("INSERT") == 1
    assert web.stats.sets == 1  # a row-only marker: readers go to the row
    assert not web.cached(sid)
    assert web.cache_entry(sid).kind is Kind.ROW_ONLY
    for _ in range(2):
        web.reset()
        r = call(mw, "show", cookie=f"{COOKIE}={value}")
        assert r.json["len"] == 1
        assert web.sql.count("SELECT") == 1  # loads come from the database
        assert web.counts()[1:] == (1, 0, 0)  # the marker is read, nothing is written
    assert not web.cached(sid)


class NotAllowed:
    """A plain class that was never registered with pickle_classes."""


@pytest.mark.parametrize("what", ["socket", "lambda", "model", "class"])
def test_row27_unsupported_type(web: Web, what: str) -> None:
    made: list[Any] = []

    def put(session: Any) -> None:
        value: Any = {
            "socket": lambda: socket.socket(),
            "lambda": lambda: lambda: 1,
            "model": lambda: web.model(),
            "class": NotAllowed,
        }[what]()
        made.append(value)
        session["bad"] = value

    errors: list[BaseException] = []
    mw = make_middleware(web.store, clock=web.clock, hooks={"put": put}, errors=errors)
    try:
        web.reset()
        r = call(mw, "set=a:1&hook=put")
        assert r.status == 500 and [type(e) for e in errors] == [UnstorableValue]
        assert r.set_cookies == []
        assert web.rows() == 0 and web.sql.count("INSERT") == 0
        assert web.stats.sets == 0
        # an existing server session is left as it was
        value, sid = create(web, server(web))
        row = web.row(sid)
        errors.clear()
        r = call(mw, "set=a:2&hook=put", cookie=f"{COOKIE}={value}")
        assert r.status == 500 and [type(e) for e in errors] == [UnstorableValue]
        assert r.set_cookies == []
        assert web.row(sid) == row
        assert call(mw, "show", cookie=f"{COOKIE}={value}").json["data"] == {"a": 1}
    finally:
        for value in made:
            if isinstance(value, socket.socket):
                value.close()


def test_row28_gadget_in_the_cache(
    web: Web, caplog: pytest.LogCaptureFixture, tmp_path: Path, db_kind: str
) -> None:
    target = tmp_path / "pwned"
    mw = server(web)
    value, sid = create(web, mw, "set=a:1")
    assert web.store.cache is not None
    key = web.store.cache.key(hash_session_id(sid))
    gadget = pickle.dumps(Gadget(str(target)))
    if db_kind == "sqlite":  # the memory region has no flags: plant unsigned pickle bytes
        web.region.set(key, struct.pack(">q", 1) + gadget)
    elif db_kind == "postgres":  # Redis: a pickle, as dogpile's own Redis backend writes
        import redis

        url = web.store.cache.backend.urls[0]  # type: ignore[attr-defined]
        client = redis.Redis.from_url(url)
        client.set(key, gadget)
        client.close()
    else:  # a raw memcached item with flags=1 ("pickled") under our key
        from pymemcache.client.base import Client as RawClient

        server_address = web.store.cache.backend.servers[0].rsplit(":", 1)  # type: ignore[attr-defined]
        raw = RawClient((server_address[0], int(server_address[1])))
        assert raw.set(key, gadget, flags=1, noreply=False)
        raw.close()
    web.reset()
    r = call(mw, "show", cookie=f"{COOKIE}={value}")
    assert r.json["data"] == {"a": 1}  # the database answered
    assert web.sql.count("SELECT") == 1
    assert not target.exists()
    assert any(r.levelno >= logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "huge-length", "empty"])
def test_row29_corrupted_blob_in_the_database(
    web: Web, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    mw = server(web)
    value, sid = create(web, mw, "set=a:1")
    hashed = hash_session_id(sid)
    blob = bytes(web.row(sid).data)
    bad = {
        "truncated": blob[: len(blob) // 2],
        "flipped": blob[:20] + bytes([blob[20] ^ 1]) + blob[21:],
        "huge-length": blob[:17]
        + b"\x80\x05\x8d"
        + (2**62).to_bytes(8, "little")
        + b"."
        + blob[-32:],
        "empty": b"",
    }[damage]
    with web.engine.begin() as conn:
        conn.execute(update(web.store.table).where(web.store.table.c.id == hashed).values(data=bad))
    assert web.store.cache is not None
    web.evict(sid)
    assert_new(web, caplog, mw, f"{COOKIE}={value}", backend=None, supplied_id=sid)
    caplog.clear()
    call(mw, "show", cookie=f"{COOKIE}={value}")
    (warning,) = warnings_on_security(caplog)
    assert "rejected a session blob" in warning.getMessage()


def test_row29_blob_with_a_valid_mac_but_undecodable_payload(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    """Were the MAC to pass (leaked key), MemoryError/UnpicklingError -> NEW + ERROR."""
    mw = server(web)
    value, sid = create(web, mw, "set=a:1")
    hashed = hash_session_id(sid)
    row = web.row(sid)
    blob = bytes(row.data)
    payload = b"\x80\x05\x8d" + (2**62).to_bytes(8, "little") + b"."  # 2**62-byte bytes claim
    body = bytes([0x10]) + blob[1:17] + payload
    prefix = b"sa_sessions.blob.v1\x00" + hashed.encode() + row.version.to_bytes(8, "big")
    sealed = body + KeyRing(SECRET, MAC_PURPOSE).sign(prefix + body)
    with web.engine.begin() as conn:
        conn.execute(
            update(web.store.table).where(web.store.table.c.id == hashed).values(data=sealed)
        )
    assert web.store.cache is not None
    web.evict(sid)
    assert_new(web, caplog, mw, f"{COOKIE}={value}", warning=None, backend=None, supplied_id=sid)
    caplog.clear()
    call(mw, "show", cookie=f"{COOKIE}={value}")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR], (
        "a blob that passed its MAC but cannot be decoded must be logged at ERROR"
    )


@pytest.mark.parametrize("db_kind", [MYSQL_MEMCACHED], indirect=True)
def test_row30_memcached_down(
    web: Web,
    caplog: pytest.LogCaptureFixture,
    memcached_factory: Callable[[], MemcachedProcess],
) -> None:
    cache_server = memcached_factory()
    store = web.new_store(region=memcached_region([cache_server.address]))
    mw = make_middleware(store, clock=web.clock, cookie_only_threshold=0)
    value, sid = create(web, mw, "set=a:1")
    assert web.cached(sid, store)
    cache_server.stop()
    caplog.clear()
    for i in range(5):
        started = time.perf_counter()
        r = call(mw, f"set=n:{i}&show", cookie=f"{COOKIE}={value}")
        assert time.perf_counter() - started < 1.0  # never blocks
        assert r.status == 200
        assert r.json["data"] == {"a": 1, **{"n": i}}
    cache_warnings = [
        r for r in caplog.records if r.name == "sa_sessions.cache" and r.levelno == logging.WARNING
    ]
    assert len(cache_warnings) == 1, [r.getMessage() for r in cache_warnings]


# --------------------------------------------------------------------------- rows 33-36


def test_row33_concurrent_requests_merge(web: Web) -> None:
    mw = server(web)
    value, sid = create(web, mw, "set=a:1&set=same:0")
    a, b = open_session(mw, value), open_session(mw, value)
    a["x"] = 1
    a["same"] = "a"
    b["y"] = 2
    b["same"] = "b"
    finish(a)
    finish(b)
    assert dict(open_session(mw, value)) == {"a": 1, "x": 1, "y": 2, "same": "b"}
    # past the retry bound: SessionConflict inside the request, row unchanged
    strict = web.middleware(web.new_store(merge_retries=0), cookie_only_threshold=0)
    a, b = open_session(strict, value), open_session(strict, value)
    a["x"] = 3
    b["y"] = 4
    finish(b)
    row = web.row(sid)
    with pytest.raises(SessionConflict):
        a.finalize()
    assert web.row(sid) == row


def test_row34_logout_while_a_slower_request_runs(web: Web) -> None:
    mw = server(web)
    value, sid = create(web, mw, "set=user:1")
    a, b = open_session(mw, value), open_session(mw, value)
    a["cart"] = [1]
    b.terminate()
    assert finish(b) == ""
    web.reset()
    assert a.finalize() == []  # no cookie re-issued
    assert web.sql.count("INSERT") == 0
    assert web.row(sid) is None
    assert call(mw, "show", cookie=f"{COOKIE}={value}").json["active"] is False


@pytest.mark.parametrize("status", ["302", "303", "403", "404"])
def test_row35_redirect_or_abort_right_after_login(web: Web, status: str) -> None:
    for mw in (web.middleware(), server(web)):
        r = call(mw, f"set=user:1&status={status}")  # login on a fresh session
        assert r.status == int(status)
        (sc,) = r.set_cookies
        r2 = call(mw, f"regen&status={status}", cookie=f"{COOKIE}={sc.value}")
        assert r2.status == int(status)
        (sc2,) = r2.set_cookies
        assert sc2.value != sc.value and not sc2.deleted


class _Outer:
    class Inner:
        pass


@pytest.mark.parametrize(
    "options",
    [
        {"domain": "example.com"},
        {"path": "/app"},
        {"cookie_name": "__Host-s", "secure": False},
        {"cookie_name": "__Secure-s", "secure": False},
        {"cookie_name": "__Host-s"},
        {"samesite": "none"},
        {"samesite": "none", "secure": False},
        {"path": "/\r\nSet-Cookie: x=1", "host_prefix": False},
        {"domain": "example.com\r\nX: 1", "host_prefix": False},
        {"cookie_name": "bad name"},
        {"cookie_name": "a;b"},
        {"cookie_key": b"too-short"},
        {"cookie_key": [SECRET, b"short"]},
        {"cookie_key": []},
        {"cookie_key": None},
        {"lifetime": timedelta(0)},
        {"cookie_only_threshold": 5000},
    ],
    ids=lambda o: ",".join(f"{k}={v!r}"[:30] for k, v in o.items()),
)
def test_row36_rejected_configuration(web: Web, options: dict[str, Any]) -> None:
    with pytest.raises(SessionConfigError) as info:
        SessionMiddleware(make_app(), web.store, **{"cookie_key": SECRET, **options})
    message = str(info.value)
    assert message
    assert SECRET.decode() not in message


@pytest.mark.parametrize(
    "options",
    [
        {"secret_keys": b"short"},
        {"secret_keys": []},
        {"secret_keys": None},
        {"pickle_classes": [_Outer.Inner]},
        {"pickle_classes": [os]},
        {"pickle_classes": ["collections.*"]},
        {"pickle_classes": ["collections.OrderedDict"]},
        {"pickle_classes": [type]},
    ],
    ids=[
        "short-key",
        "no-key",
        "none-key",
        "dotted",
        "module",
        "wildcard",
        "dotted-string",
        "metaclass",
    ],
)
def test_row36_rejected_store_configuration(web: Web, options: dict[str, Any]) -> None:
    options.setdefault("secret_keys", SECRET)
    with pytest.raises(SessionConfigError) as info:
        SessionStore(web.model, web.engine, **options)
    assert str(info.value)


# --------------------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LATIN1 = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=9000)


def _fuzz_check(web: Web, mw: SessionMiddleware, header: str) -> Result:
    web.reset()
    r = call(mw, "show", cookie=header)
    assert r.status == 200
    assert r.json["active"] is False
    if read_cookie_values(header, COOKIE):
        assert_expired(r)  # something under our name that is not a session: expire it
    else:
        assert r.set_cookies == []
    assert web.counts() == (0, 0, 0, 0)  # no backend call, hence none with a bad id
    return r


@FUZZ
@given(header=LATIN1)
def test_fuzz_cookie_header(web: Web, header: str) -> None:
    _fuzz_check(web, server(web), header)


@FUZZ
@given(value=LATIN1, before=st.sampled_from(["", "a=1; ", 'bad"c=2; ']))
def test_fuzz_our_cookie_value(web: Web, value: str, before: str) -> None:
    _fuzz_check(web, server(web), f"{before}{COOKIE}={value}")


@FUZZ
@given(data=st.data())
def test_fuzz_truncations_and_orderings(web: Web, data: st.DataObject) -> None:
    mw = server(web)
    valid = _valid_id_cookie(web, mw)
    cut = data.draw(st.integers(0, len(valid) - 1))
    _fuzz_check(web, mw, f"{COOKIE}={valid[:cut]}")
    parts = data.draw(
        st.permutations([f"{COOKIE}={valid}", "a=1", 'bad"c=2', f"{COOKIE}=junk", "=x", ";"])
    )
    web.reset()
    r = call(mw, "show", cookie="; ".join(parts))
    assert r.json["data"] == {"a": 1}
    assert web.counts() == (0, 1, 0, 0)


def _valid_id_cookie(web: Web, mw: SessionMiddleware) -> str:
    """One server-side session per test, reused by every hypothesis example."""
    if "valid" not in web.scratch:
        web.scratch["valid"] = create(web, mw, "set=a:1")[0]
    value: str = web.scratch["valid"]
    return value
