"""SessionPlugin: injection, request.session, opt-outs, conflicts, and the cookie on every path."""

from __future__ import annotations

import functools
import secrets
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import bottle
import pytest
from sqlalchemy import Engine
from sqlalchemy import Integer
from sqlalchemy import create_engine
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.pool import StaticPool

from sa_sessions import Session
from sa_sessions import SessionConfigError
from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import memory_region
from sa_sessions.bottle import SessionPlugin

from .conftest import SECRET
from .conftest import free_port

with warnings.catch_warnings():
    # WebOb still imports the deprecated cgi module on Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from webtest import TestApp
    from webtest import TestResponse


class Base(DeclarativeBase):
    pass


class BottleSession(SessionModel, Base):
    __tablename__ = "sa_bottle_sessions"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> SessionStore[BottleSession]:
    return SessionStore(BottleSession, engine, region=memory_region(), secret_keys=SECRET)


@pytest.fixture
def app() -> bottle.Bottle:
    return bottle.Bottle()


def _no_catchall(app: bottle.Bottle) -> bottle.Bottle:
    app.config["catchall"] = False  # let exceptions reach the test
    return app


def session_cookies(res: TestResponse) -> list[str]:
    return [v for v in res.headers.getall("Set-Cookie") if v.startswith("session=")]


def route(app: bottle.Bottle, path: str, method: str = "GET", **config: Any) -> Callable[..., Any]:
    """``@app.route`` with a typed decorator (bottle ships no type hints)."""

    def register(callback: Callable[..., Any]) -> Callable[..., Any]:
        app.route(path, method, callback, **config)
        return callback

    return register


# --------------------------------------------------------------------------- injection


def test_injects_only_into_routes_that_take_the_keyword(app: bottle.Bottle) -> None:
    app.install(SessionPlugin(cookie_key=SECRET))
    seen: dict[str, Any] = {}

    @route(app, "/with")
    def with_session(session: Session) -> str:
        seen["with"] = session
        assert bottle.request.session is session
        return "ok"

    @route(app, "/without")
    def without() -> str:
        return "ok"

    @route(app, "/kwargs/<name>")
    def kwargs_only(**kwargs: Any) -> str:
        seen["kwargs"] = sorted(kwargs)
        return "ok"

    @route(app, "/keyword-only")
    def keyword_only(*, session: Session) -> str:
        seen["keyword-only"] = session
        return "ok"

    client = TestApp(app)
    client.get("/with")
    client.get("/without")
    client.get("/kwargs/x")
    client.get("/keyword-only")
    assert isinstance(seen["with"], Session)
    assert isinstance(seen["keyword-only"], Session)
    assert seen["kwargs"] == ["name"], "**kwargs alone does not ask for a session"


def test_custom_keyword(app: bottle.Bottle) -> None:
    app.install(SessionPlugin(cookie_key=SECRET, keyword="websession"))
    seen: dict[str, Any] = {}

    @route(app, "/a")
    def a(websession: Session) -> str:
        websession["n"] = 1
        seen["a"] = websession
        return "ok"

    @route(app, "/b")
    def b(session: Any = None) -> str:
        seen["b"] = session
        return "ok"

    client = TestApp(app)
    assert len(session_cookies(client.get("/a"))) == 1
    client.get("/b")
    assert isinstance(seen["a"], Session)
    assert seen["b"] is None


def test_rejects_a_keyword_that_is_not_an_identifier() -> None:
    with pytest.raises(ValueError, match="identifier"):
        SessionPlugin(cookie_key=SECRET, keyword="my-session")


class Helper:
    """Any callable in a route's closure used to fool Bottle's callback unwrapping."""


def make_factory_app() -> bottle.Bottle:
    app = bottle.Bottle()
    app.install(SessionPlugin(cookie_key=SECRET))
    helper = Helper

    @route(app, "/")
    def index(session: Session) -> str:
        helper()
        session["seen"] = True
        return "ok"

    return app


def test_route_defined_in_an_app_factory_gets_the_session() -> None:
    # Route.get_undecorated_callback() walks into closures and returned Helper here.
    res = TestApp(make_factory_app()).get("/")
    assert res.text == "ok"
    assert len(session_cookies(res)) == 1


