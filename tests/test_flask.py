"""FlaskSessionInterface end to end: Flask's test client, Flask-Login, Flask-WTF, the examples.

Runs on SQLite + the in-process cache and on MariaDB + a real memcached (the ``web``
fixture of tests/webapp.py); the examples run on a SQLite file and on a private MariaDB
database with memcached, in-process and behind real HTTP servers.
"""

from __future__ import annotations

import http.cookiejar
import logging
import os
import re
import select
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import flask
import flask_login
import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import select as sql_select
from werkzeug.test import TestResponse

import sa_sessions.flask as sa_flask
from sa_sessions import Session
from sa_sessions import SessionBackendUnavailable
from sa_sessions import SessionConfigError
from sa_sessions import SessionError
from sa_sessions import SessionMiddleware
from sa_sessions import SessionStore
from sa_sessions import get_current_session
from sa_sessions import memory_region
from sa_sessions.flask import FlaskSession
from sa_sessions.flask import FlaskSessionInterface
from sa_sessions.flask import session
from sa_sessions.wsgi import ENVIRON_KEY

from .conftest import EXAMPLES
from .conftest import SECRET
from .conftest import MemcachedProcess
from .conftest import free_port
from .conftest import load_example
from .conftest import make_engine
from .conftest import recording_statements
from .webapp import CONFIGS
from .webapp import SetCookie
from .webapp import Web
from .webapp import clock_fixture  # noqa: F401
from .webapp import parse_set_cookie
from .webapp import random_text
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401

COOKIE = "session"
#: Flask-Login's remember cookie uses datetime.utcnow(), deprecated since Python 3.12.
UTCNOW_WARNING = "ignore:datetime.datetime.utcnow:DeprecationWarning"


FLASK_CONFIGS = [p for p in CONFIGS if p.id in ("sqlite-memory", "mariadb-memcached")]


