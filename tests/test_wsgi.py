"""SessionMiddleware end to end through WebTest, with exact SQL and cache counts.

Runs on SQLite + dogpile memory region and on MariaDB + a real memcached.  The
test application (tests/webapp.py) drives the session through query-string
actions; every Set-Cookie line of every response is checked against the
4096-byte budget by the client.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from sa_sessions import SessionError
from sa_sessions import SessionMiddleware
from sa_sessions import SessionTooLarge
from sa_sessions import get_current_session
from sa_sessions.wsgi import ENVIRON_KEY

from .conftest import OTHER_SECRET
from .conftest import SECRET
from .webapp import COOKIE
from .webapp import HOST_COOKIE
from .webapp import Client
from .webapp import Environ
from .webapp import StartResponse
from .webapp import Web
from .webapp import clock_fixture  # noqa: F401
from .webapp import cookie_codec
from .webapp import db_kind_fixture  # noqa: F401
from .webapp import environ_for
from .webapp import make_app
from .webapp import make_middleware
from .webapp import parse_set_cookie
from .webapp import random_text
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401

SECURITY = "sa_sessions.security"


def server_client(web: Web, **options: Any) -> Client:
    return web.client(cookie_only_threshold=0, **options)


def start_server_session(client: Client, query: str = "set=a:1") -> str:
    """Create a session that lives server-side; returns its sid."""
    data = client.json(query + "&show")
    assert client.kind() == "i"
    sid: str = data["sid"]
    return sid


# --------------------------------------------------------------------------- exact counts


class TestCounts:
    def test_untouched_request_costs_nothing(self, web: Web) -> None:
        c = server_client(web)
        sid = start_server_session(c)
        for cookie in (None, c.cookie_header()):
            web.reset()
            res = c.get("", cookie=cookie or "")
            assert web.counts() == (0, 0, 0, 0)
            assert res.headers.getall("Set-Cookie") == []
            assert "Vary" not in res.headers
            assert "Cache-Control" not in res.headers
        assert web.row(sid) is not None

    def test_garbage_cookie_on_untouched_request_is_not_parsed(
        self, web: Web, caplog: pytest.LogCaptureFixture
    ) -> None:
        c = web.client()
        with caplog.at_level(logging.DEBUG, logger="sa_sessions"):
            c.get("", cookie=f"{COOKIE}=garbage!!; other=1")
            assert caplog.records == []
            c.get("show", cookie=f"{COOKIE}=garbage!!")  # touched: now it is parsed
            assert any(r.name == SECURITY and r.levelno == logging.WARNING for r in caplog.records)

    def test_cookie_session_write_and_read_do_no_server_io(self, web: Web) -> None:
        c = web.client()
        web.reset()
        c.get("set=a:1")
        assert c.kind() == "d"
        assert web.counts() == (0, 0, 0, 0)
        c.get("set=b:2")
        assert web.counts() == (0, 0, 0, 0)
        data = c.json("show")
        assert data["data"] == {"a": 1, "b": 2}
        assert c.last == []
        assert web.counts() == (0, 0, 0, 0)
        assert web.rows() == 0

    def test_new_server_session_is_one_insert_and_one_cache_set(self, web: Web) -> None:
        c = server_client(web)
        web.reset()
        sid = start_server_session(c)
        assert web.sql.count("INSERT") == 1
        assert len(web.sql.statements) == 1
        assert web.counts()[1:] == (0, 1, 0)
        assert web.cached(sid)

    def test_server_read_on_cache_hit_is_one_get_and_no_sql(self, web: Web) -> None:
        c = server_client(web)
        start_server_session(c)
        web.reset()
        data = c.json("show")
        assert data["data"] == {"a": 1}
        assert web.counts() == (0, 1, 0, 0)
        assert c.last == []

    def test_server_write_is_one_update_and_one_cache_set(self, web: Web) -> None:
        c = server_client(web)
        sid = start_server_session(c)
        version = web.row(sid).version
        web.reset()
        before = c.value
        c.get("set=b:2")
        assert web.sql.count("UPDATE") == 1
        assert len(web.sql.statements) == 1
        assert web.counts()[1:] == (1, 1, 0)
        # The id cookie names the version saved, so the next request never accepts
        # an older cached copy: one Set-Cookie per write, none per read.
        (sc,) = c.ours()
        assert c.kind() == "i" and c.value != before
        assert cookie_codec().decode(sc.value, now=web.clock()).extra == {"v": version + 1}
        assert web.row(sid).version == version + 1

    def test_server_read_on_cache_miss_reads_the_db_and_refills(self, web: Web) -> None:
        c = server_client(web)
        sid = start_server_session(c)
        web.evict(sid)
        web.reset()
        assert c.json("show")["data"] == {"a": 1}
        assert web.sql.count("SELECT") == 1
        assert len(web.sql.statements) == 1
        assert web.counts()[1:] == (1, 1, 0)
        web.reset()
        c.json("show")
        assert web.counts() == (0, 1, 0, 0)


def _hash(sid: str) -> str:
    from sa_sessions.ids import hash_session_id

    return hash_session_id(sid)


# --------------------------------------------------------------------------- laziness


class TestLazy:
    def test_reads_never_start_a_session(self, web: Web) -> None:
        c = web.client()
        web.reset()
        data = c.json("get=a&has=a&show&pop=a&del=zz")
        assert data["active"] is False
        assert data["sid"] is None
        assert data["bool"] is False
        assert data["keyerror"] == "zz"
        assert c.last == []
        assert web.counts() == (0, 0, 0, 0)

    def test_empty_new_session_is_never_stored(self, web: Web) -> None:
        for c in (web.client(), server_client(web)):
            web.reset()
            assert c.json("start&show")["active"] is True
            assert c.last == []
            c.get("set=a:1&del=a")
            assert c.last == []
            c.get("set=a:1&clear")
            assert c.last == []
            assert web.counts() == (0, 0, 0, 0)
            assert web.rows() == 0

    def test_read_only_request_sends_no_set_cookie(self, web: Web) -> None:
        for c in (web.client(), server_client(web)):
            c.get("set=a:1")
            res = c.get("show&get=a&has=a")
            assert res.headers.getall("Set-Cookie") == []
            assert res.headers["Vary"] == "Cookie"
            assert "Cache-Control" not in res.headers

    def test_ids_in_the_url_are_ignored(self, web: Web) -> None:
        c = web.client()
        c.get("set=a:1")
        value = c.value
        c.cookies.clear()
        data = c.json(f"show&{COOKIE}={value}")
        assert data["active"] is False


# --------------------------------------------------------------------------- mapping API


class TestApiEndToEnd:
    def test_mapping_actions_round_trip(self, web: Web) -> None:
        for c in (web.client(), server_client(web)):
            c.get('set=a:1&set=b:"two"&update={"c":[1],"d":null}&setdefault=e:5')
            c.get("del=d&pop=b&incr=a&incr=n:3&append=c:2&mark=c")
            data = c.json("show")
            assert data["data"] == {"a": 2, "c": [1, 2], "e": 5, "n": 3}
            assert data["len"] == 4
            assert data["bool"] is True

    def test_in_place_change_saved_only_when_marked(self, web: Web) -> None:
        for c in (web.client(), server_client(web)):
            c.get("set=c:[1]")
            c.get("append=c:2")
            assert c.json("get=c")["got"]["c"] == [1]
            c.get("append=c:3&modified")
            assert c.json("get=c")["got"]["c"] == [1, 3]
            c.get("append=c:4&mark=c")
            assert c.json("get=c")["got"]["c"] == [1, 3, 4]

    def test_quick_writes_and_full_write(self, web: Web) -> None:
        c = server_client(web)
        sid = start_server_session(c)
        web.reset()
        c.get("quick=q:1")
        assert web.sql.statements == []
        assert web.counts()[1:] == (1, 1, 0)  # the load, then a swap of that very copy
        assert c.last == []  # the version did not change: neither does the cookie
        web.reset()
        c.get("quick=r:2&set=full:3")
        assert web.sql.count("UPDATE") == 1
        web.evict(sid)
        assert c.json("show")["data"] == {"a": 1, "q": 1, "r": 2, "full": 3}
        web.reset()
        assert c.json("popquick=q")["popped"] == 1
        assert web.sql.statements == []

    def test_no_datastore(self, web: Web) -> None:
        c = server_client(web, no_datastore=True)
        web.reset()
        start_server_session(c)
        c.get("set=b:2")
        assert c.json("show")["data"] == {"a": 1, "b": 2}
        assert web.sql.statements == []
        assert web.rows() == 0


# --------------------------------------------------------------------------- storage


class TestCookieStorage:
    @pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
    def test_growth_moves_server_side_and_shrinking_moves_back(self, web: Web, https: bool) -> None:
        c = web.client(https=https)
        sizes = list(range(2000, 4200, 100))
        moved_at = None
        for n in sizes:
            web.reset()
            c.get(f"rand=big:{n}&set=small:1")
            (line,) = c.ours()
            assert len(line.line) <= 4096
            if c.kind() == "i":
                moved_at = n
                assert web.sql.count("INSERT") == 1
                break
            assert web.counts() == (0, 0, 0, 0)
            biggest = len(line.line)
        assert moved_at is not None, "the session never moved server-side"
        assert biggest > 3900  # the budget is really used before moving
        sid = c.json("show")["sid"]
        assert web.row(sid) is not None
        assert c.json("get=big")["got"]["big"] == random_text(moved_at)
        web.reset()
        c.get("del=big")
        assert c.kind() == "d"
        assert web.sql.count("DELETE") == 1
        assert web.sql.count("INSERT") + web.sql.count("UPDATE") == 0
        assert web.stats.deletes == 1
        assert web.row(sid) is None
        assert not web.cached(sid)
        web.reset()
        assert c.json("show")["data"] == {"small": 1}
        assert web.counts() == (0, 0, 0, 0)

    def test_threshold_zero_keeps_everything_server_side(self, web: Web) -> None:
        c = server_client(web)
        sid = start_server_session(c)
        (line,) = c.ours()
        value = line.value
        assert value.split(".")[1] == "i"
        state = cookie_codec().decode(value, now=web.clock())
        assert state is not None and state.kind == "id" and state.data is None
        assert web.row(sid) is not None

    def test_value_the_cookie_cannot_encode_stays_server_side(self, web: Web) -> None:
        c = web.client()
        sid = start_server_session(c, "complex=z&set=a:1")
        assert web.row(sid) is not None
        assert c.json("show")["data"] == {"z": "(1+2j)", "a": 1}
        web.reset()
        c.get("del=z")
        assert c.kind() == "d"
        assert web.row(sid) is None

    def test_registered_class_stays_server_side(self, web: Web) -> None:
        store = web.new_store(pickle_classes=[Point])
        mw = web.middleware(store, hooks={"point": lambda s: s.__setitem__("p", Point(1, 2))})
        c = Client(mw)
        c.get("hook=point")
        assert c.kind() == "i"
        assert c.json("show")["data"]["p"].startswith("<tests.test_wsgi.Point")

    def test_cookie_only_middleware_raises_session_too_large(self, web: Web) -> None:
        seen: list[BaseException] = []

        def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
            environ[ENVIRON_KEY]["big"] = random_text(6000)
            try:
                start_response("200 OK", [("Content-Type", "text/plain")])
            except SessionTooLarge as exc:
                seen.append(exc)
                raise
            return [b"ok"]

        c = Client(make_middleware(None, app=app, clock=web.clock))
        res = c.get("")
        assert res.status_int == 500
        assert len(seen) == 1
        assert res.headers.getall("Set-Cookie") == []

    def test_every_response_fits_the_cookie_budget_with_long_attributes(self, web: Web) -> None:
        c = web.client(domain="example-with-a-long-name.sub.example.com", host_prefix=False)
        for n in range(3000, 4100, 37):
            c.get(f"rand=k:{n}")  # the client asserts <= 4096 bytes on every line
        assert c.kind() == "i"


class Point:
    """A plain application class registered with pickle_classes."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __repr__(self) -> str:
        return f"<{__name__}.Point {self.x},{self.y}>"


