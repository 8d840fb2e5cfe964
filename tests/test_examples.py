"""Every example runs: the quick starts' and existing_base's main(), and the demo.

The demo (``examples/bottle_app.py``) is driven in-process through WebTest with
the full user flows, on SQLite with the in-process cache, on MariaDB with a real
memcached and on PostgreSQL; one more test starts it as a real server process.
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
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import IO
from typing import Any

import bottle
import pytest
from sqlalchemy import Engine
from sqlalchemy import select as sql_select

from sa_sessions import SessionStore
from sa_sessions.bottle import SessionPlugin
from sa_sessions.ids import hash_session_id

from .conftest import EXAMPLES
from .conftest import SECRET
from .conftest import MemcachedProcess
from .conftest import load_example
from .conftest import make_engine
from .conftest import recording_statements

with warnings.catch_warnings():
    # WebOb still imports the deprecated cgi module on Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from webtest import TestApp
    from webtest import TestResponse

FIREFOX_ON_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI_ON_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(autouse=True)
def _no_demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SA_SESSIONS_DB_URL", "SA_SESSIONS_MEMCACHED", "SA_SESSIONS_COOKIE_KEY"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- main()s

SCRIPTS = {
    "audit_hooks": [
        "laptop GET /logout-others   logged out 1 other session(s)",
        "phone  GET /                visit 1",
        "laptop GET /logout          signed out",
    ],
    "existing_base": [
        "alice has 2 active sessions",
        "purged expired: 1",
        "revoked: 1",
        "phone session after revoke: None",
    ],
    "quickstart_bottle": [
        "Visits in this session: 3",
        "GET /logout  Bye.",
        "GET /        Hello! Visits in this session: 1",
    ],
    "quickstart_flask": [
        "Visits in this session: 3",
        "GET /logout  Bye.",
        "GET /        Hello! Visits in this session: 1",
    ],
    "quickstart_wsgi": ["Visits in this session: 3", "GET /logout  Bye."],
}


def test_every_example_is_tested() -> None:
    # analytics.py runs (with asserted answers) in tests/test_analytics.py and
    # flask_app.py in tests/test_flask.py.
    stems = {path.stem for path in EXAMPLES.glob("*.py")}
    assert stems == {*SCRIPTS, "bottle_app", "flask_app", "analytics", "cleanup"}


def test_cleanup_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_example("cleanup").main([]) == 0
    out = capsys.readouterr().out
    assert "would delete: 2500 expired sessions" in out
    assert "deleted: 2500 expired sessions" in out


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_example_main(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_example(name).main([]) == 0
    out = capsys.readouterr().out
    for expected in SCRIPTS[name]:
        assert expected in out
    assert list(tmp_path.glob("*.sqlite3")), "the example keeps its database in the cwd"


@pytest.mark.parametrize("db", ["sqlite", "mysql"])
def test_audit_hooks_record_each_event_once_with_hashed_ids_only(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_example("audit_hooks")
    url = f"sqlite:///{tmp_path}/audit.sqlite3"
    if db == "mysql":
        engine = make_engine("mysql")
        url = engine.url.render_as_string(hide_password=False)
        module.Base.metadata.drop_all(engine)  # whatever an interrupted run left
        engine.dispose()
    assert module.main([url]) == 0
    wsgi, engine = module.create_app(url)
    with engine.connect() as conn:
        events = conn.execute(
            sql_select(
                module.AuditEvent.event, module.AuditEvent.session, module.AuditEvent.detail
            ).order_by(module.AuditEvent.id)
        ).all()
    kinds = [event for event, _, _ in events]
    assert kinds == ["created", "regenerated", "created", "revoked", "created", "ended"]
    first, regenerated, phone, revoked, _, ended = events
    assert regenerated.detail == f"was {first.session[:12]}", "login replaced the first id"
    assert ended.session == regenerated.session, "logout ended the logged-in session"
    assert revoked.session is None and revoked.detail == "1 other session(s)"
    assert phone.session != regenerated.session
    assert all(len(session) == 64 for _, session, _ in events if session)
    laptop = module.Browser(wsgi, "laptop")
    laptop.get("/login?user=7")
    assert laptop.cookie is not None
    cookies, now = wsgi.settings.cookies, wsgi.settings.clock()
    raw_id = cookies.decode(laptop.cookie.split("=", 1)[1], now=now).session_id
    with engine.connect() as conn:
        stored = set(conn.scalars(sql_select(module.AuditEvent.session)))
    assert raw_id not in stored and hash_session_id(raw_id) in stored, "hashed ids only"
    with engine.begin() as conn:
        module.Base.metadata.drop_all(conn)
    engine.dispose()
    capsys.readouterr()


def test_quickstart_bottle_counts_in_the_cookie(tmp_path: Path) -> None:
    app = load_example("quickstart_bottle").create_app(f"sqlite:///{tmp_path}/q.sqlite3")
    client = TestApp(app)
    assert client.get("/").text.endswith(": 1\n")
    assert client.get("/").text.endswith(": 2\n")
    assert client.cookies["session"].startswith("v1.d")


# --------------------------------------------------------------------------- the demo


@dataclass
class Demo:
    """The demo app plus what a test needs to look behind it."""

    app: bottle.Bottle
    module: ModuleType
    store: SessionStore[Any]
    statements: list[str] = field(default_factory=list)

    def client(self, *, https: bool = False, agent: str = "pytest-webtest/1") -> TestApp:
        environ = {"HTTP_USER_AGENT": agent}
        if https:
            environ["wsgi.url_scheme"] = "https"
        return TestApp(self.app, extra_environ=environ)

    @property
    def engine(self) -> Engine:
        return self.store.engine

    def rows(self) -> list[tuple[str, int | None]]:
        model = self.module.WebSession
        with self.engine.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(sql_select(model.id, model.user_id))]

    def user_id(self, username: str) -> int:
        model = self.module.User
        with self.engine.connect() as conn:
            found = conn.scalar(sql_select(model.id).where(model.username == username))
        assert found is not None, username
        return int(found)


@contextmanager
def private_database(kind: str) -> Iterator[str]:
    """A URL for a database (MariaDB) or schema (PostgreSQL) of this test process only.

    The demo's table names are fixed (``users``, ``web_sessions``), so parallel runs
    on one server must not share a database.
    """
    probe = make_engine(kind)  # skips (or fails in CI) when the server is absent
    name = f"sa_demo_{os.getpid()}"
    if kind == "mysql":
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name}"
        url = probe.url.set(database=name)
    else:
        create, drop = f"CREATE SCHEMA {name}", f"DROP SCHEMA IF EXISTS {name} CASCADE"
        url = probe.url.update_query_dict({"options": f"-csearch_path={name}"})
    with probe.begin() as conn:
        conn.exec_driver_sql(drop)
        conn.exec_driver_sql(create)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with probe.begin() as conn:
            conn.exec_driver_sql(drop)
        probe.dispose()


DEMO_BACKENDS = [
    pytest.param("sqlite", id="sqlite-memory"),
    pytest.param("mysql", id="mariadb-memcached", marks=[pytest.mark.mysql, pytest.mark.memcached]),
    pytest.param("postgres", id="postgres-memory", marks=pytest.mark.postgres),
]


@pytest.fixture(params=DEMO_BACKENDS)
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Demo]:
    kind = str(request.param)
    memcached: str | None = None
    if kind == "mysql":
        server: MemcachedProcess = request.getfixturevalue("memcached")
        memcached = server.address
    with ExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path}/demo.db"
        else:
            url = stack.enter_context(private_database(kind))
        yield from _demo(url, memcached)


def _demo(url: str, memcached: str | None) -> Iterator[Demo]:
    module = load_example("bottle_app")
    app = module.create_app(db_url=url, memcached=memcached, cookie_key=SECRET)
    plugin = next(p for p in app.plugins if isinstance(p, SessionPlugin))
    store = plugin.settings.store
    assert store is not None
    demo = Demo(app, module, store)
    try:
        with recording_statements(store.engine, demo.statements):
            yield demo
    finally:
        store.engine.dispose()


def form(res: TestResponse, action: str) -> Any:
    """The page's form posting to ``action``."""
    for candidate in res.forms.values():
        if candidate.action == action:
            return candidate
    raise AssertionError(f"no form posting to {action} on {res.request.path}")


