"""sa_sessions demo: a small Bottle application that shows every feature.

Run it::

    python examples/bottle_app.py                # http://127.0.0.1:8080/
    python examples/bottle_app.py --host 0.0.0.0 --port 9000

Out of the box it needs no server: SQLite in ``./demo.db`` and an in-process
cache.  The environment switches it to the production set-up:

``SA_SESSIONS_DB_URL``      e.g. ``mysql+mysqldb://root@localhost/test`` or
                            ``postgresql+psycopg://localhost/test``
``SA_SESSIONS_MEMCACHED``   a memcached pool, e.g. ``10.0.0.5:11211,10.0.0.6:11211``
``SA_SESSIONS_COOKIE_KEY``  the signing key (at least 32 bytes); without it a random
                            per-process key is used and sessions die with the process

What to try: the visit counter (a session that lives in one signed cookie, no
database access), notes that grow the session past the 4 KB cookie limit so it
moves into a database row, logging in (new session id, server-side so it can be
revoked; "remember me" keeps the session for 30 days, without it the cookie ends
with the browser), "your sessions" (device, network and last seen of every
session of your account) with "log out all other sessions", and the SSL-only area
over https.  Forms carry the session's CSRF token (``session.csrf_token()``, checked
by the plugin's ``csrf=True``); messages after login and logout are
``session.flash()``.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import html
import importlib
import logging
import os
import re
import secrets
import socketserver
import sys
from collections.abc import Sequence
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any
from typing import NoReturn
from typing import cast
from wsgiref.simple_server import WSGIServer
from wsgiref.simple_server import make_server

import bottle
from sqlalchemy import Engine
from sqlalchemy import ForeignKey
from sqlalchemy import String
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import sessionmaker

from sa_sessions import Session
from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import memcached_region
from sa_sessions import memory_region
from sa_sessions import metadata
from sa_sessions import redact_url
from sa_sessions.bottle import SessionPlugin
from sa_sessions.cookies import MAX_COOKIE_BYTES
from sa_sessions.model import UtcDateTime

log = logging.getLogger("sa_sessions.demo")

DEFAULT_DB_URL = "sqlite:///demo.db"
COOKIE_NAME = "session"
#: Any user name logs in with this password (it is a demo).
DEMO_PASSWORD = "demo"
#: How long a "remember me" login lasts.
REMEMBER_FOR = timedelta(days=30)
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,40}")
NOTE_MAX_CHARS = 2000
COOKIE_LIMIT = MAX_COOKIE_BYTES


# --------------------------------------------------------------------------- models


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class WebSession(SessionModel, Base):
    """The sessions table: SessionModel's columns plus two of our own."""

    __tablename__ = "web_sessions"

    # Filled at every save (see ``columns=`` below): the user from the session data,
    # so SQL can find a user's sessions and revoke them; the device and network from
    # the request, for the "your sessions" page.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    device: Mapped[str | None] = mapped_column(String(64))
    network: Mapped[str | None] = mapped_column(String(64))


# --------------------------------------------------------------------------- set-up


def _servers(memcached: str | Sequence[str]) -> list[str]:
    items = memcached.split(",") if isinstance(memcached, str) else list(memcached)
    return [item.strip() for item in items if item.strip()]


def _cookie_key(cookie_key: str | bytes | None) -> str | bytes:
    key = cookie_key or os.environ.get("SA_SESSIONS_COOKIE_KEY")
    if key:
        return key
    log.warning(
        "SA_SESSIONS_COOKIE_KEY is not set: using a random key, so sessions will not "
        "survive a restart (fine for a demo, never for production)"
    )
    return secrets.token_bytes(32)


def _engine(db_url: str) -> Engine:
    # pre-ping and recycle keep pooled MySQL/MariaDB connections alive past wait_timeout.
    return create_engine(db_url, pool_pre_ping=True, pool_recycle=1800)


