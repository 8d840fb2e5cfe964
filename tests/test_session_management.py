"""Session management: lifetimes, flash messages, CSRF tokens, request metadata, hooks.

End to end through the middleware (and the Bottle plugin for CSRF checks) on SQLite +
in-process cache, MariaDB + memcached and PostgreSQL + Redis.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import metadata
from sa_sessions.exceptions import SessionError

from .webapp import Client
from .webapp import Web
from .webapp import clock_fixture  # noqa: F401
from .webapp import db_kind_fixture  # noqa: F401
from .webapp import environ_for
from .webapp import open_session
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
def model(engine: Engine) -> Iterator[type[Any]]:
    """A session model with a user and two request-metadata columns."""

    class Base(DeclarativeBase):
        pass

    class WebSession(SessionModel, Base):
        __tablename__ = f"sa_test_managed_{os.getpid()}"
        user_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
        device: Mapped[str | None] = mapped_column(String(64), nullable=True)
        network: Mapped[str | None] = mapped_column(String(64), nullable=True)

    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield WebSession
    Base.metadata.drop_all(engine)


def managed_store(web: Web, **options: Any) -> SessionStore[Any]:
    """The store of a "your sessions" page: a user column and request metadata."""
    columns = {
        "user_id": lambda data: data.get("user_id"),
        "device": lambda data, environ: metadata.device(environ),
        "network": lambda data, environ: metadata.client_network(environ),
    }
    store = web.new_store(columns=columns, **options)
    web.store = store
    return store


def _flash_two(session: Any) -> None:
    session.flash("saved")
    session.flash("careful", "warning")


def _login(session: Any) -> None:
    session.regenerate_id()
    session["user_id"] = 7


def actions() -> dict[str, Any]:
    """Handler steps the tests trigger with ``hook=<name>``."""
    return {
        "flash_two": _flash_two,
        "pop": lambda s: s.pop_flashed(),
        "pop_pairs": lambda s: [list(pair) for pair in s.pop_flashed(with_categories=True)],
        "token": lambda s: s.csrf_token(),
        "no_touch": lambda s: s.no_touch(),
        "remember_me": lambda s: s.start(
            expiration=timedelta(days=30), idle_timeout=timedelta(minutes=10)
        ),
        "login": _login,
        "login_default_idle": lambda s: s.regenerate_id(idle_timeout=None),
    }


def client(web: Web, **options: Any) -> Client:
    return web.client(hooks=actions(), **options)


# --------------------------------------------------------------------------- lifetimes


class TestLifetimes:
    @pytest.mark.parametrize("threshold", [4096, 0], ids=["cookie", "server"])
    def test_remember_me_is_one_call(self, web: Web, threshold: int) -> None:
        c = client(web, cookie_only_threshold=threshold, idle_timeout=timedelta(minutes=1))
        c.get("hook=remember_me&set=a:1")
        (sc,) = c.ours()
        assert int(sc.attrs["max-age"]) == 30 * 24 * 3600
        web.clock.advance(minutes=5)  # past the application's idle timeout, not its own
        assert c.json("show")["data"] == {"a": 1}
        web.clock.advance(minutes=11)  # past its own
        assert c.json("show")["active"] is False

    @pytest.mark.parametrize("threshold", [4096, 0], ids=["cookie", "server"])
    def test_the_idle_timeout_survives_regenerate_id(self, web: Web, threshold: int) -> None:
        c = client(web, cookie_only_threshold=threshold)
        c.get("hook=remember_me&set=a:1")
        c.get("hook=login")
        web.clock.advance(minutes=9)
        assert c.json("show")["data"] == {"a": 1, "user_id": 7}
        web.clock.advance(minutes=11)
        assert c.json("show")["active"] is False

    def test_regenerate_id_can_drop_back_to_the_default(self, web: Web) -> None:
        c = client(web, idle_timeout=timedelta(hours=2))
        c.get("hook=remember_me&set=a:1")
        c.get("hook=login_default_idle")
        web.clock.advance(minutes=30)  # past the session's own 10 minutes, within 2 hours
        assert c.json("show")["active"] is True

    def test_sql_sees_a_per_session_idle_timeout(self, web: Web, engine: Engine) -> None:
        c = client(web, cookie_only_threshold=0)
        c.get("hook=remember_me&set=a:1")
        model = web.model
        active = select(func.count()).select_from(model).where(model.is_active)
        with engine.connect() as conn:
            assert conn.scalar(active) == 1
            row_expiry = conn.scalar(select(model.expires_at))
        assert row_expiry <= web.clock() + timedelta(minutes=10)  # the idle end, not 30 days

    def test_no_touch_keeps_a_polling_request_from_extending_the_idle_timer(self, web: Web) -> None:
        c = client(web, cookie_only_threshold=0, idle_timeout=timedelta(minutes=10))
        c.get("set=a:1")
        for _ in range(3):  # a poll every 3 minutes, each past the touch threshold
            web.clock.advance(minutes=3)
            web.reset()
            assert c.json("hook=no_touch&show")["data"] == {"a": 1}
            assert web.sql.count("UPDATE") == 0
        web.clock.advance(minutes=3)
        assert c.json("show")["active"] is False  # 12 minutes since the last real request

    def test_unix_seconds_and_the_origin_keyword(self, web: Web) -> None:
        mw = web.middleware()
        s = open_session(mw)
        later = web.clock() + timedelta(hours=3)
        s.start(expiration_ts=later.timestamp())
        assert s.expires_at == later
        s.regenerate_id(int(later.timestamp()) + 60)
        assert s.expires_at == later.replace(microsecond=0) + timedelta(seconds=60)

    def test_an_expiry_that_is_not_in_the_future_is_refused(self, web: Web) -> None:
        s = open_session(web.middleware())
        now = web.clock()
        past = [now, now - timedelta(seconds=1), timedelta(0), timedelta(hours=-1), 0, 0.0]
        for expiration in past:
            with pytest.raises(SessionError, match="not in the future"):
                s.start(expiration)
        with pytest.raises(SessionError, match="not in the future"):
            s.start(expiration_ts=now.timestamp())
        assert s.is_active() is False, "nothing was started"
        s.start(expiration_ts=now.timestamp() + 1)
        assert s.expires_at == now + timedelta(seconds=1)


# --------------------------------------------------------------------------- flash


class TestFlash:
    def test_several_messages_survive_a_redirect(self, web: Web) -> None:
        c = client(web)
        c.get("hook=flash_two&status=303")
        assert c.value is not None  # kept in the session the redirect's cookie carries
        assert c.json("hook=pop")["hooks"]["pop"] == ["saved", "careful"]
        assert c.json("hook=pop")["hooks"]["pop"] == []

    def test_with_categories(self, web: Web) -> None:
        c = client(web)
        c.get("hook=flash_two")
        pairs = c.json("hook=pop_pairs")["hooks"]["pop_pairs"]
        assert pairs == [["message", "saved"], ["warning", "careful"]]

    def test_popping_nothing_costs_nothing(self, web: Web) -> None:
        c = client(web, cookie_only_threshold=0)
        web.reset()
        assert c.json("hook=pop")["hooks"]["pop"] == []
        assert c.last == [] and web.counts() == (0, 0, 0, 0)

    def test_an_anonymous_flash_ends_with_its_last_message(self, web: Web) -> None:
        c = client(web)
        c.get("hook=flash_two")
        c.get("hook=pop")
        (gone,) = c.ours()  # only flashes were in it: the session ends with them
        assert gone.deleted


# --------------------------------------------------------------------------- CSRF


class TestCsrf:
    def test_a_visitor_without_a_session_gets_a_lasting_token(self, web: Web) -> None:
        c = client(web)
        token = c.json("hook=token")["hooks"]["token"]
        assert c.value is not None  # a session was started to keep it
        assert c.json("hook=token")["hooks"]["token"] == token
        mw = web.middleware()
        s = open_session(mw, c.value)
        assert s.check_csrf(token) is True

    def test_regenerate_id_changes_the_token(self, web: Web) -> None:
        c = client(web)
        before = c.json("hook=token")["hooks"]["token"]
        c.get("hook=login")
        after = c.json("hook=token")["hooks"]["token"]
        assert after != before

    @pytest.mark.parametrize("bad", [None, "", "x", "é" * 43, 42])
    def test_check_csrf_refuses_what_is_not_the_token(self, web: Web, bad: Any) -> None:
        c = client(web)
        c.get("hook=token")
        s = open_session(web.middleware(), c.value)
        assert s.check_csrf(bad) is False

    def test_another_sessions_token_is_refused(self, web: Web) -> None:
        a, b = client(web), client(web)
        token_a = a.json("hook=token")["hooks"]["token"]
        b.get("hook=token")
        assert open_session(web.middleware(), b.value).check_csrf(token_a) is False
        assert open_session(web.middleware()).check_csrf(token_a) is False  # no session


# --------------------------------------------------------------------------- metadata


class TestMetadata:
    def test_request_columns_describe_the_device_and_network(self, web: Web) -> None:
        store = managed_store(web)
        mw = web.middleware(store, cookie_only_threshold=0)
        environ = {"HTTP_USER_AGENT": FIREFOX, "REMOTE_ADDR": "203.0.113.77"}
        result = call_with(mw, "set=user_id:7&show", environ)
        (listed,) = store.sessions(web.model.user_id == 7)
        assert listed.columns["device"] == "Firefox on Linux"
        assert listed.columns["network"] == "203.0.113.0/24"
        assert listed.hashed_id == web.row_id(result.json["sid"])
        assert result.json["sid"] not in repr(listed)  # never a raw id
        assert listed.last_seen == web.clock()

    def test_request_columns_alone_keep_a_session_in_its_cookie(self, web: Web) -> None:
        store = managed_store(web)
        mw = web.middleware(store)
        result = call_with(mw, "set=a:1", {"HTTP_USER_AGENT": FIREFOX})
        (sc,) = result.set_cookies
        assert sc.value.startswith("v1.d")  # anonymous: nothing to revoke, no row
        assert store.sessions(web.model.device.is_not(None)) == []

    def test_revoke_others_keeps_this_session(self, web: Web) -> None:
        store = managed_store(web)
        hooks = actions()
        hooks["others"] = lambda s: s.revoke_others(web.model.user_id == 7)
        mw = web.middleware(store, hooks=hooks, cookie_only_threshold=0)
        laptop, phone, tablet = (Client(mw) for _ in range(3))
        for device in (laptop, phone, tablet):
            device.get("set=user_id:7")
        assert len(store.sessions(web.model.user_id == 7)) == 3
        assert laptop.json("hook=others")["hooks"]["others"] == 2
        assert laptop.json("show")["active"] is True
        assert phone.json("show")["active"] is False
        assert tablet.json("show")["active"] is False
        assert len(store.sessions(web.model.user_id == 7)) == 1

    def test_hashed_id_matches_the_listing_and_never_the_cookie(self, web: Web) -> None:
        store = managed_store(web)
        hooks = actions()
        hooks["hashed"] = lambda s: s.hashed_id
        mw = web.middleware(store, hooks=hooks, cookie_only_threshold=0)
        client = Client(mw)
        assert client.json("hook=hashed")["hooks"]["hashed"] is None  # no session yet
        shown = client.json("set=user_id:9&show&hook=hashed")
        (listed,) = store.sessions(web.model.user_id == 9)
        assert shown["hooks"]["hashed"] == listed.hashed_id == web.row_id(shown["sid"])
        assert shown["hooks"]["hashed"] != shown["sid"]

    def test_a_hook_of_the_wrong_shape_is_refused(self, web: Web) -> None:
        with pytest.raises(Exception, match="must take"):
            web.new_store(columns={"device": lambda: None})

    def test_helpers(self) -> None:
        assert metadata.client_network({"REMOTE_ADDR": "2001:db8:1:2::9"}) == "2001:db8:1::/48"
        assert metadata.client_network({"REMOTE_ADDR": "nonsense"}) is None
        assert metadata.client_network({}, ipv4_prefix=32) is None
        with pytest.raises(ValueError, match="prefix"):
            metadata.client_network({}, ipv4_prefix=33)
        assert metadata.device({"HTTP_USER_AGENT": "curl/8.5"}) == "unknown device"
        iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1"
        assert metadata.device({"HTTP_USER_AGENT": iphone}) == "Safari on iOS"
        assert metadata.user_agent({"HTTP_USER_AGENT": "x" * 500}, limit=10) == "x" * 10


def call_with(mw: Any, query: str, extra: dict[str, str]) -> Any:
    """One request with extra environ entries (headers, the client address)."""
    from .webapp import Result

    environ = environ_for()
    environ["QUERY_STRING"] = query
    environ.update(extra)
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append((status, headers))
        return lambda data: None

    body = b"".join(mw(environ, start_response))
    status, headers = seen[-1]
    return Result(int(status.split()[0]), headers, body)


# --------------------------------------------------------------------------- hooks


class Audit:
    """Records every hook call, as an audit table would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def on_created(self, hashed: str) -> None:
        self.calls.append(("created", (hashed,)))

    def on_regenerated(self, old: str, new: str) -> None:
        self.calls.append(("regenerated", (old, new)))

    def on_ended(self, hashed: str) -> None:
        self.calls.append(("ended", (hashed,)))

    def on_revoked(self, count: int, criteria: Any) -> None:
        self.calls.append(("revoked", (count,)))

    def on_expired(self, hashed: str) -> None:
        self.calls.append(("expired", (hashed,)))