def login(
    client: TestApp,
    username: str,
    password: str = "demo",
    status: int | None = None,
    remember: bool = False,
) -> TestResponse:
    page = client.get("/login")
    login_form = form(page, "/login")
    login_form["username"] = username
    login_form["password"] = password
    if remember:
        login_form["remember"].checked = True
    return login_form.submit(status=status)


def shown_sid(res: TestResponse) -> str:
    match = re.search(r"<th>Session id</th><td><code>([A-Za-z0-9_-]{8})…", res.text)
    assert match, "the page shows no session id"
    return match.group(1)


def set_cookies(res: TestResponse) -> list[str]:
    return [v for v in res.headers.getall("Set-Cookie") if v.startswith(("session=", "__Host-"))]


def test_counter_is_a_cookie_session_without_sql(demo: Demo) -> None:
    client = demo.client()
    demo.statements.clear()
    for visit in (1, 2, 3):
        res = client.get("/counter")
        assert f'<p class="big">{visit}</p>' in res
        assert len(set_cookies(res)) == 1
    assert demo.statements == [], "a cookie-only session runs no SQL"
    assert client.cookies["session"].startswith("v1.d")
    home = client.get("/")
    assert 'badge cookie">cookie' in home
    assert set_cookies(home) == [], "reading a session does not rewrite it"
    assert demo.statements == []
    assert demo.rows() == []