def test_decorated_and_bound_method_callbacks(app: bottle.Bottle) -> None:
    app.install(SessionPlugin(cookie_key=SECRET))

    def decorate(func: Callable[..., str]) -> Callable[..., str]:
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> str:
            return func(*args, **kwargs).upper()

        return inner

    @route(app, "/decorated")
    @decorate
    def decorated(session: Session) -> str:
        return f"visits {session.increment('v')}"

    class Pages:
        def count(self, session: Session) -> str:
            return f"visits {session.increment('v')}"

    app.route("/method", "GET", Pages().count)
    client = TestApp(app)
    assert client.get("/decorated").text == "VISITS 1"
    assert client.get("/method").text == "visits 2"


# --------------------------------------------------------------------------- request.session


def test_request_session_in_routes_and_hooks(app: bottle.Bottle) -> None:
    app.install(SessionPlugin(cookie_key=SECRET))
    before: list[Session] = []

    def remember() -> None:
        before.append(bottle.request.session)

    def stamp() -> None:  # runs after the route, before the session is saved
        bottle.request.session["last"] = bottle.request.path

    app.add_hook("before_request", remember)
    app.add_hook("after_request", stamp)

    @route(app, "/plain")
    def plain() -> str:
        return str(bottle.request.session.get("last"))

    @route(app, "/go")
    def go(session: Session) -> None:
        assert session is before[-1]
        bottle.redirect("/plain")

    client = TestApp(app)
    assert client.get("/plain").text == "None"
    assert client.get("/go").status_int in (302, 303)
    assert client.get("/plain").text == "/go", "written in after_request, kept on a redirect"
    assert client.get("/plain").text == "/plain"
    assert all(isinstance(s, Session) for s in before)
    assert len({id(s) for s in before}) == len(before), "one Session per request"


def test_request_session_in_error_handlers(app: bottle.Bottle) -> None:
    app.install(SessionPlugin(cookie_key=SECRET))

    def not_found(error: bottle.HTTPError) -> str:
        return f"missing; visits {bottle.request.session.increment('v')}"

    app.error(404)(not_found)
    client = TestApp(app)
    res = client.get("/nowhere", status=404)
    assert res.text == "missing; visits 1"
    assert len(session_cookies(res)) == 1
    assert client.get("/nowhere", status=404).text == "missing; visits 2"


def test_untouched_session_costs_nothing(app: bottle.Bottle) -> None:
    app.install(SessionPlugin(cookie_key=SECRET))

    @route(app, "/")
    def index() -> str:
        return "ok"

    res = TestApp(app).get("/", headers={"Cookie": "session=garbage"})
    assert res.headers.getall("Set-Cookie") == []
    assert "Vary" not in res.headers


# --------------------------------------------------------------------------- opt-out


def test_opt_out_by_route_config(app: bottle.Bottle) -> None:
    plugin = SessionPlugin(cookie_key=SECRET)
    app.install(plugin)

    def health(session: Any = None) -> str:
        return f"{session!r} {bottle.request.session.get('x')!r}"

    app.route("/health", "GET", health, sa_sessions={"enabled": False})
    client = TestApp(app)
    res = client.get("/health")
    assert res.text == "None None", "not injected; request.session still works, lazily"
    assert res.headers.getall("Set-Cookie") == []
    [health_route] = [r for r in app.routes if r.rule == "/health"]
    assert plugin.apply(health, health_route) is health, "returned unchanged"


@pytest.mark.parametrize("skip", ["instance", "type", "name", "all"])
def test_opt_out_by_skip(app: bottle.Bottle, skip: str) -> None:
    plugin = SessionPlugin(cookie_key=SECRET)
    app.install(plugin)
    skiplist: Any = {
        "instance": [plugin],
        "type": [SessionPlugin],
        "name": ["sa_sessions"],
        "all": True,
    }[skip]

    def static(session: Any = None) -> str:
        return repr(session)

    app.route("/static", "GET", static, skip=skiplist)
    res = TestApp(app).get("/static")
    assert res.text == "None"
    assert res.headers.getall("Set-Cookie") == []


# --------------------------------------------------------------------------- conflicts