@pytest.fixture(params=FLASK_CONFIGS, name="db_kind")
def db_kind_fixture(request: pytest.FixtureRequest) -> str:
    """SQLite + the in-process cache, and MariaDB + memcached."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _no_demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SA_SESSIONS_DB_URL",
        "SA_SESSIONS_MEMCACHED",
        "SA_SESSIONS_COOKIE_KEY",
        "FLASK_SECRET_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- helpers


def ours(res: TestResponse) -> list[SetCookie]:
    """The session Set-Cookie lines of a response."""
    lines = [line for line in res.headers.getlist("Set-Cookie") if line.startswith(f"{COOKIE}=")]
    return [parse_set_cookie(line) for line in lines]


def cookie_of(client: FlaskClient) -> str | None:
    cookie = client.get_cookie(COOKIE)
    return None if cookie is None else cookie.value


def replay(app: flask.Flask, value: str, path: str) -> TestResponse:
    """A request from another browser that presents only this session cookie."""
    return app.test_client(use_cookies=False).get(path, headers={"Cookie": f"{COOKIE}={value}"})


def real_session() -> FlaskSession:
    """The object behind the flask.session proxy."""
    found = flask.session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(found, FlaskSession)
    return found


class Teapot(Exception):
    """An application error with a handler of its own."""


def make_app(
    store: SessionStore[Any] | None,
    *,
    init: bool = True,
    propagate: bool = False,
    **options: Any,
) -> flask.Flask:
    """A Flask app on FlaskSessionInterface; ``app.extensions["seen"]`` records things."""
    app = flask.Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = propagate  # False: unhandled errors are 500 pages
    options.setdefault("cookie_key", SECRET)
    interface = FlaskSessionInterface(store, **options)
    if init:
        interface.init_app(app)
    else:
        app.session_interface = interface
    seen: dict[str, Any] = {}
    app.extensions["seen"] = seen

    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    @app.get("/count")
    def count() -> str:
        return str(session.increment("n"))

    @app.get("/flask-count")
    def flask_count() -> str:
        flask.session["m"] = flask.session.get("m", 0) + 1  # Flask's own idiom
        return str(flask.session["m"])

    @app.get("/big")
    def big() -> str:
        session["big"] = random_text(6000)  # incompressible: cannot fit a cookie
        return "stored"

    @app.get("/show")
    def show() -> dict[str, Any]:
        return {k: len(v) if k == "big" else v for k, v in session.items()}

    @app.get("/redirect")
    def go() -> Any:
        session["via"] = "redirect"
        return flask.redirect("/show")

    @app.get("/abort")
    def forbidden() -> str:
        session["via"] = "abort"
        flask.abort(403)

    @app.get("/crash")
    def crash() -> str:
        session["via"] = "crash"
        raise RuntimeError("view failed on purpose")

    @app.get("/teapot")
    def teapot() -> str:
        session["via"] = "teapot"
        raise Teapot

    @app.errorhandler(Teapot)
    def handle_teapot(error: Teapot) -> tuple[str, int]:
        return "I am a teapot", 418

    @app.get("/cached")
    def cached() -> tuple[str, dict[str, str]]:
        if flask.request.args.get("read"):
            session.get("cached")
        else:
            session["cached"] = True
        return "ok", {"Cache-Control": "public, max-age=60"}

    @app.get("/state")
    def state() -> dict[str, Any]:
        before = {
            "accessed": flask.session.accessed,  # looking it up is not reading it
            "modified": flask.session.modified,
            "new": flask.session.new,
        }
        flask.session.get("anything")
        after_read = {"accessed": flask.session.accessed, "modified": flask.session.modified}
        if flask.request.args.get("write"):
            flask.session["w"] = flask.request.args["write"]
        return {
            "before": before,
            "after_read": after_read,
            "new": flask.session.new,
            "modified": flask.session.modified,
            "permanent": flask.session.permanent,
        }

    @app.get("/browser-session")
    def browser_session() -> str:
        flask.session.permanent = False
        flask.session["short"] = True
        return "ok"

    @app.get("/current")
    def current() -> str:
        current = get_current_session()
        assert current is real_session()
        assert current is flask.request.environ[ENVIRON_KEY]
        assert current is sa_flask.session._get_current_object()  # type: ignore[attr-defined]
        current["from_current"] = True
        return "same"

    @app.teardown_request
    def remember_current(error: BaseException | None) -> None:
        try:
            seen["teardown"] = get_current_session()
        except SessionError:  # a test client's session_transaction() handles no request
            seen["teardown"] = None

    return app


# --------------------------------------------------------------------------- basics


def test_flask_session_is_an_sa_sessions_session_and_its_properties_win() -> None:
    assert issubclass(FlaskSession, Session)
    assert issubclass(FlaskSession, flask.sessions.SessionMixin)
    for name in ("permanent", "modified"):
        assert getattr(FlaskSession, name) is getattr(Session, name), name
    for name in ("new", "accessed"):
        assert isinstance(getattr(FlaskSession, name), property), name
    assert sa_flask.session is flask.session, "the typed alias is Flask's own proxy"


def test_untouched_view_costs_nothing(web: Web) -> None:
    app = make_app(web.store, clock=web.clock)
    client = app.test_client()
    client.get("/big")
    assert cookie_of(client).startswith("v1.i")  # type: ignore[union-attr]
    for with_cookie in (True, False):
        web.reset()
        res = (client if with_cookie else app.test_client()).get("/untouched")
        assert res.text == "ok"
        assert web.counts() == (0, 0, 0, 0), "no SQL, no cache call"
        assert res.headers.getlist("Set-Cookie") == []
        assert "Vary" not in res.headers
        assert "Cache-Control" not in res.headers
    assert web.rows() == 1


def test_a_read_without_a_session_sets_no_cookie(web: Web) -> None:
    res = make_app(web.store, clock=web.clock).test_client().get("/show")
    assert res.json == {}
    assert res.headers.getlist("Set-Cookie") == []
    assert res.headers["Vary"] == "Cookie", "the answer depends on the cookie"


def test_counter_across_requests_lives_in_the_cookie(web: Web) -> None:
    client = make_app(web.store, clock=web.clock).test_client()
    web.reset()
    for visit in (1, 2, 3):
        res = client.get("/count")
        assert res.text == str(visit)
        assert len(ours(res)) == 1
        assert res.headers["Cache-Control"] == "no-store"
        assert res.headers["Vary"] == "Cookie"
    for visit in (1, 2):
        assert client.get("/flask-count").text == str(visit)
    assert cookie_of(client).startswith("v1.d")  # type: ignore[union-attr]
    assert web.counts() == (0, 0, 0, 0), "a cookie session runs no SQL and no cache call"
    assert web.rows() == 0
    res = client.get("/show")
    assert res.json == {"n": 3, "m": 2}
    assert ours(res) == [], "reading a session does not rewrite it"


def test_big_session_is_stored_server_side(web: Web) -> None:
    app = make_app(web.store, clock=web.clock)
    client = app.test_client()
    res = client.get("/big")
    [cookie] = ours(res)
    assert cookie.value.startswith("v1.i"), "the cookie carries only the signed id"
    assert web.rows() == 1
    web.reset()
    res = client.get("/show")
    assert res.json == {"big": 6000}
    assert ours(res) == []
    sql, gets, sets, deletes = web.counts()
    assert (sql, sets, deletes) == (0, 0, 0), "a read is served by the cache"
    assert gets >= 1
    assert replay(app, cookie.value, "/show").json == {"big": 6000}, "another process reads it"


@pytest.mark.parametrize(
    ("path", "status"),
    [("/redirect", 302), ("/abort", 403), ("/teapot", 418), ("/crash", 500)],
)
def test_every_response_path_carries_the_cookie(
    web: Web, path: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app(web.store, clock=web.clock).test_client()
    with caplog.at_level(logging.CRITICAL):  # the crash's traceback is Flask's business
        res = client.get(path)
    assert res.status_code == status
    [cookie] = ours(res)
    assert not cookie.deleted
    assert "httponly" in cookie.flags and cookie.attrs["samesite"] == "Lax"
    assert res.headers["Cache-Control"] == "no-store"
    assert client.get("/show").json == {"via": path.strip("/")}, "the session was saved"


def test_a_cookie_is_never_cached(web: Web) -> None:
    client = make_app(web.store, clock=web.clock).test_client()
    res = client.get("/cached")
    assert len(ours(res)) == 1
    assert res.headers.getlist("Cache-Control") == ["no-store"]
    res = client.get("/cached?read=1")  # no cookie to send: the view's header stays
    assert ours(res) == []
    assert res.headers.getlist("Cache-Control") == ["public, max-age=60"]


def test_new_modified_and_accessed_are_sa_sessions(web: Web) -> None:
    client = make_app(web.store, clock=web.clock).test_client()
    first = client.get("/state?write=1").json
    assert first["before"] == {"accessed": False, "modified": False, "new": False}
    assert first["after_read"] == {"accessed": True, "modified": False}
    assert first["new"] is True and first["modified"] is True
    second = client.get("/state").json
    assert second["new"] is False, "begun in an earlier request"
    assert second["modified"] is False, "the mixin would say True"


def test_permanent_is_the_cookie_expiry(web: Web) -> None:
    client = make_app(web.store, clock=web.clock).test_client()
    res = client.get("/state?write=1")
    assert res.json["permanent"] is True, "the persistent option (default True)"
    [cookie] = ours(res)
    assert "max-age" in cookie.attrs and "expires" in cookie.attrs
    [cookie] = ours(client.get("/browser-session"))
    assert "max-age" not in cookie.attrs and "expires" not in cookie.attrs
    assert client.get("/state").json["permanent"] is False, "kept by the session"

    browser = make_app(web.store, clock=web.clock, persistent=False).test_client()
    res = browser.get("/state?write=1")
    assert res.json["permanent"] is False
    [cookie] = ours(res)
    assert "max-age" not in cookie.attrs


def test_get_current_session_in_the_view_and_in_teardown(web: Web) -> None:
    app = make_app(web.store, clock=web.clock)
    client = app.test_client()
    res = client.get("/current")
    assert res.text == "same"
    assert client.get("/show").json == {"from_current": True}
    seen = app.extensions["seen"]["teardown"]
    assert isinstance(seen, FlaskSession)
    with pytest.raises(SessionError):
        get_current_session()  # the request is over
    with app.test_request_context("/"):
        assert get_current_session() is real_session()
    with pytest.raises(SessionError):
        get_current_session()


def test_session_transaction_of_the_test_client(web: Web) -> None:
    client = make_app(web.store, clock=web.clock).test_client()
    with client.session_transaction() as sess:
        assert isinstance(sess, FlaskSession)
        sess["n"] = 41
    assert client.get("/count").text == "42"
    with pytest.raises(SessionError):
        get_current_session()


def test_options_are_checked() -> None:
    with pytest.raises(SessionConfigError):
        FlaskSessionInterface(cookie_key=b"short")
    with pytest.raises(SessionConfigError, match="retry_after"):
        FlaskSessionInterface(cookie_key=SECRET, retry_after=-1)
    settings = FlaskSessionInterface(cookie_key=SECRET).settings
    with pytest.raises(SessionConfigError, match="either"):
        FlaskSessionInterface(settings=settings, cookie_key=SECRET)
    assert FlaskSessionInterface(settings=settings).settings is settings


def test_refuses_to_run_inside_session_middleware() -> None:
    app = make_app(None, propagate=True)
    wrapped = SessionMiddleware(app.wsgi_app, cookie_key=SECRET)
    app.wsgi_app = wrapped  # type: ignore[method-assign]
    with pytest.raises(SessionConfigError, match="not both"):
        app.test_client().get("/count")


def test_cookie_only_sessions_without_a_store() -> None:
    client = make_app(None).test_client()
    assert client.get("/count").text == "1"
    assert client.get("/count").text == "2"


# --------------------------------------------------------------------------- Flask-Login


class User(flask_login.UserMixin):  # type: ignore[misc]
    def __init__(self, user_id: int, name: str) -> None:
        self.id = user_id
        self.name = name


USERS = {"1": User(1, "alice"), "2": User(2, "bob")}


def login_app(store: SessionStore[Any], clock: Any) -> flask.Flask:
    """make_app plus Flask-Login, logging in the way the example recommends."""
    app = make_app(store, clock=clock)
    app.secret_key = "flask-login-remember-cookie-key-0123456789"
    manager = flask_login.LoginManager(app)
    manager.user_loader(USERS.get)

    @app.get("/login/<user_id>")
    def login(user_id: str) -> str:
        session.regenerate_id()  # fixation: the pre-login id dies here
        flask_login.login_user(USERS[user_id], remember="remember" in flask.request.args)
        return "in"

    @app.get("/me")
    def me() -> str:
        user = flask_login.current_user
        return str(user.name) if user.is_authenticated else "anonymous"

    @app.get("/logout")
    def logout() -> str:
        session.terminate()  # first: Flask-Login may then note the remember cookie to clear
        flask_login.logout_user()
        return "out"

    return app


def user_store(web: Web) -> SessionStore[Any]:
    """Logged-in sessions live in a row with their user id (revocable)."""

    def user_id(data: Any) -> int | None:
        value = data.get("_user_id")
        return int(value) if value is not None else None

    return web.new_store(columns={"user_id": user_id})


def user_rows(web: Web) -> list[int | None]:
    with web.engine.connect() as conn:
        return [row[0] for row in conn.execute(sql_select(web.model.user_id))]


def test_flask_login_login_current_user_and_logout(web: Web) -> None:
    app = login_app(user_store(web), web.clock)
    client = app.test_client()
    assert client.get("/me").text == "anonymous"
    client.get("/big")  # an anonymous session big enough for a row
    anonymous = cookie_of(client)
    assert anonymous is not None and anonymous.startswith("v1.i")
    assert user_rows(web) == [None]

    res = client.get("/login/1")
    assert res.text == "in"
    [cookie] = ours(res)
    assert cookie.value != anonymous
    assert client.get("/me").text == "alice"
    assert user_rows(web) == [1], "regenerate_id() deleted the pre-login row"
    assert client.get("/show").json["big"] == 6000, "the data moved to the new id"
    stale = replay(app, anonymous, "/me")
    assert stale.text == "anonymous", "the pre-login cookie is dead"
    logged_in = cookie_of(client)
    assert logged_in is not None

    res = client.get("/logout")
    [deleted] = ours(res)
    assert deleted.deleted
    assert user_rows(web) == [], "the session row is deleted at logout"
    assert client.get("/me").text == "anonymous"
    assert replay(app, logged_in, "/me").text == "anonymous", "the old cookie is dead"
    assert replay(app, logged_in, "/show").json == {}


def test_flask_login_fixation_cookie_planted_before_login(web: Web) -> None:
    app = login_app(user_store(web), web.clock)
    attacker = app.test_client()
    attacker.get("/count")
    planted = cookie_of(attacker)
    assert planted is not None
    victim = app.test_client(use_cookies=False)
    res = victim.get("/login/2", headers={"Cookie": f"{COOKIE}={planted}"})
    [issued] = ours(res)
    assert issued.value != planted
    assert replay(app, planted, "/me").text == "anonymous"
    assert replay(app, issued.value, "/me").text == "bob"


@pytest.mark.filterwarnings(UTCNOW_WARNING)
def test_flask_login_remember_cookie_is_left_to_flask_login(web: Web) -> None:
    app = login_app(user_store(web), web.clock)
    client = app.test_client()
    res = client.get("/login/1?remember=1")
    assert [c for c in res.headers.getlist("Set-Cookie") if c.startswith("remember_token=")]
    assert len(ours(res)) == 1
    remember = client.get_cookie("remember_token")
    assert remember is not None

    # The session is gone (another device revoked it); the remember cookie logs back in.
    web.store.revoke(web.model.user_id == 1)
    assert client.get("/me").text == "alice"
    assert user_rows(web) == [1], "Flask-Login restored the login into a new session"

    res = client.get("/logout")
    cleared = [c for c in res.headers.getlist("Set-Cookie") if c.startswith("remember_token=")]
    assert len(cleared) == 1 and ("Max-Age=0" in cleared[0] or "1970" in cleared[0])
    assert client.get_cookie("remember_token") is None
    assert client.get("/me").text == "anonymous"
    assert user_rows(web) == []


# --------------------------------------------------------------------------- outages


@pytest.fixture
def dead_engine(db_kind: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine of the same kind whose database cannot be reached.

    MariaDB: nothing listens on its port.  SQLite: its file's directory does not exist.
    """
    if db_kind == "mysql":
        url = f"mysql+mysqldb://root@127.0.0.1:{free_port()}/test"
    else:
        url = f"sqlite:///{tmp_path}/no-such-directory/sessions.db"
    engine = create_engine(url)
    yield engine
    engine.dispose()


