"""Cookie lifetimes and attributes: browser-session cookies, ``permanent``, CHIPS, pinning.

End to end through the middleware on SQLite + in-process cache, MariaDB + memcached and
PostgreSQL + Redis.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from sa_sessions import SessionConfigError

from .webapp import Client
from .webapp import Web
from .webapp import clock_fixture  # noqa: F401
from .webapp import cookie_codec
from .webapp import db_kind_fixture  # noqa: F401
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401


def hooks() -> dict[str, Any]:
    def permanent(session: Any) -> bool:
        session.permanent = True
        return bool(session.permanent)

    def browser_session(session: Any) -> bool:
        session.permanent = False
        return bool(session.permanent)

    def pin(session: Any) -> str:
        session.save(persist_even_if_using_cookie=True)
        return "pinned"

    def new(session: Any) -> bool:
        return bool(session.new)

    return {"permanent": permanent, "browser": browser_session, "pin": pin, "new": new}


def client(web: Web, *, https: bool = False, **options: Any) -> Client:
    return web.client(https=https, hooks=hooks(), **options)


class TestPersistent:
    def test_a_browser_session_cookie_has_neither_expires_nor_max_age(self, web: Web) -> None:
        c = client(web, persistent=False, lifetime=timedelta(hours=1))
        c.get("set=a:1")
        (sc,) = c.ours()
        assert "expires" not in sc.attrs and "max-age" not in sc.attrs
        assert c.json("show")["data"] == {"a": 1}
        web.clock.advance(hours=1, seconds=1)  # the signed expiry still ends it
        assert c.json("show")["active"] is False

    def test_a_server_side_browser_session_cookie_stays_one(self, web: Web) -> None:
        c = client(web, persistent=False, cookie_only_threshold=0)
        c.get("set=a:1")
        c.get("set=b:2")  # a write re-issues the id cookie: still without an expiry
        (sc,) = c.ours()
        assert c.kind() == "i" and "max-age" not in sc.attrs
        assert cookie_codec().decode(sc.value, now=web.clock()).extra["p"] == 0

    def test_permanent_turns_it_into_a_lasting_cookie_and_back(self, web: Web) -> None:
        c = client(web, persistent=False)
        c.get("set=a:1")
        assert c.json("hook=permanent")["hooks"] == {"permanent": True}
        (sc,) = c.ours()  # only the cookie changed: sent again with an expiry
        assert "max-age" in sc.attrs
        c.get("set=b:2")
        (sc,) = c.ours()
        assert "max-age" in sc.attrs  # remembered by the cookie
        c.get("hook=browser")
        (sc,) = c.ours()
        assert "max-age" not in sc.attrs

    def test_permanent_follows_the_middleware_default(self, web: Web) -> None:
        assert client(web).json("get=x&hook=new")["hooks"] == {"new": False}
        c = client(web)
        c.get("set=a:1")
        assert c.json("hook=permanent")["hooks"] == {"permanent": True}
        assert c.ours() == []  # already permanent: nothing to send


class TestPartitioned:
    @pytest.mark.parametrize("secure", [None, False])
    def test_partitioned_needs_secure(self, web: Web, secure: bool | None) -> None:
        with pytest.raises(SessionConfigError, match="partitioned=True requires secure=True"):
            web.middleware(partitioned=True, secure=secure)

    def test_partitioned_cookies_are_set_and_deleted_partitioned(self, web: Web) -> None:
        c = client(web, https=True, partitioned=True, secure=True, samesite="none")
        c.get("set=a:1")
        (sc,) = c.ours()
        assert "partitioned" in sc.flags and "secure" in sc.flags
        assert sc.name == "__Host-session"
        c.get("terminate")
        (gone,) = c.ours()
        assert gone.deleted and "partitioned" in gone.flags

    def test_the_attribute_counts_in_the_cookie_budget(self, web: Web) -> None:
        c = client(web, https=True, partitioned=True, secure=True)
        for n in range(1000, 4000, 200):
            c.get(f"rand=x:{n}")  # every Set-Cookie line stays within 4096 bytes
        assert c.kind() == "i"


class TestNewAndPinned:
    def test_new_is_true_only_in_the_request_that_began_it(self, web: Web) -> None:
        c = client(web)
        assert c.json("set=a:1&hook=new")["hooks"] == {"new": True}
        assert c.json("hook=new")["hooks"] == {"new": False}

    def test_save_true_keeps_a_small_session_on_the_server_from_then_on(self, web: Web) -> None:
        c = client(web)
        c.get("set=a:1")
        assert c.kind() == "d"
        c.get("hook=pin")
        assert c.kind() == "i"  # small, and yet server-side: revocable
        c.get("set=b:2&del=a")
        assert c.kind() == "i"
        sid = c.json("show")["sid"]
        assert web.store.revoke(web.model.id == web.row_id(sid)) == 1
        assert c.json("show")["active"] is False


def test_the_package_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("sa_sessions").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