class TestHooks:
    @pytest.mark.parametrize("threshold", [4096, 0], ids=["cookie", "server"])
    def test_each_hook_is_called_once_with_hashed_ids(self, web: Web, threshold: int) -> None:
        audit = Audit()
        c = Client(web.middleware(session_hooks=audit, cookie_only_threshold=threshold))
        first = c.json("set=a:1&show")["sid"]
        c.get("set=b:2")  # not a new session: no second on_created
        second = c.json("regen&show")["sid"]
        c.get("terminate")
        assert audit.calls == [
            ("created", (web.row_id(first),)),
            ("regenerated", (web.row_id(first), web.row_id(second))),
            ("ended", (web.row_id(second),)),
        ]
        assert all(first not in str(args) and second not in str(args) for _, args in audit.calls)

    def test_expired_on_read(self, web: Web) -> None:
        """A stored session found idle for too long is deleted, and the hook says so."""
        audit = Audit()
        mw = web.middleware(
            session_hooks=audit, cookie_only_threshold=0, idle_timeout=timedelta(minutes=10)
        )
        c = Client(mw)
        sid = c.json("set=a:1&show")["sid"]
        web.clock.advance(minutes=11)
        assert c.json("show")["active"] is False
        assert audit.calls[-1] == ("expired", (web.row_id(sid),))
        assert web.row(sid) is None

    def test_a_failing_hook_is_logged_and_the_operation_stands(
        self, web: Web, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(*args: Any) -> None:
            raise RuntimeError("audit table unavailable")

        c = Client(web.middleware(session_hooks={"on_ended": broken, "on_created": broken}))
        c.get("set=a:1")
        with caplog.at_level(logging.ERROR, logger="sa_sessions.hooks"):
            result = c.get("terminate")
        assert result.status_int == 200
        assert [sc.deleted for sc in c.ours()] == [True]
        assert "on_ended hook failed" in caplog.text

    def test_unknown_or_uncallable_hooks_are_refused(self, web: Web) -> None:
        with pytest.raises(Exception, match="unknown hook"):
            web.middleware(session_hooks={"on_login": print})
        with pytest.raises(Exception, match="not callable"):
            web.middleware(session_hooks={"on_ended": "audit"})


def test_the_demo_store_has_the_columns_it_lists(web: Web) -> None:
    """SessionInfo carries the model's own columns, never ``data``."""
    store = managed_store(web)
    store.create({"user_id": 3}, expires_at=web.clock() + timedelta(hours=1))
    (info,) = store.sessions(web.model.user_id == 3)
    assert set(info.columns) == {"user_id", "device", "network"}
    assert not hasattr(info, "data")