@dataclass
class Outage:
    """A server-side session made while the database was up, and a store that is down."""

    web: Web
    cookie: str
    down: SessionStore[Any]

    def app(self, **kwargs: Any) -> flask.Flask:
        return make_app(self.down, clock=self.web.clock, **kwargs)

    def get(self, app: flask.Flask, path: str) -> TestResponse:
        return replay(app, self.cookie, path)


@pytest.fixture
def outage(web: Web, dead_engine: Engine) -> Outage:
    client = make_app(web.store, clock=web.clock).test_client()
    client.get("/big")
    cookie = cookie_of(client)
    assert cookie is not None and cookie.startswith("v1.i")
    down = SessionStore(
        web.model, dead_engine, region=memory_region(), secret_keys=SECRET, clock=web.clock
    )
    return Outage(web, cookie, down)


def assert_unavailable(res: TestResponse) -> None:
    assert res.status_code == 503
    assert res.headers["Retry-After"] == "5"
    assert res.headers["Cache-Control"] == "no-store"
    assert res.headers.getlist("Set-Cookie") == []


@pytest.mark.parametrize("propagate", [False, True], ids=["production", "testing"])
def test_outage_in_a_view_is_a_503_with_init_app(
    outage: Outage, propagate: bool, caplog: pytest.LogCaptureFixture
) -> None:
    app = outage.app(propagate=propagate)
    with caplog.at_level(logging.ERROR):
        res = outage.get(app, "/show")
    assert_unavailable(res)
    assert "Sessions are temporarily unavailable" in res.text
    assert [r for r in caplog.records if r.exc_info] == [], "no traceback"
    assert any(r.name == "sa_sessions.flask" for r in caplog.records)
    res = replay(make_app(outage.web.store, clock=outage.web.clock), outage.cookie, "/show")
    assert res.json == {"big": 6000}, "the session survived the outage"