# --------------------------------------------------------------------------- attributes


class TestCookieAttributes:
    def test_defaults_over_http(self, web: Web) -> None:
        c = web.client()
        res = c.get("set=a:1")
        (sc,) = c.ours()
        assert sc.name == COOKIE
        assert sc.attrs["path"] == "/"
        assert sc.attrs["samesite"] == "Lax"
        assert sc.attrs["max-age"] == str(7 * 24 * 3600)
        assert parsedate_to_datetime(sc.attrs["expires"]) == web.clock() + timedelta(days=7)
        assert "domain" not in sc.attrs
        assert sc.flags == {"httponly"}
        assert res.headers["Cache-Control"] == "no-store"
        assert res.headers["Vary"] == "Cookie"

    def test_secure_and_host_prefix_over_https(self, web: Web) -> None:
        c = web.client(https=True)
        c.get("set=a:1")
        (sc,) = c.ours()
        assert sc.name == HOST_COOKIE
        assert sc.flags == {"httponly", "secure"}
        assert sc.attrs["path"] == "/"
        assert "domain" not in sc.attrs
        assert c.json("show")["data"] == {"a": 1}
        # the plain name is not read over https (could be planted over http)
        assert c.json("show", cookie=f"{COOKIE}={c.value}")["active"] is False

    def test_ssl_only_sessions(self, web: Web) -> None:
        c = web.client()
        c.get("startssl&set=a:1")
        (sc,) = c.ours()
        assert sc.name == HOST_COOKIE
        assert "secure" in sc.flags
        https = web.client(https=True)
        data = https.json("show", cookie=f"{HOST_COOKIE}={sc.value}")
        assert data["ssl_only"] is True and data["data"] == {"a": 1}
        # secure=True reads __Host- over plain http too, but an ssl-only session is ignored
        always = web.client(secure=True)
        assert always.json("show", cookie=f"{HOST_COOKIE}={sc.value}")["active"] is False
        # server-side ssl-only sessions too
        srv = web.client(https=True, cookie_only_threshold=0)
        srv.get("startssl&set=a:1")
        assert srv.kind() == "i"
        value = srv.value
        assert srv.json("show")["ssl_only"] is True
        plain = web.client(secure=True, cookie_only_threshold=0)
        assert plain.json("show", cookie=f"{HOST_COOKIE}={value}")["active"] is False

    def test_app_cache_control_is_replaced_and_vary_kept(self, web: Web) -> None:
        def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
            environ[ENVIRON_KEY]["a"] = 1
            start_response(
                "200 OK",
                [
                    ("Content-Type", "text/plain"),
                    ("Cache-Control", "public, max-age=3600"),
                    ("Vary", "Accept-Encoding, Cookie"),
                ],
            )
            return [b"ok"]

        res = Client(make_middleware(web.store, app=app, clock=web.clock)).get("")
        assert res.headers.getall("Cache-Control") == ["no-store"]
        assert res.headers.getall("Vary") == ["Accept-Encoding, Cookie"]

    def test_key_rotation_re_signs_with_the_current_key(self, web: Web) -> None:
        for threshold in (4096, 0):
            old = web.client(cookie_key=SECRET, cookie_only_threshold=threshold)
            old.get("set=a:1")
            value = old.value
            rotated = web.client(cookie_key=[SECRET, OTHER_SECRET], cookie_only_threshold=threshold)
            web.reset()
            data = rotated.json("show", cookie=f"{COOKIE}={value}")
            assert data["data"] == {"a": 1}
            (sc,) = rotated.ours()
            assert sc.value != value
            assert web.sql.count("UPDATE") + web.sql.count("INSERT") == 0
            new_only = web.client(cookie_key=OTHER_SECRET, cookie_only_threshold=threshold)
            assert new_only.json("show", cookie=f"{COOKIE}={sc.value}")["data"] == {"a": 1}
            assert new_only.json("show", cookie=f"{COOKIE}={value}")["active"] is False
            assert cookie_codec(OTHER_SECRET).decode(sc.value, now=web.clock()) is not None


