"""Log out everywhere: ``store.revoke(WebSession.user_id == 42)``.

Sessions that carry a derived-column value (here ``user_id``) always live
server-side, even when small enough for a cookie, so revoking their rows and
cache entries really logs the user out.  The cost: such a request reads one
cache entry, and no SQL on a hit.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import select

from sa_sessions import SessionMiddleware
from sa_sessions import SessionStore
from sa_sessions import memory_region
from sa_sessions.cache.entry import Kind
from sa_sessions.wsgi import ENVIRON_KEY

from .conftest import OTHER_SECRET
from .conftest import SECRET
from .conftest import StatementLog
from .test_store import cache_kind_of
from .test_store import meta


@pytest.fixture
def store(model: type[Any], engine: Engine) -> SessionStore[Any]:
    return SessionStore(
        model,
        engine,
        region=memory_region(),
        secret_keys=SECRET,
        columns={"user_id": lambda data: data.get("user_id")},
    )


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """/login?<uid> logs in, /cart adds to an anonymous cart, /whoami reads."""
    session = environ[ENVIRON_KEY]
    path = environ["PATH_INFO"]
    if path == "/login":
        session["user_id"] = int(environ["QUERY_STRING"])
    elif path == "/cart":
        session["cart"] = ["book"]
    body = str(session.get("user_id")).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


class Browser:
    """Keeps the session cookie between requests to the middleware."""

    def __init__(self, middleware: SessionMiddleware) -> None:
        self.middleware = middleware
        self.cookie: str | None = None

    def get(self, path: str, query: str = "") -> str:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
        }
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        headers: list[tuple[str, str]] = []

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None, /
        ) -> Callable[[bytes], object]:
            headers.extend(response_headers)
            return lambda data: None

        body = b"".join(self.middleware(environ, start_response))
        for name, value in headers:
            if name.lower() == "set-cookie":
                self.cookie = value.split(";", 1)[0]
        return body.decode()


def rows_by_user(engine: Engine, store: SessionStore[Any]) -> list[Any]:
    with engine.connect() as conn:
        return sorted(conn.scalars(select(store.table.c.user_id)), key=lambda v: v or -1)


def test_revoke_deletes_rows_and_ends_cache_entries(
    store: SessionStore[Any], engine: Engine
) -> None:
    ids: dict[int, list[str]] = {42: [], 7: []}
    for uid, count in ((42, 3), (7, 1)):
        for _ in range(count):
            ids[uid].append(store.create({"user_id": uid}, expires_at=meta().expires_at).session_id)
    for sid in ids[42]:
        assert cache_kind_of(store, sid) is Kind.COPY
    assert store.revoke(store.model.user_id == 42) == 3
    for sid in ids[42]:
        assert cache_kind_of(store, sid) is Kind.ENDED
        assert store.load(sid) is None
    assert cache_kind_of(store, ids[7][0]) is Kind.COPY
    assert rows_by_user(engine, store) == [7]
    assert store.revoke(store.model.user_id == 42) == 0


def test_revoke_needs_a_criterion(store: SessionStore[Any]) -> None:
    with pytest.raises(ValueError, match="at least one criterion"):
        store.revoke()


def test_log_out_everywhere_through_the_middleware(
    store: SessionStore[Any], engine: Engine, sql_log: StatementLog
) -> None:
    middleware = SessionMiddleware(app, store, cookie_key=OTHER_SECRET)
    laptop, phone, other, anonymous = (Browser(middleware) for _ in range(4))
    assert laptop.get("/login", "42") == "42"
    assert phone.get("/login", "42") == "42"
    assert other.get("/login", "7") == "7"
    anonymous.get("/cart")
    # Tiny sessions, but the ones with a user id live server-side: revocable.
    assert rows_by_user(engine, store) == [7, 42, 42]

    assert store.cache is not None
    store.cache.stats.reset()
    sql_log.clear()
    assert laptop.get("/whoami") == "42"
    assert sql_log.statements == []  # 0 SQL on a cache hit
    assert store.cache.stats.gets == 1  # 1 cache get per request

    assert store.revoke(store.model.user_id == 42) == 2
    assert laptop.get("/whoami") == "None"
    assert phone.get("/whoami") == "None"
    assert other.get("/whoami") == "7"
    assert rows_by_user(engine, store) == [7]


def test_cookie_sessions_without_user_stay_in_the_cookie(
    store: SessionStore[Any], engine: Engine
) -> None:
    """The other side of the trade-off: no row, nothing to revoke."""
    middleware = SessionMiddleware(app, store, cookie_key=OTHER_SECRET)
    browser = Browser(middleware)
    browser.get("/cart")
    assert browser.cookie is not None
    assert rows_by_user(engine, store) == []