def test_outage_uses_the_apps_own_503_page(outage: Outage) -> None:
    app = outage.app()

    @app.errorhandler(503)
    def unavailable(error: Exception) -> tuple[str, int]:
        return f"custom page, session {dict(flask.session)}", 503

    res = outage.get(app, "/show")
    assert_unavailable(res)
    assert res.text == "custom page, session {}", "the given-up session reads as empty"


def test_outage_without_init_app_is_still_a_503(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    app = outage.app(init=False)
    with caplog.at_level(logging.CRITICAL):  # Flask logs the unhandled exception
        res = outage.get(app, "/show")
    assert_unavailable(res)
    testing = outage.app(init=False, propagate=True)
    with pytest.raises(SessionBackendUnavailable):
        outage.get(testing, "/show")


@pytest.mark.parametrize("path", ["/show", "/untouched"])
def test_outage_with_flask_login_hooks(
    outage: Outage, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask-Login reads the session in after_request, also after the 503 and for a view
    that never touched it (then the failure happens after the view: Flask's 500 path)."""
    app = outage.app()
    flask_login.LoginManager(app).user_loader(USERS.get)
    with caplog.at_level(logging.CRITICAL):
        res = outage.get(app, path)
    assert_unavailable(res)


@pytest.mark.parametrize("propagate", [False, True], ids=["production", "testing"])
def test_outage_while_saving_turns_the_response_into_a_503(
    outage: Outage, propagate: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        res = outage.app(propagate=propagate).test_client().get("/big")  # the INSERT fails
    assert_unavailable(res)
    assert "stored" not in res.text
    assert [r for r in caplog.records if r.exc_info] == [], "no traceback"


def test_outage_outside_the_session_sends_no_cookie(outage: Outage) -> None:
    """The session itself is fine (a cookie session) and changed; the view's own use of
    the store fails: the 503 must not carry the changed session's cookie."""
    app = outage.app()

    @app.get("/revoke")
    def revoke() -> str:
        session["changed"] = True
        outage.down.revoke(outage.web.model.user_id == 1)
        return "revoked"

    client = app.test_client()
    client.get("/count")
    before = cookie_of(client)
    assert before is not None and before.startswith("v1.d")
    res = client.get("/revoke")
    assert_unavailable(res)
    assert cookie_of(client) == before


def test_a_given_up_session_is_never_saved(outage: Outage) -> None:
    app = outage.app()

    @app.get("/degraded")
    def degraded() -> str:
        with suppress(SessionBackendUnavailable):
            session.get("big")
        session["after"] = 1  # not saved: the browser keeps its cookie
        with pytest.raises(SessionBackendUnavailable):
            session.save()
        return f"failed={real_session().failed}"

    res = outage.get(app, "/degraded")
    assert res.text == "failed=True"
    assert res.headers.getlist("Set-Cookie") == []
    assert res.headers["Vary"] == "Cookie", "the page still depended on the cookie"


# --------------------------------------------------------------------------- the examples


def test_quickstart_main_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_example("quickstart_flask").main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "GET /        Hello! Visits in this session: 1",
        "GET /        Hello! Visits in this session: 2",
        "GET /        Hello! Visits in this session: 3",
        "GET /logout  Bye.",
        "GET /        Hello! Visits in this session: 1",
    ]
    assert (tmp_path / "quickstart.sqlite3").exists()


def test_quickstart_counts_in_the_cookie(tmp_path: Path) -> None:
    app = load_example("quickstart_flask").create_app(f"sqlite:///{tmp_path}/q.sqlite3")
    client = app.test_client()
    assert client.get("/").text.endswith(": 1\n")
    assert client.get("/").text.endswith(": 2\n")
    assert cookie_of(client).startswith("v1.d")  # type: ignore[union-attr]
    [deleted] = ours(client.get("/logout"))
    assert deleted.deleted


@contextmanager
def private_mariadb() -> Iterator[str]:
    """A database of this test process only (the demo's table names are fixed)."""
    probe = make_engine("mysql")  # skips (or fails in CI) without a server
    name = f"sa_flask_demo_{os.getpid()}"
    with probe.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield probe.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with probe.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        probe.dispose()


@dataclass
class Demo:
    app: flask.Flask
    module: ModuleType
    engine: Engine
    statements: list[str]

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def rows(self) -> list[int | None]:
        """The user id of every session row."""
        model = self.module.WebSession
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(sql_select(model.user_id))]

    def row_ids(self) -> list[str]:
        model = self.module.WebSession
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(sql_select(model.id))]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite-memory"),
        pytest.param(
            "mysql", id="mariadb-memcached", marks=[pytest.mark.mysql, pytest.mark.memcached]
        ),
    ]
)
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Demo]:
    module = load_example("flask_app")
    memcached: str | None = None
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path}/demo.db"
        else:
            server: MemcachedProcess = request.getfixturevalue("memcached")
            memcached = server.address
            url = stack.enter_context(private_mariadb())
        app = module.create_app(
            db_url=url, memcached=memcached, cookie_key=SECRET, secret_key="flask-" + "k" * 32
        )
        interface = app.session_interface
        assert isinstance(interface, FlaskSessionInterface)
        store = interface.settings.store
        assert store is not None
        demo = Demo(app, module, store.engine, [])
        try:
            with recording_statements(store.engine, demo.statements):
                yield demo
        finally:
            store.engine.dispose()