# --------------------------------------------------------------------------- statuses


class TestEveryStatus:
    @pytest.mark.parametrize("status", ["200", "302", "303", "403", "404"])
    def test_login_cookie_on_any_status(self, web: Web, status: str) -> None:
        for c in (web.client(), server_client(web)):
            c.get("set=a:1")
            old = c.value
            res = c.get(f"regen&set=user:1&status={status}")
            assert res.status_int == int(status)
            (sc,) = c.ours()
            assert sc.value != old
            assert res.headers["Cache-Control"] == "no-store"

    def test_handler_that_raises_still_gets_the_cookie(self, web: Web) -> None:
        for c in (web.client(), server_client(web)):
            res = c.get("set=a:1&raise")
            assert res.status_int == 500
            (sc,) = c.ours()
            assert not sc.deleted
            assert c.json("show")["data"] == {"a": 1}
            res = c.get("terminate&raise")
            assert res.status_int == 500
            (sc,) = c.ours()
            assert sc.deleted

    def test_start_response_called_twice(self, web: Web) -> None:
        mw = make_middleware(web.store, clock=web.clock)
        calls: list[tuple[str, list[tuple[str, str]], Any]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            calls.append((status, headers, exc_info))
            return lambda data: None

        environ = environ_for()
        environ["QUERY_STRING"] = "set=a:1&twice"
        body = b"".join(mw(environ, start_response))
        assert body
        assert [c[0][:3] for c in calls] == ["200", "500"]
        first = [v for k, v in calls[0][1] if k == "Set-Cookie"]
        second = [v for k, v in calls[1][1] if k == "Set-Cookie"]
        assert len(first) == 1
        assert first == second
        assert calls[1][2] is not None

    def test_exception_escaping_the_app_saves_nothing(self, web: Web) -> None:
        mw = make_middleware(web.store, clock=web.clock, catch=False, cookie_only_threshold=0)
        environ = environ_for()
        environ["QUERY_STRING"] = "set=a:1&raise"
        web.reset()
        with pytest.raises(RuntimeError):
            mw(environ, lambda *a: None)
        assert web.counts() == (0, 0, 0, 0)


# --------------------------------------------------------------------------- lifecycle


class TestLifecycle:
    def test_regenerate_id(self, web: Web) -> None:
        c = server_client(web)
        old_sid = start_server_session(c, "set=user:1")
        old_cookie = c.value
        web.reset()
        data = c.json("regen&show")
        assert data["sid"] != old_sid
        assert data["data"] == {"user": 1}
        assert web.sql.count("DELETE") == 1
        assert web.sql.count("INSERT") == 1
        assert web.row(old_sid) is None
        assert not web.cached(old_sid)
        assert web.row(data["sid"]) is not None
        fresh = c.json("show", cookie=f"{COOKIE}={old_cookie}")
        assert fresh["active"] is False and fresh["data"] == {}

    @pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
    def test_terminate(self, web: Web, https: bool) -> None:
        c = web.client(https=https, cookie_only_threshold=0)
        sid = start_server_session(c)
        old_cookie = c.value
        web.reset()
        c.get("terminate")
        assert web.sql.count("DELETE") == 1
        assert web.stats.deletes == 1
        assert web.row(sid) is None
        assert not web.cached(sid)
        (sc,) = c.ours()
        assert sc.deleted
        assert sc.name == (HOST_COOKIE if https else COOKIE)
        assert sc.value == ""
        assert sc.attrs["path"] == "/"
        assert parsedate_to_datetime(sc.attrs["expires"]).year == 1970
        assert ("secure" in sc.flags) == https
        again = c.json("show", cookie=f"{c.name}={old_cookie}")
        assert again["active"] is False and again["data"] == {}

    def test_terminate_deletes_with_the_same_path_and_domain(self, web: Web) -> None:
        c = web.client(path="/app", domain="example.com", host_prefix=False)
        c.get("set=a:1")
        (sc,) = c.ours()
        c.get("terminate")
        (gone,) = c.ours()
        assert gone.deleted
        assert (gone.name, gone.attrs["path"], gone.attrs["domain"]) == (
            sc.name,
            "/app",
            "example.com",
        )

    def test_start_on_active_session_discards_it(self, web: Web) -> None:
        for c in (web.client(), server_client(web)):
            old = c.json("set=a:1&show")["sid"]
            data = c.json("start&set=b:2&show")
            assert data["sid"] != old and data["data"] == {"b": 2}
            assert web.row(old) is None
            assert c.json("show")["data"] == {"b": 2}
            c.get("start")
            assert c.value is None  # discarded, and the new empty one is not stored
            assert c.json("show")["active"] is False


# --------------------------------------------------------------------------- expiry


class TestExpiry:
    def test_absolute_lifetime(self, web: Web) -> None:
        for c in (web.client(), server_client(web)):
            c.get("set=a:1")
            start = web.clock()
            web.clock.advance(days=7, seconds=-1)
            assert c.json("show")["data"] == {"a": 1}
            web.clock.advance(seconds=1)
            data = c.json("show")
            assert data["active"] is False and data["data"] == {}
            web.clock.now = start

    def test_per_session_expiration(self, web: Web) -> None:
        for c in (web.client(), server_client(web)):
            c.get("start=3600&set=a:1")
            (sc,) = c.ours()
            assert sc.attrs["max-age"] == "3600"
            start = web.clock()
            web.clock.advance(seconds=3599)
            assert c.json("show")["data"] == {"a": 1}
            web.clock.advance(seconds=1)
            assert c.json("show")["active"] is False
            web.clock.now = start

    def test_custom_lifetime_option(self, web: Web) -> None:
        c = web.client(lifetime=timedelta(hours=2))
        c.get("set=a:1")
        (sc,) = c.ours()
        assert sc.attrs["max-age"] == "7200"
        web.clock.advance(hours=2)
        assert c.json("show")["active"] is False

    def test_idle_timeout_with_throttled_touches_server(self, web: Web) -> None:
        # Cached copies are trusted for an hour here: this test counts touches only.
        web.store = web.new_store(max_staleness=timedelta(hours=1))
        c = server_client(web, idle_timeout=timedelta(minutes=30))
        sid = start_server_session(c)
        version = web.row(sid).version
        web.clock.advance(minutes=2)  # inside 10% of the window: no write
        web.reset()
        assert c.json("show")["data"] == {"a": 1}
        assert web.counts() == (0, 1, 0, 0)
        assert c.last == []
        web.clock.advance(minutes=2)  # 4 min since the last touch: one write
        web.reset()
        assert c.json("show")["data"] == {"a": 1}
        assert web.sql.count("UPDATE") == 1
        assert len(web.sql.statements) == 1
        assert web.counts()[1:] == (1, 1, 0)
        assert web.row(sid).version == version + 1
        web.reset()
        c.json("show")
        assert web.counts() == (0, 1, 0, 0)
        web.clock.advance(minutes=29)  # within 30 min of the touch
        assert c.json("show")["active"] is True
        web.clock.advance(minutes=31)
        data = c.json("show")
        assert data["active"] is False and data["data"] == {}

    def test_idle_timeout_with_throttled_touches_cookie(self, web: Web) -> None:
        c = web.client(idle_timeout=timedelta(minutes=30))
        c.get("set=a:1")
        web.clock.advance(minutes=2)
        c.json("show")
        assert c.last == []
        web.clock.advance(minutes=2)
        c.json("show")
        assert len(c.ours()) == 1  # touched: the cookie carries the new time
        web.clock.advance(minutes=29)
        assert c.json("show")["active"] is True
        web.clock.advance(minutes=31)
        assert c.json("show")["active"] is False

    def test_absolute_lifetime_wins_over_touches(self, web: Web) -> None:
        for c in (
            web.client(idle_timeout=timedelta(hours=1)),
            server_client(web, idle_timeout=timedelta(hours=1)),
        ):
            start = web.clock()
            c.get("set=a:1")
            for _ in range(7 * 24 - 1):
                web.clock.advance(minutes=59)
                assert c.json("show")["active"] is True
            web.clock.now = start + timedelta(days=7)
            assert c.json("show")["active"] is False
            web.clock.now = start


# --------------------------------------------------------------------------- concurrency


class TestConcurrencyThroughTheMiddleware:
    def test_per_key_merge_with_threads(self, web: Web) -> None:
        """A loads, B loads; A waits while B saves; then A saves: both keys survive."""
        a_loaded, b_saved = threading.Event(), threading.Event()

        def pause(session: Any) -> None:
            a_loaded.set()
            assert b_saved.wait(10)

        mw = web.middleware(cookie_only_threshold=0, hooks={"pause": pause})
        c = Client(mw)
        sid = start_server_session(c)
        version = web.row(sid).version
        cookie = c.cookie_header()
        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: results.append(Client(mw).get("set=x:1&hook=pause", cookie=cookie))
        )
        thread.start()
        assert a_loaded.wait(10)
        Client(mw).get("set=y:2", cookie=cookie)
        b_saved.set()
        thread.join(10)
        assert results[0].status_int == 200
        assert c.json("show")["data"] == {"a": 1, "x": 1, "y": 2}
        assert web.row(sid).version == version + 2

    def test_logout_in_b_while_a_is_slower(self, web: Web) -> None:
        a_loaded, b_done = threading.Event(), threading.Event()

        def pause(session: Any) -> None:
            a_loaded.set()
            assert b_done.wait(10)

        mw = web.middleware(cookie_only_threshold=0, hooks={"pause": pause})
        c = Client(mw)
        sid = start_server_session(c)
        cookie = c.cookie_header()
        a_client = Client(mw)
        thread = threading.Thread(target=lambda: a_client.get("set=x:1&hook=pause", cookie=cookie))
        thread.start()
        assert a_loaded.wait(10)
        b_client = Client(mw)
        b_client.get("terminate", cookie=cookie)
        assert b_client.ours()[0].deleted
        b_done.set()
        thread.join(10)
        assert a_client.ours() == []  # A does not re-issue the session cookie
        assert web.row(sid) is None
        assert not web.cached(sid)
        assert c.json("show")["active"] is False