class KeywordPlugin:
    """Another plugin that injects a keyword (like bottle-sqlite's ``db``)."""

    api = 2

    def __init__(self, keyword: str, name: str = "other") -> None:
        self.keyword = keyword
        self.name = name

    def apply(self, callback: Callable[..., Any], route: Any) -> Callable[..., Any]:
        return callback


def test_two_session_plugins_conflict(app: bottle.Bottle) -> None:
    first = SessionPlugin(cookie_key=SECRET)
    app.install(first)
    with pytest.raises(bottle.PluginError):
        app.install(SessionPlugin(cookie_key=SECRET, keyword="other_session"))
    with pytest.raises(bottle.PluginError):
        app.install(first)
    with pytest.raises(bottle.PluginError):
        bottle.Bottle().install(first)  # one instance, one application
    assert app.plugins.count(first) == 1


def test_another_plugin_claiming_the_keyword_conflicts(app: bottle.Bottle) -> None:
    app.install(KeywordPlugin("session"))
    with pytest.raises(bottle.PluginError, match="'session' keyword"):
        app.install(SessionPlugin(cookie_key=SECRET))


def test_keyword_claimed_after_install_conflicts_at_first_request() -> None:
    app = _no_catchall(bottle.Bottle())
    app.install(SessionPlugin(cookie_key=SECRET))
    app.install(KeywordPlugin("session"))

    @route(app, "/")
    def index(session: Session) -> str:
        return "ok"

    with pytest.raises(bottle.PluginError, match="also provides the 'session' keyword"):
        TestApp(app).get("/")


def test_plugins_with_other_keywords_coexist(app: bottle.Bottle) -> None:
    app.install(KeywordPlugin("db"))
    app.install(SessionPlugin(cookie_key=SECRET))

    @route(app, "/")
    def index(session: Session) -> str:
        return f"visits {session.increment('v')}"

    assert TestApp(app).get("/").text == "visits 1"


# --------------------------------------------------------------------------- uninstall


@pytest.mark.parametrize("how", ["instance", "type", "name"])
def test_uninstall_restores_the_wsgi_entry_point(app: bottle.Bottle, how: str) -> None:
    assert "wsgi" not in app.__dict__
    plugin = SessionPlugin(cookie_key=SECRET)
    app.install(plugin)
    assert "wsgi" in app.__dict__

    @route(app, "/")
    def index() -> str:
        try:
            return f"visits {bottle.request.session.increment('v')}"
        except AttributeError:
            return "no sessions"

    client = TestApp(app)
    assert client.get("/").text == "visits 1"
    target: Any = {"instance": plugin, "type": SessionPlugin, "name": "sa_sessions"}[how]
    assert app.uninstall(target) == [plugin]
    assert "wsgi" not in app.__dict__, "back to Bottle.wsgi"
    res = client.get("/")
    assert res.text == "no sessions"
    assert res.headers.getall("Set-Cookie") == []
    app.install(plugin)  # and it can come back
    assert client.get("/").text == "visits 2"


def test_uninstall_keeps_a_wrapper_installed_on_top(app: bottle.Bottle) -> None:
    plugin = SessionPlugin(cookie_key=SECRET)
    app.install(plugin)
    inner = app.wsgi

    def outer(environ: Any, start_response: Any) -> Any:
        return inner(environ, start_response)

    del app.wsgi  # Bottle refuses to overwrite an instance attribute
    app.wsgi = outer
    app.uninstall(plugin)
    assert app.wsgi is outer