def csrf_token(page: TestResponse) -> str:
    match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page.text)
    assert match, "the page has no CSRF token"
    return match.group(1)


def login(client: FlaskClient, username: str, **extra: str) -> TestResponse:
    token = csrf_token(client.get("/login"))
    form = {"username": username, "password": "demo", "csrf_token": token, **extra}
    return client.post("/login", data=form)


def test_demo_counter_is_a_cookie_session_without_sql(demo: Demo) -> None:
    client = demo.client()
    home = client.get("/")
    assert "browsing anonymously" in home.text
    assert home.headers.getlist("Set-Cookie") == [], "reading pages sets no cookie"
    demo.statements.clear()
    for visit in (1, 2, 3):
        res = client.get("/counter")
        assert f'<p class="big">{visit}</p>' in res.text
    assert demo.statements == [], "a cookie-only session runs no SQL"
    assert cookie_of(client).startswith("v1.d")  # type: ignore[union-attr]
    assert demo.rows() == []


def test_demo_login_csrf_regenerate_and_logout(demo: Demo) -> None:
    client = demo.client()
    client.get("/counter")
    anonymous = cookie_of(client)
    assert anonymous is not None

    assert client.post("/login", data={"username": "dave", "password": "demo"}).status_code == 400
    other = demo.client()
    foreign = csrf_token(other.get("/login"))
    res = client.post(
        "/login", data={"username": "dave", "password": "demo", "csrf_token": foreign}
    )
    assert res.status_code == 400, "another session's CSRF token is refused"
    assert "Wrong password" in login(client, "dave", password="nope").text
    assert demo.rows() == []

    res = login(client, "alice")
    assert res.status_code == 302
    [cookie] = ours(res)
    assert cookie.value.startswith("v1.i"), "a logged-in session lives in a row"
    home = client.get(res.headers["Location"])
    assert "Logged in as alice; your session has a new id." in home.text
    assert "Signed in as <b>alice</b>" in home.text
    [user] = demo.rows()
    assert user is not None
    assert "browsing anonymously" in replay(demo.app, anonymous, "/").text
    assert '<p class="big">2</p>' in client.get("/counter").text, "the data survived login"

    logged_in = cookie_of(client)
    assert logged_in is not None
    assert client.post("/logout").status_code == 400, "no CSRF token, no logout"
    assert "Signed in as <b>alice</b>" in client.get("/").text
    res = client.post("/logout", data={"csrf_token": csrf_token(client.get("/"))})
    assert res.status_code == 302
    [deleted] = ours(res)
    assert deleted.deleted
    assert demo.rows() == [], "the row is deleted at logout"
    assert "browsing anonymously" in replay(demo.app, logged_in, "/").text