def test_home_sets_no_cookie_for_a_new_visitor(demo: Demo) -> None:
    res = demo.client().get("/")
    assert "browsing anonymously" in res
    assert "nowhere: there is no session yet" in res
    assert res.headers.getall("Set-Cookie") == []
    assert res.headers["Content-Security-Policy"].startswith("default-src 'self'")


def add_random_notes_until_server_side(client: TestApp) -> int:
    for count in range(1, 20):
        res = form(client.get("/notes"), "/notes").submit("action", value="random")
        assert res.status_int in (302, 303)
        if client.cookies["session"].startswith("v1.i"):
            return count
    raise AssertionError("the session never moved to the server")


def test_notes_move_server_side_login_regenerates_logout_deletes(demo: Demo) -> None:
    client = demo.client()
    note = form(client.get("/notes"), "/notes")
    note["note"] = "héllo <b>wörld</b> ✓"
    note.submit("action", value="add")
    page = client.get("/notes")
    assert "héllo &lt;b&gt;wörld&lt;/b&gt; ✓" in page, "UTF-8 form text, escaped"
    assert 'badge cookie">cookie' in page and "no row" in page
    assert demo.rows() == []

    count = add_random_notes_until_server_side(client)
    assert count >= 3, "small sessions stay in the cookie"
    page = client.get("/notes")
    assert 'badge server">server' in page
    assert re.search(r"sealed blob of \d{4,} bytes", page.text)
    [(anonymous_row, no_user)] = demo.rows()
    assert no_user is None
    anonymous_cookie = client.cookies["session"]
    before = shown_sid(client.get("/"))

    res = login(client, "alice")
    assert res.status_int in (302, 303)
    assert len(set_cookies(res)) == 1
    home = res.follow()
    assert "Logged in as alice; your session has a new id." in home
    assert shown_sid(home) != before
    [(row, user)] = demo.rows()
    assert row != anonymous_row, "regenerate_id() deleted the old row"
    assert user == demo.user_id("alice")
    assert f"{count + 1} (" in client.get("/notes"), "the notes survived the login"

    stale = demo.client().get("/", headers={"Cookie": f"session={anonymous_cookie}"})
    assert "browsing anonymously" in stale and "no session yet" in stale

    logged_in_cookie = client.cookies["session"]
    res = form(client.get("/"), "/logout").submit()
    assert res.status_int in (302, 303)
    assert demo.rows() == [], "terminate() deleted the row at once"
    [flash_cookie] = set_cookies(res)
    assert flash_cookie.startswith("session=v1.d"), "the flash rides in a new cookie session"
    page = res.follow()
    assert "Logged out: that session is gone for good." in page
    assert "browsing anonymously" in page
    [deleted] = set_cookies(page)
    assert deleted.startswith("session=;") and "Max-Age=0" in deleted, "flash shown: empty"
    assert "session" not in client.cookies
    replayed = demo.client().get("/", headers={"Cookie": f"session={logged_in_cookie}"})
    assert "browsing anonymously" in replayed, "the logged-out cookie is dead"