def test_wraps_an_existing_wsgi_wrapper_and_restores_it(app: bottle.Bottle) -> None:
    calls: list[str] = []
    inner = app.wsgi

    def logging_wsgi(environ: Any, start_response: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    app.wsgi = logging_wsgi
    plugin = SessionPlugin(cookie_key=SECRET)
    app.install(plugin)

    @route(app, "/")
    def index(session: Session) -> str:
        return f"visits {session.increment('v')}"

    assert TestApp(app).get("/").text == "visits 1"
    assert calls == ["/"]
    app.uninstall(plugin)
    assert app.wsgi is logging_wsgi


def test_mounted_child_app_needs_the_plugin_on_the_parent() -> None:
    parent = _no_catchall(bottle.Bottle())
    child = bottle.Bottle()
    child.install(SessionPlugin(cookie_key=SECRET))

    @route(child, "/page")
    def page(session: Session) -> str:
        return "ok"

    parent.mount("/child/", child)
    with pytest.raises(SessionConfigError, match="install the plugin on the application"):
        TestApp(parent).get("/child/page")


# --------------------------------------------------------------------------- the cookie, always


def cookie_paths_app(store: SessionStore[Any] | None = None) -> bottle.Bottle:
    app = bottle.Bottle()
    app.install(SessionPlugin(store, cookie_key=SECRET))

    @route(app, "/ok")
    def ok(session: Session) -> str:
        session["user"] = "alice"
        return "ok"

    @route(app, "/redirect")
    def redirect(session: Session) -> None:
        session["user"] = "alice"
        bottle.redirect("/ok")

    @route(app, "/abort")
    def abort(session: Session) -> None:
        session["user"] = "alice"
        bottle.abort(403, "no")

    @route(app, "/returned")
    def returned(session: Session) -> bottle.HTTPResponse:
        session["user"] = "alice"
        return bottle.HTTPResponse("created", status=201, headers={"X-Mine": "1"})

    @route(app, "/raised")
    def raised(session: Session) -> None:
        session["user"] = "alice"
        raise bottle.HTTPResponse("accepted", status=202)

    @route(app, "/crash")
    def crash(session: Session) -> None:
        session["user"] = "alice"
        raise RuntimeError("boom")

    @route(app, "/own-cookie")
    def own_cookie(session: Session) -> str:
        session["user"] = "alice"
        bottle.response.set_cookie("theme", "dark", path="/", httponly=True)
        return "ok"

    @route(app, "/big")
    def big(session: Session) -> str:
        session["blob"] = secrets.token_urlsafe(6000)
        return "ok"

    @route(app, "/peek")
    def peek(session: Session) -> str:
        return str(session.get("user"))

    @route(app, "/read")
    def read(session: Session) -> str:
        return f"{len(session.get('blob', ''))}"

    @route(app, "/read-plain")
    def read_plain() -> str:
        return f"{len(bottle.request.session.get('blob', ''))}"

    return app


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ok", 200),
        ("/redirect", 302),
        ("/abort", 403),
        ("/returned", 201),
        ("/raised", 202),
        ("/crash", 500),
        ("/own-cookie", 200),
    ],
)
def test_set_cookie_on_every_response_path(path: str, status: int) -> None:
    client = TestApp(cookie_paths_app())
    res = client.get(path, status=status, expect_errors=True)
    [cookie] = session_cookies(res)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert res.headers["Cache-Control"] == "no-store"
    peek = client.get("/peek")
    assert peek.text == "alice", "the session was saved"
    assert peek.headers.getall("Set-Cookie") == [], "reading saves nothing"
    if path == "/own-cookie":
        assert [v for v in res.headers.getall("Set-Cookie") if v.startswith("theme=dark")]
        assert client.cookies["theme"] == "dark"
    if path == "/returned":
        assert res.headers["X-Mine"] == "1"