def add_notes_until_server_side(client: FlaskClient) -> int:
    for count in range(1, 20):
        token = csrf_token(client.get("/notes"))
        res = client.post("/notes", data={"note": random_text(900 + count), "csrf_token": token})
        assert res.status_code == 302
        if cookie_of(client).startswith("v1.i"):  # type: ignore[union-attr]
            return count
    raise AssertionError("the session never moved to the server")


def test_demo_login_regenerates_a_server_side_session(demo: Demo) -> None:
    client = demo.client()
    count = add_notes_until_server_side(client)
    [anonymous_row] = demo.row_ids()
    anonymous = cookie_of(client)
    assert anonymous is not None
    login(client, "carol")
    [row] = demo.row_ids()
    assert row != anonymous_row, "a new id; the pre-login row is deleted"
    assert demo.rows() != [None]
    assert client.get("/notes").text.count("<li>") == count, "the notes survived the login"
    stale = replay(demo.app, anonymous, "/notes")
    assert stale.text.count("<li>") == 0 and "Signed in" not in stale.text


def test_demo_notes_move_server_side(demo: Demo) -> None:
    client = demo.client()
    count = add_notes_until_server_side(client)
    assert count >= 3, "small sessions stay in the cookie"
    assert demo.rows() == [None]
    assert client.get("/notes").text.count("<li>") == count
    res = client.post("/notes", data={"note": "no token"})
    assert res.status_code == 400
    token = csrf_token(client.get("/notes"))
    client.post("/notes/clear", data={"csrf_token": token})
    assert demo.rows() == [], "cleared: back in the cookie"
    assert cookie_of(client).startswith("v1.d")  # type: ignore[union-attr]