def test_cleared_notes_move_back_into_the_cookie(demo: Demo) -> None:
    client = demo.client()
    add_random_notes_until_server_side(client)
    assert len(demo.rows()) == 1
    res = form(client.get("/notes"), "/notes").submit("action", value="clear")
    [cookie] = set_cookies(res)
    assert cookie.startswith("session=v1.d"), "small again: back in the cookie"
    assert demo.rows() == [], "and the row is gone"
    assert "No notes yet." in res.follow()


def test_login_from_a_cookie_session_kills_the_old_cookie(demo: Demo) -> None:
    client = demo.client()
    client.get("/counter")
    old_cookie = client.cookies["session"]
    old_sid = shown_sid(client.get("/"))
    login(client, "carol").follow()
    assert shown_sid(client.get("/")) != old_sid
    replay = demo.client().get("/", headers={"Cookie": f"session={old_cookie}"})
    assert "browsing anonymously" in replay, "the pre-login cookie carries no login"
    assert "Signed in" not in replay


def test_login_rejects_bad_input_and_missing_csrf(demo: Demo) -> None:
    client = demo.client()
    assert "Wrong password" in login(client, "dave", "nope", status=400)
    assert "User names are" in login(client, "bad name!", status=400)
    client.post("/login", {"username": "dave", "password": "demo"}, status=403)
    other = demo.client()
    other.get("/login")
    foreign = form(client.get("/login"), "/login")["csrf_token"].value
    fields = {"username": "dave", "password": "demo", "csrf_token": foreign}
    other.post("/login", fields, status=403)
    assert demo.rows() == []


def test_remember_me_lasts_30_days_and_a_plain_login_ends_with_the_browser(
    demo: Demo,
) -> None:
    plain, remembered = demo.client(), demo.client()
    [browser_only] = set_cookies(login(plain, "frank"))
    assert "Max-Age" not in browser_only and "Expires" not in browser_only
    [lasting] = set_cookies(login(remembered, "grace", remember=True))
    max_age = int(re.search(r"Max-Age=(\d+)", lasting)[1])  # type: ignore[index]
    assert 30 * 86400 - 60 <= max_age <= 30 * 86400
    model = demo.module.WebSession
    with demo.engine.connect() as conn:
        ends = dict(conn.execute(sql_select(model.user_id, model.expires_at)).all())
    assert ends[demo.user_id("grace")] - ends[demo.user_id("frank")] > timedelta(days=20)


def test_sessions_page_and_log_out_other_sessions(demo: Demo) -> None:
    laptop = demo.client(agent=FIREFOX_ON_LINUX)
    phone = demo.client(agent=SAFARI_ON_IPHONE)
    login(laptop, "bob").follow()
    login(phone, "bob").follow()
    assert len(demo.rows()) == 2

    page = laptop.get("/sessions")
    assert page.text.count("<td>Firefox on Linux</td>") == 1
    assert page.text.count("<td>Safari on iOS</td>") == 1
    assert page.text.count("<b>this one</b>") == 1
    assert phone.get("/sessions").text.count("<b>this one</b>") == 1

    res = form(laptop.get("/sessions"), "/sessions/revoke-others").submit()
    assert "Logged out 1 other session." in res.follow()
    assert len(demo.rows()) == 1
    assert "browsing anonymously" in phone.get("/")
    assert "Please" in phone.get("/sessions") and "log in" in phone.get("/sessions")
    assert "Signed in as <b>bob</b>" in laptop.get("/")
    assert laptop.get("/sessions").text.count("<b>this one</b>") == 1