@pytest.fixture(params=["mysql+mysqldb", "postgresql+psycopg"])
def dead_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A real engine whose database server is down: nothing listens on its port."""
    pytest.importorskip(
        {"mysql+mysqldb": "MySQLdb", "postgresql+psycopg": "psycopg"}[request.param]
    )
    engine = create_engine(f"{request.param}://root@127.0.0.1:{free_port()}/test")
    yield engine
    engine.dispose()


def test_database_outage_gives_503(store: SessionStore[Any], dead_engine: Engine) -> None:
    working = TestApp(cookie_paths_app(store))
    working.get("/big")
    assert working.cookies["session"].startswith("v1.i"), "a server-side session"
    down = SessionStore(BottleSession, dead_engine, region=memory_region(), secret_keys=SECRET)
    app = cookie_paths_app(down)

    def unavailable(error: bottle.HTTPError) -> str:
        return f"custom page: {error.body}"

    app.error(503)(unavailable)
    client = TestApp(app)
    client.set_cookie("session", working.cookies["session"])
    for path in ("/read", "/read-plain"):  # load fails inside the route: plugin -> Bottle
        res = client.get(path, status=503)
        assert res.text.startswith("custom page: Sessions are temporarily unavailable")
        assert res.headers["Retry-After"] == "5"
        assert res.headers.getall("Set-Cookie") == []
    res = TestApp(app).get("/big", status=503)  # the save fails: the middleware answers
    assert "temporarily unavailable" in res.text
    assert res.headers.getall("Set-Cookie") == []
    assert working.get("/read").text == "8000", "the session survived the outage"


# --------------------------------------------------------------------------- revocation


class RevocableSession(SessionModel, Base):
    __tablename__ = "sa_bottle_revocable"

    user_id: Mapped[int | None] = mapped_column(Integer, index=True)


@pytest.mark.parametrize("quick", ["set_quick", "pop_quick"])
def test_quick_write_racing_a_revoke_does_not_resurrect_the_session(
    engine: Engine, quick: str
) -> None:
    """A request in flight while "log out everywhere" runs must not bring the session back.

    The route loads its session, then another request revokes every session of
    the user (simulated by calling revoke() in between), then this request makes
    a quick (cache-only) write, as a flash message does.  The row is gone, so
    the session must stay gone; today the cache-only write puts it back in the
    cache and the revoked session keeps working.
    """
    store = SessionStore(
        RevocableSession,
        engine,
        region=memory_region(),
        secret_keys=SECRET,
        columns={"user_id": lambda data: data.get("user_id")},
    )
    app = bottle.Bottle()
    app.install(SessionPlugin(store, cookie_key=SECRET))

    @route(app, "/login")
    def login(session: Session) -> str:
        session.regenerate_id()
        session["user_id"] = 7
        session["flash"] = "welcome"
        return "in"

    @route(app, "/page")
    def page(session: Session) -> str:
        user = session.get("user_id")
        store.revoke(RevocableSession.user_id == 7)  # "another request", meanwhile
        if quick == "set_quick":
            session.set_quick("flash", "saved")
        else:
            session.pop_quick("flash")
        return repr(user)

    @route(app, "/who")
    def who(session: Session) -> str:
        return repr(session.get("user_id"))

    client = TestApp(app)
    client.get("/login")
    assert client.get("/page").text == "7"
    with engine.connect() as conn:
        assert conn.execute(select(RevocableSession.id)).all() == [], "the row was revoked"
    assert client.get("/who").text == "None", "a revoked session came back from the cache"


# --------------------------------------------------------------------------- CSRF


def _forms(app: bottle.Bottle, *, exempt: bool = False) -> None:
    @route(app, "/form")
    def form(session: Session) -> str:
        return session.csrf_token()

    @route(app, "/change", method="POST")
    def change(session: Session) -> str:
        session["changed"] = True
        return "changed"

    config = {"sa_sessions": {"csrf": False}} if exempt else {}

    @route(app, "/webhook", method="POST", **config)
    def webhook() -> str:
        return "hooked"


def test_the_csrf_option_refuses_unsafe_requests_without_the_token(
    app: bottle.Bottle, store: SessionStore[Any]
) -> None:
    app.install(SessionPlugin(store, cookie_key=SECRET, csrf=True))
    _forms(app, exempt=True)
    client = TestApp(app)
    token = client.get("/form").text
    client.post("/change", status=403)  # no token
    client.post("/change", {"csrf_token": "x" * 43}, status=403)  # a wrong one
    assert client.post("/change", {"csrf_token": token}).text == "changed"
    assert client.post("/change", headers={"X-CSRF-Token": token}).text == "changed"
    assert client.get("/form").text == token  # GET is never checked; the token is stable
    assert client.post("/webhook").text == "hooked"  # a route may opt out
    TestApp(app).post("/change", {"csrf_token": token}, status=403)  # another visitor


def test_csrf_protect_checks_one_route(app: bottle.Bottle, store: SessionStore[Any]) -> None:
    from sa_sessions.bottle import csrf_protect

    app.install(SessionPlugin(store, cookie_key=SECRET))

    @route(app, "/form")
    def form(session: Session) -> str:
        return session.csrf_token()

    @route(app, "/guarded", method="POST")
    @csrf_protect
    def guarded() -> str:
        return "ok"

    @route(app, "/open", method="POST")
    def open_route() -> str:
        return "open"

    client = TestApp(app)
    token = client.get("/form").text
    client.post("/guarded", status=403)
    assert client.post("/guarded", {"csrf_token": token}).text == "ok"
    assert client.post("/open").text == "open"