@pytest.mark.filterwarnings(UTCNOW_WARNING)
def test_demo_log_out_other_sessions(demo: Demo) -> None:
    laptop, phone = demo.client(), demo.client()
    login(laptop, "bob")
    login(phone, "bob", remember="y")
    assert phone.get_cookie("remember_token") is not None
    assert "<b>2</b> active sessions" in laptop.get("/").text
    res = laptop.post("/revoke-others", data={"csrf_token": csrf_token(laptop.get("/"))})
    assert "Logged out 1 other session." in laptop.get(res.headers["Location"]).text
    assert len(demo.rows()) == 1
    phone.delete_cookie("remember_token")  # else Flask-Login logs the phone back in
    assert "browsing anonymously" in phone.get("/").text
    assert "Signed in as <b>bob</b>" in laptop.get("/").text


def test_demo_health_route_never_saves(demo: Demo) -> None:
    client = demo.client()
    client.get("/counter")
    res = client.get("/healthz")
    assert res.text == "ok\n"
    assert res.headers.getlist("Set-Cookie") == []


# --------------------------------------------------------------------------- a real server


def _read_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        if not ready:
            raise AssertionError(f"the demo printed no URL: {lines}")
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the demo exited early ({proc.wait()}): {lines}")
        lines.append(line)
        match = re.search(r"http://[\d.]+:\d+/", line)
        if match:
            return match.group(0)


def test_demo_serves_over_http(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SA_SESSIONS_", "FLASK_"))}
    with (tmp_path / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "flask_app.py"), "--port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            url = _read_url(proc)
            jar = http.cookiejar.CookieJar()
            browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            for visit in (1, 2):
                with browser.open(url + "counter") as res:
                    assert f'<p class="big">{visit}</p>' in res.read().decode()
            assert [c.name for c in jar] == [COOKIE]
            with browser.open(url + "healthz") as res:
                assert res.read() == b"ok\n"
        finally:
            proc.terminate()
            proc.wait(30)
            assert proc.stdout is not None
            proc.stdout.close()
    assert (tmp_path / "flask_demo.db").exists(), "the default database is ./flask_demo.db"
    assert "random key" in (tmp_path / "server.log").read_text()