def create_app(
    db_url: str | None = None,
    memcached: str | Sequence[str] | None = None,
    cookie_key: str | bytes | None = None,
) -> bottle.Bottle:
    """Build the demo application (arguments win over the environment variables)."""
    engine = _engine(db_url or os.environ.get("SA_SESSIONS_DB_URL") or DEFAULT_DB_URL)
    Base.metadata.create_all(engine)
    servers = _servers(memcached or os.environ.get("SA_SESSIONS_MEMCACHED") or "")
    region = memcached_region(servers) if servers else memory_region()
    key = _cookie_key(cookie_key)
    store = SessionStore(
        WebSession,
        engine,
        region=region,
        secret_keys=key,
        # A session with a user_id always lives in a row, so it can be revoked; the
        # request's device and network only describe it (they keep nobody server-side).
        columns={
            "user_id": lambda data: data.get("user_id"),
            "device": lambda data, environ: metadata.device(environ),
            "network": lambda data, environ: metadata.client_network(environ),
        },
    )
    app = bottle.Bottle()
    plugin = SessionPlugin(store, cookie_key=key, cookie_name=COOKIE_NAME, csrf=True)
    app.install(plugin)
    Demo(store, sessionmaker(engine, expire_on_commit=False)).add_routes(app, plugin)
    log.info(
        "demo app: database %s, cache %s",
        redact_url(engine.url),  # no password, not even one in the query string
        ",".join(servers) if servers else "in-process memory",
    )
    return app


# --------------------------------------------------------------------------- helpers


def current_session() -> Session:
    """The request's session, as the plugin exposes it to hooks and helpers."""
    return cast(Session, bottle.request.session)


def go(path: str) -> NoReturn:
    bottle.redirect(path)
    raise AssertionError("unreachable")  # bottle.redirect always raises


def raw_cookie(name: str) -> str | None:
    """The session cookie as the browser sent it (read for display only)."""
    header: str = bottle.request.environ.get("HTTP_COOKIE", "")
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def is_https() -> bool:
    # What sa_sessions itself looks at (not Bottle's urlparts, which trusts a
    # client-supplied X-Forwarded-Proto header).
    return bool(bottle.request.environ.get("wsgi.url_scheme") == "https")


def cookie_name() -> str:
    return f"__Host-{COOKIE_NAME}" if is_https() else COOKIE_NAME