def test_ssl_only_session_needs_https(demo: Demo) -> None:
    plain = demo.client()
    assert "requested over plain http" in plain.get("/secure")
    plain.post("/secure", {"csrf_token": "x"}, status=403)

    secure = demo.client(https=True)
    login(secure, "erin").follow()
    res = form(secure.get("/secure"), "/secure").submit()
    [cookie] = set_cookies(res)
    assert cookie.startswith("__Host-session=v1.i") and "; Secure" in cookie
    page = res.follow()
    assert "This session is now SSL-only." in page
    assert "with an SSL-only session" in page
    assert "Signed in as <b>erin</b>" in page, "the login moved into the new session"
    assert len(demo.rows()) == 1
    over_http = demo.client().get(
        "/", headers={"Cookie": f"session={secure.cookies['__Host-session']}"}
    )
    assert "browsing anonymously" in over_http
    res = form(secure.get("/"), "/logout").submit()
    assert demo.rows() == []
    [flash_cookie] = set_cookies(res)
    assert flash_cookie.startswith("__Host-session=v1.d") and "; Secure" in flash_cookie
    [deleted] = set_cookies(res.follow())
    assert deleted.startswith("__Host-session=;") and "; Secure" in deleted
    assert "Max-Age=0" in deleted


def test_static_and_health_routes_never_touch_the_session(demo: Demo) -> None:
    client = demo.client()
    client.get("/counter")
    demo.statements.clear()
    for path in ("/static/demo.css", "/healthz"):
        res = client.get(path)
        assert res.headers.getall("Set-Cookie") == []
        assert "Vary" not in res.headers
    assert demo.statements == []


def test_random_key_is_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    module = load_example("bottle_app")
    with caplog.at_level(logging.WARNING, logger="sa_sessions.demo"):
        app = module.create_app(db_url=f"sqlite:///{tmp_path}/demo.db")
    assert "sessions will not survive a restart" in caplog.text
    assert TestApp(app).get("/counter").status_int == 200


# --------------------------------------------------------------------------- a real server


def _read_url(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"the demo printed no URL in {timeout}s: {lines}")
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the demo exited early ({proc.wait()}): {lines}")
        lines.append(line)
        match = re.search(r"http://[\d.]+:\d+/", line)
        if match:
            return match.group(0)


@pytest.fixture
def run_demo(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    procs: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SA_SESSIONS_")}

    def start(server: str) -> str:
        logs.append((tmp_path / f"{server}.log").open("w"))
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "bottle_app.py"), "--port", "0", "--server", server],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=logs[-1],
            text=True,
        )
        procs.append(proc)
        return _read_url(proc)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    for log in logs:
        log.close()


@pytest.mark.parametrize("server", ["wsgiref", "waitress"])
def test_demo_serves_over_http(server: str, run_demo: Callable[[str], str], tmp_path: Path) -> None:
    if server == "waitress":
        pytest.importorskip("waitress")
    url = run_demo(server)
    browser = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with browser.open(url) as res:
        assert res.status == 200
        assert "sa_sessions demo" in res.read().decode()
    for visit in (1, 2):
        with browser.open(url + "counter") as res:
            assert f'<p class="big">{visit}</p>' in res.read().decode()
    with browser.open(url + "static/demo.css") as res:
        assert res.headers["Content-Type"].startswith("text/css")
    assert (tmp_path / "demo.db").exists(), "the default database is ./demo.db"
    assert "sessions will not survive a restart" in (tmp_path / f"{server}.log").read_text()