# --------------------------------------------------------------------------- current session


class TestCurrentSession:
    def test_inside_and_outside_a_request(self, web: Web) -> None:
        seen: list[Any] = []

        def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
            seen.append((get_current_session(), environ[ENVIRON_KEY]))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        Client(SessionMiddleware(app, web.store, cookie_key=SECRET)).get("")
        (current, in_environ) = seen[0]
        assert current is in_environ
        with pytest.raises(SessionError):
            get_current_session()

    def test_threads_are_isolated(self, web: Web) -> None:
        barrier = threading.Barrier(2, timeout=10)
        seen: dict[str, Any] = {}

        def hook(session: Any) -> None:
            barrier.wait()
            assert get_current_session() is session
            seen[threading.current_thread().name] = session
            barrier.wait()

        mw = web.middleware(hooks={"h": hook})
        threads = [
            threading.Thread(target=Client(mw).get, args=(f"set=who:{i}&hook=h",), name=f"t{i}")
            for i in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen["t0"] is not seen["t1"]
        assert seen["t0"]["who"] == 0 and seen["t1"]["who"] == 1
        with pytest.raises(SessionError):
            get_current_session()


def test_make_app_requires_the_middleware() -> None:
    with pytest.raises(SessionError):
        make_app()(environ_for(), lambda *a: None)


def test_parse_set_cookie_helper() -> None:
    sc = parse_set_cookie("a=b; Path=/; Max-Age=0; HttpOnly")
    assert (sc.name, sc.value, sc.deleted, sc.flags) == ("a", "b", True, {"httponly"})


class TestStreaming:
    def test_changes_after_start_response_are_not_saved(self, web: Web) -> None:
        """As in gae-sessions, the save happens once, when the response starts."""

        def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
            session = environ[ENVIRON_KEY]
            session["before"] = 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            session["after"] = 2
            return [b"ok"]

        c = Client(make_middleware(web.store, app=app, clock=web.clock))
        c.get("")
        state = cookie_codec().decode(c.value or "", now=web.clock())
        assert state is not None and state.data == {"before": 1}

    def test_current_session_inside_a_streaming_body(self, web: Web) -> None:
        seen: list[Any] = []

        def app(environ: Environ, start_response: StartResponse) -> Any:
            def body() -> Any:
                start_response("200 OK", [("Content-Type", "text/plain")])
                seen.append(get_current_session() is environ[ENVIRON_KEY])
                yield b"chunk"

            return body()

        res = Client(make_middleware(web.store, app=app, clock=web.clock)).get("")
        assert res.body == b"chunk"
        assert seen == [True]