def ago(moment: datetime) -> str:
    """How long ago, in words a person reads at a glance."""
    seconds = max(0, int((datetime.now(timezone.utc) - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def hidden_csrf(session: Session) -> str:
    """The form field the plugin's ``csrf=True`` checks on every POST."""
    return f'<input type="hidden" name="csrf_token" value="{esc(session.csrf_token())}">'


# --------------------------------------------------------------------------- pages

NAV = (
    ("/", "Home"),
    ("/counter", "Counter"),
    ("/notes", "Notes"),
    ("/secure", "SSL-only"),
    ("/sessions", "Your sessions"),
)

CSS = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
header { background: #23395d; color: #fff; padding: .6rem 1.5rem; display: flex;
         align-items: center; gap: 1.2rem; flex-wrap: wrap; }
header strong { margin-right: 1rem; }
header a { color: #dfe7f5; text-decoration: none; }
header a.here { color: #fff; border-bottom: 2px solid #8fb3ff; }
header .who { margin-left: auto; display: flex; gap: .6rem; align-items: center; }
header form { margin: 0; }
main { max-width: 52rem; margin: 1.5rem auto; background: #fff; padding: 1rem 2rem 2rem;
       border-radius: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
h1 { font-size: 1.6rem; margin-top: .5rem; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6eb;
         vertical-align: top; }
th { color: #5a6475; font-weight: 600; width: 14rem; }
table.list th { width: auto; }
code { background: #eef1f5; padding: 0 .25rem; border-radius: 3px; }
.flash { background: #e7f5e9; border-left: 4px solid #3c9a4b; padding: .5rem 1rem; }
.error { background: #fdecea; border-left: 4px solid #c0392b; padding: .5rem 1rem; }
.badge { display: inline-block; padding: 0 .5rem; border-radius: 9px; font-size: .85rem;
         background: #e8eefc; color: #23395d; }
.badge.server { background: #fff1d6; color: #7a4b00; }
.badge.cookie { background: #e2f4e5; color: #1e6b2c; }
button { font: inherit; padding: .3rem .9rem; border-radius: 4px; border: 1px solid #23395d;
         background: #23395d; color: #fff; cursor: pointer; }
button.light { background: #fff; color: #23395d; }
input[type=text], input[type=password], textarea { font: inherit; padding: .3rem;
         width: 100%; box-sizing: border-box; }
form.stack p { margin: .4rem 0; }
ol.notes li { word-break: break-all; margin-bottom: .3rem; }
progress { width: 12rem; vertical-align: middle; margin-left: .5rem; }
.big { font-size: 2.5rem; margin: .5rem 0; }
footer { text-align: center; color: #7a8394; font-size: .85rem; margin-bottom: 2rem; }
"""


def layout(title: str, body: str, *, status: int = 200, with_session: bool = True) -> str:
    """A complete page: shared navigation, the flash message, ``body``."""
    bottle.response.status = status
    here = bottle.request.path
    links = " ".join(
        f'<a href="{path}"{" class=here" if path == here else ""}>{label}</a>'
        for path, label in NAV
    )
    who, message = '<a href="/login">Log in</a>', ""
    if with_session:
        session = current_session()
        username = session.get("username")
        if username is not None:
            who = (
                f"<span>Signed in as <b>{esc(username)}</b></span>"
                f'<form method="post" action="/logout">{hidden_csrf(session)}'
                '<button class="light">Log out</button></form>'
            )
        message = "".join(
            f'<p class="flash {esc(category)}">{esc(note)}</p>'
            for category, note in session.pop_flashed(with_categories=True)
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · sa_sessions demo</title>
<link rel="stylesheet" href="/static/demo.css"></head>
<body><header><strong>sa_sessions demo</strong> {links}<span class="who">{who}</span></header>
<main><h1>{esc(title)}</h1>
{message}
{body}
</main>
<footer>sa_sessions · Bottle {esc(bottle.__version__)} · sessions in one signed cookie
or one sealed row</footer></body></html>"""


class Demo:
    """The demo's request handlers, sharing the session store and the database."""

    def __init__(self, store: SessionStore[WebSession], db: sessionmaker[Any]) -> None:
        self.store = store
        self.db = db

    def add_routes(self, app: bottle.Bottle, plugin: SessionPlugin) -> None:
        app.route("/", "GET", self.home)
        app.route("/login", "GET", self.login_form)
        app.route("/login", "POST", self.login)
        app.route("/logout", "POST", self.logout)
        app.route("/counter", "GET", self.counter)
        app.route("/counter", "POST", self.reset_counter)
        app.route("/notes", "GET", self.notes)
        app.route("/notes", "POST", self.change_notes)
        app.route("/secure", "GET", self.secure)
        app.route("/secure", "POST", self.start_ssl_only)
        app.route("/sessions", "GET", self.sessions)
        app.route("/sessions/revoke-others", "POST", self.revoke_others)
        # Two ways to keep the session machinery out of a route entirely:
        app.route("/static/demo.css", "GET", self.stylesheet, sa_sessions={"enabled": False})
        app.route("/healthz", "GET", self.health, skip=[plugin])
        app.add_hook("after_request", self.security_headers)
        for code in (400, 403, 404, 405, 503):
            app.error(code)(self.error_page)

    # ------------------------------------------------------------------ storage view

    def blob_size(self, session: Session) -> int | None:
        """Size of this session's sealed row, or None when it has no row."""
        if session.sid is None:
            return None
        with self.db() as db:
            size = db.scalar(
                select(func.length(WebSession.data)).where(WebSession.id == session.hashed_id)
            )
        return None if size is None else int(size)

    def storage_rows(self, session: Session) -> str:
        """Table rows: where this session lives and how big it is."""
        if not session.is_active():
            return "<tr><th>Stored in</th><td>nowhere: there is no session yet</td></tr>"
        cookie = raw_cookie(cookie_name())
        if cookie is None:
            where = '<span class="badge">new</span> its cookie is set by this response'
        elif cookie.startswith("v1.i"):
            where = (
                '<span class="badge server">server</span> one row in <code>web_sessions</code>'
                " (read through the cache); the cookie carries only the signed id"
            )
        else:
            where = (
                '<span class="badge cookie">cookie</span> all the data is in one signed '
                "cookie: no database or cache access"
            )
        rows = [f"<tr><th>Stored in</th><td>{where}</td></tr>"]
        if cookie is not None:
            used = len(cookie_name()) + 1 + len(cookie)
            rows.append(
                f"<tr><th>Cookie size</th><td>{used} of {COOKIE_LIMIT} bytes "
                f'<progress value="{min(used, COOKIE_LIMIT)}" max="{COOKIE_LIMIT}"></progress>'
                "</td></tr>"
            )
        return "\n".join(rows)

    def session_rows(self, session: Session) -> str:
        if not session.is_active():
            return self.storage_rows(session)
        sid = session.sid or ""
        keys = ", ".join(sorted(key for key in session if key != "flash")) or "-"
        return "\n".join(
            (
                self.storage_rows(session),
                f"<tr><th>Session id</th><td><code>{esc(sid[:8])}…</code> "
                "(256 random bits; the database only sees its SHA-256)</td></tr>",
                f"<tr><th>Expires</th><td>{when(session.expires_at)}</td></tr>",
                f"<tr><th>SSL-only</th><td>{'yes' if session.is_ssl_only() else 'no'}</td></tr>",
                f"<tr><th>Keys</th><td>{esc(keys)}</td></tr>",
            )
        )

    # ------------------------------------------------------------------ pages

    def home(self, session: Session) -> str:
        username = session.get("username")
        hello = (
            f"<p>Welcome back, <b>{esc(username)}</b>.</p>"
            if username
            else '<p>You are browsing anonymously. <a href="/login">Log in</a> '
            f"with any user name and the password <code>{DEMO_PASSWORD}</code>.</p>"
        )
        body = f"""{hello}
<p>sa_sessions keeps small sessions in <b>one signed cookie</b> and moves bigger ones
into <b>one sealed row</b> of your own SQLAlchemy model, read through a cache
(memcached in production).  Nothing happens until a page touches the session: this
page only reads it, so it sets no cookie for a visitor without one.</p>
<h2>This session</h2>
<table>{self.session_rows(session)}</table>
<h2>Try it</h2>
<ul>
<li><a href="/counter">Counter</a>: <code>session.increment("visits")</code> in a
cookie-only session: no SQL at all.</li>
<li><a href="/notes">Notes</a>: add notes until the session outgrows the 4 KB cookie
and moves into a database row.</li>
<li><a href="/login">Log in</a>: <code>session.regenerate_id()</code> gives you a
new session id; the old cookie is dead.</li>
<li><a href="/sessions">Your sessions</a>: every session of your account, straight
from SQL, and "log out all other sessions".</li>
<li><a href="/secure">SSL-only</a>: a session whose cookie never travels over
plain http.</li>
</ul>"""
        return layout("Home", body)

    def login_form(self, session: Session, error: str = "", status: int = 200) -> str:
        problem = f'<p class="error">{esc(error)}</p>' if error else ""
        body = f"""{problem}
<form class="stack" method="post" action="/login">{hidden_csrf(session)}
<p><label>User name<br><input type="text" name="username" maxlength="40"
   required autofocus></label></p>
<p><label>Password (it is <code>{DEMO_PASSWORD}</code>)<br>
   <input type="password" name="password" required></label></p>
<p><label><input type="checkbox" name="remember" value="1"> Remember me for 30 days</label></p>
<p><button>Log in</button></p>
</form>
<p>Logging in calls <code>session.regenerate_id()</code> <em>before</em> storing your
user id: a session id planted before login (session fixation) is worth nothing
afterwards.  A session with a user id always lives in a database row, so that it
can be revoked.  "Remember me" is <code>regenerate_id(expiration=timedelta(days=30))</code>
with a lasting cookie; without it the cookie ends when the browser closes
(<code>session.permanent = False</code>).</p>"""
        return layout("Log in", body, status=status)

    def login(self, session: Session) -> str:
        username = (bottle.request.forms.getunicode("username", default="") or "").strip()
        password = bottle.request.forms.getunicode("password", default="") or ""
        if USERNAME.fullmatch(username) is None:
            return self.login_form(
                session, "User names are 1-40 letters, digits or . _ @ -", status=400
            )
        if not hmac.compare_digest(password.encode("utf-8"), DEMO_PASSWORD.encode("ascii")):
            return self.login_form(session, "Wrong password (hint: it is shown).", status=400)
        user_id = self.user_id(username)
        remember = bottle.request.forms.get("remember") == "1"
        # FIRST: a new id (and a new CSRF token); the old session is deleted.
        session.regenerate_id(expiration=REMEMBER_FOR if remember else None)
        session.permanent = remember  # without "remember me": gone with the browser
        session["user_id"] = user_id
        session["username"] = username
        session.flash(f"Logged in as {username}; your session has a new id.")
        go("/")

    def user_id(self, username: str) -> int:
        """The id of the user with this name, created on first login."""
        with self.db() as db:
            found = db.scalar(select(User.id).where(User.username == username))
            if found is not None:
                return int(found)
            user = User(username=username, created_at=datetime.now(timezone.utc))
            db.add(user)
            try:
                db.commit()
            except sa_exc.IntegrityError:  # created by a parallel request
                db.rollback()
                return int(db.scalars(select(User.id).where(User.username == username)).one())
            return user.id

    def logout(self, session: Session) -> None:
        session.terminate()  # deletes the row now and expires the cookie
        session.flash("Logged out: that session is gone for good.")  # in a new, tiny one
        go("/")

    def counter(self, session: Session) -> str:
        visits = session.increment("visits")
        where = (
            "Because you are logged in, this session lives in a database row."
            if session.get("user_id") is not None
            else "For an anonymous visitor this small session lives entirely in one signed "
            "cookie: this page runs no SQL and touches no cache."
        )
        body = f"""<p class="big">{visits}</p>
<p>You have viewed this page {visits} time{"" if visits == 1 else "s"} in this session.
{where}</p>
<p><code>session.increment("visits")</code> records an addition, not a value: two
parallel requests both count, even when they race.</p>
<form method="post" action="/counter">{hidden_csrf(session)}
<button class="light">Reset the counter</button></form>"""
        return layout("Visit counter", body)

    def reset_counter(self, session: Session) -> None:
        session.pop("visits", None)
        go("/counter")

    def notes(self, session: Session) -> str:
        notes = session.get("notes", [])
        items = "".join(f"<li>{esc(note)}</li>" for note in notes)
        listing = f'<ol class="notes">{items}</ol>' if items else "<p>No notes yet.</p>"
        row = self.blob_size(session)
        row_text = "no row" if row is None else f"sealed blob of {row} bytes"
        body = f"""<p>Notes accumulate in the session.  Small sessions travel in the
cookie; once the cookie would pass 4096 bytes (with its attributes) the session
moves into a database row and the cookie shrinks to a signed id.  Logged-in sessions
always live in a row.</p>
<table>{self.storage_rows(session)}
<tr><th>Database row</th><td>{row_text}</td></tr>
<tr><th>Notes</th><td>{len(notes)} ({sum(len(n) for n in notes)} characters)</td></tr>
</table>
<form class="stack" method="post" action="/notes">{hidden_csrf(session)}
<p><textarea name="note" rows="3" maxlength="{NOTE_MAX_CHARS}"
   placeholder="Write a note"></textarea></p>
<p><button name="action" value="add">Add note</button>
<button class="light" name="action" value="random">Add 600 random characters</button>
<button class="light" name="action" value="clear">Clear all notes</button></p>
</form>
{listing}"""
        return layout("Notes", body)

    def change_notes(self, session: Session) -> None:
        action = bottle.request.forms.getunicode("action", default="add")
        notes = list(session.get("notes", []))
        if action == "clear":
            session.pop("notes", None)
            go("/notes")
        if action == "random":
            text = secrets.token_urlsafe(450)
        else:
            text = (bottle.request.forms.getunicode("note", default="") or "").strip()
        if text:
            notes.append(text[:NOTE_MAX_CHARS])
            # Assign the list again: changes inside a stored value are not tracked.
            session["notes"] = notes
        go("/notes")

    def secure(self, session: Session) -> str:
        if not is_https():
            body = """<p class="error">This page was requested over plain http.</p>
<p>An SSL-only session (<code>session.start(ssl_only=True)</code>) gets a
<code>Secure</code> cookie named <code>__Host-session</code>: the browser never sends
it over http, and sa_sessions refuses to load it from an http request.  So it cannot
be started here.  Serve the app over https (or behind a TLS proxy that sets
<code>wsgi.url_scheme</code>) to try it.</p>"""
            return layout("SSL-only area", body)
        state = "an SSL-only session" if session.is_ssl_only() else "a regular session"
        body = f"""<p>You are on https with {state}.</p>
<table>{self.session_rows(session)}</table>
<form method="post" action="/secure">{hidden_csrf(session)}
<button>Switch to an SSL-only session</button></form>
<p>The data is copied into a new session started with <code>ssl_only=True</code>
(a new id; the old session is deleted).</p>"""
        return layout("SSL-only area", body)

    def start_ssl_only(self, session: Session) -> None:
        if not is_https():
            bottle.abort(403, "SSL-only sessions can only be started over https.")
        data = {key: value for key, value in session.items() if key != "_csrf_token"}
        session.start(ssl_only=True)
        session.update(data)
        session.flash("This session is now SSL-only.")
        go("/secure")

    def sessions(self, session: Session) -> str:
        user_id = session.get("user_id")
        if user_id is None:
            body = '<p>Please <a href="/login">log in</a> to see your sessions.</p>'
            return layout("Your sessions", body)
        current = session.hashed_id
        rows = "".join(
            f"<tr><td>{'<b>this one</b>' if info.hashed_id == current else ''}</td>"
            f"<td>{esc(info.columns['device'] or 'unknown device')}</td>"
            f"<td>{esc(info.columns['network'] or '-')}</td>"
            f"<td>{esc(ago(info.last_seen))}</td><td>{when(info.created_at)}</td>"
            f"<td>{when(info.expires_at)}</td></tr>"
            for info in self.store.sessions(WebSession.user_id == user_id)
        )
        body = f"""<p>Every session of your account, most recently seen first:
<code>store.sessions(WebSession.user_id == uid)</code> (metadata only, never an id).</p>
<table class="list"><tr><th></th><th>Device</th><th>Network</th><th>Last seen</th>
<th>Signed in</th><th>Expires</th></tr>{rows}</table>
<form method="post" action="/sessions/revoke-others">{hidden_csrf(session)}
<button>Log out all other sessions</button></form>
<p>That button runs <code>session.revoke_others(WebSession.user_id == uid)</code>:
rows and cached copies are deleted; those browsers are anonymous on their next
request.  The device and the network (not the address) come from
<code>sa_sessions.metadata</code> in the store's <code>columns=</code>.</p>"""
        return layout("Your sessions", body)

    def revoke_others(self, session: Session) -> None:
        user_id = session.get("user_id")
        if user_id is None:
            go("/login")
        count = session.revoke_others(WebSession.user_id == user_id)
        session.flash(f"Logged out {count} other session{'' if count == 1 else 's'}.")
        go("/sessions")

    # ------------------------------------------------------------------ no sessions here

    def stylesheet(self) -> str:
        bottle.response.content_type = "text/css; charset=utf-8"
        bottle.response.set_header("Cache-Control", "max-age=3600")
        return CSS

    def health(self) -> str:
        bottle.response.content_type = "text/plain; charset=utf-8"
        return "ok\n"

    def security_headers(self) -> None:
        headers = bottle.response.headers
        headers["Content-Security-Policy"] = (
            "default-src 'self'; form-action 'self'; frame-ancestors 'none'"
        )
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "same-origin"

    def error_page(self, error: bottle.HTTPError) -> str:
        # No session access here: a 503 means the session database is down.
        body = f'<p class="error">{esc(error.body)}</p><p><a href="/">Back home</a></p>'
        return layout(
            f"{error.status_code}: {error.status_line[4:]}",
            body,
            status=error.status_code,
            with_session=False,
        )


# --------------------------------------------------------------------------- serving


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref, one thread per connection: browsers keep idle connections open."""

    daemon_threads = True


def serve(app: bottle.Bottle, host: str, port: int, server: str = "auto") -> None:
    """Serve until interrupted; prints the URL (port 0 picks a free one)."""
    if server in ("auto", "waitress"):
        try:
            waitress_server = importlib.import_module("waitress.server")
        except ImportError:
            if server == "waitress":
                raise
        else:
            httpd = waitress_server.create_server(app, host=host, port=port)
            _announce(host, int(httpd.effective_port), "waitress")
            try:
                httpd.run()
            finally:
                httpd.close()
            return
    with make_server(host, port, app, server_class=_ThreadingWSGIServer) as wsgiref_server:
        _announce(host, wsgiref_server.server_port, "wsgiref")
        wsgiref_server.serve_forever()


def _announce(host: str, port: int, server: str) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(f"sa_sessions demo on http://{shown}:{port}/ ({server}; Ctrl-C stops)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the sa_sessions Bottle demo.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080; 0 = any free)")
    parser.add_argument(
        "--server",
        choices=("auto", "waitress", "wsgiref"),
        default="auto",
        help="waitress when installed, else the threaded stdlib server",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = create_app()
    with contextlib.suppress(KeyboardInterrupt):
        serve(app, args.host, args.port, args.server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
