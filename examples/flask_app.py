"""sa_sessions in a Flask application, with Flask-Login and Flask-WTF.

Run it::

    python examples/flask_app.py                # http://127.0.0.1:8080/
    python examples/flask_app.py --port 9000

Out of the box it needs no server: SQLite in ``./flask_demo.db`` and an in-process
cache.  The environment switches it to the production set-up:

``SA_SESSIONS_DB_URL``      e.g. ``mysql+mysqldb://root@localhost/test``
``SA_SESSIONS_MEMCACHED``   a memcached pool, e.g. ``10.0.0.5:11211,10.0.0.6:11211``
``SA_SESSIONS_COOKIE_KEY``  the session signing key (at least 32 bytes)
``FLASK_SECRET_KEY``        Flask's ``SECRET_KEY`` (Flask-WTF's CSRF tokens and
                            Flask-Login's remember cookie; not the sessions)

Without the keys, random per-process keys are used and sessions die with the process.

What it shows: ``flask.session`` is an sa_sessions session, so Flask-Login
(``login_user``, ``current_user``, ``logout_user``, "remember me") and Flask-WTF
(CSRF tokens in every form) work unchanged.  A visit counter lives in one signed
cookie; notes grow the session into a database row; logging in regenerates the
session id (no session fixation) and keeps the session in a row, so that
"log out my other sessions" can revoke it; logging out deletes the row at once.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import logging
import os
import secrets
import socketserver
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import datetime
from datetime import timezone
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIServer
from wsgiref.simple_server import make_server

from flask import Flask
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager  # type: ignore[import-untyped]
from flask_login import current_user
from flask_login import login_user
from flask_login import logout_user
from flask_wtf import FlaskForm  # type: ignore[import-untyped]
from flask_wtf.csrf import CSRFError  # type: ignore[import-untyped]
from flask_wtf.csrf import CSRFProtect
from flask_wtf.csrf import generate_csrf
from jinja2 import DictLoader
from markupsafe import Markup
from markupsafe import escape
from sqlalchemy import ForeignKey
from sqlalchemy import String
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import sessionmaker
from werkzeug.exceptions import HTTPException
from wtforms import BooleanField  # type: ignore[import-untyped]
from wtforms import PasswordField
from wtforms import StringField
from wtforms import TextAreaField
from wtforms.validators import DataRequired  # type: ignore[import-untyped]
from wtforms.validators import Length
from wtforms.validators import Regexp

from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import memcached_region
from sa_sessions import memory_region
from sa_sessions.flask import FlaskSessionInterface
from sa_sessions.flask import session
from sa_sessions.model import UtcDateTime

log = logging.getLogger("sa_sessions.flask_demo")

DEFAULT_DB_URL = "sqlite:///flask_demo.db"
#: Any user name logs in with this password (it is a demo).
DEMO_PASSWORD = "demo"
NOTE_MAX_CHARS = 2000


# --------------------------------------------------------------------------- models


class Base(DeclarativeBase):
    pass


class User(Base):
    """An account; also Flask-Login's user object (the four members it asks for)."""

    __tablename__ = "flask_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return str(self.id)


class WebSession(SessionModel, Base):
    """The sessions table: SessionModel's columns plus the user, for SQL."""

    __tablename__ = "flask_sessions"

    # Derived from Flask-Login's "_user_id" at every save (see ``columns=`` below):
    # a session with a user always lives in a row, so it can be revoked.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("flask_users.id", ondelete="CASCADE"), index=True
    )


def logged_in_user(data: Mapping[str, Any]) -> int | None:
    """The user id Flask-Login keeps in the session (as a string), for the user_id column."""
    value = data.get("_user_id")
    return int(value) if isinstance(value, str) and value.isdigit() else None


# --------------------------------------------------------------------------- forms


class LoginForm(FlaskForm):  # type: ignore[misc]
    username = StringField(
        "User name",
        validators=[
            DataRequired(),
            Regexp(r"^[A-Za-z0-9_.@-]{1,40}$", message="1-40 letters, digits or . _ @ -"),
        ],
    )
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Remember me")


class NoteForm(FlaskForm):  # type: ignore[misc]
    note = TextAreaField("Note", validators=[DataRequired(), Length(max=NOTE_MAX_CHARS)])


# --------------------------------------------------------------------------- pages

TEMPLATES = {
    "layout.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · sa_sessions + Flask</title></head>
<body><header><a href="{{ url_for('home') }}">Home</a>
<a href="{{ url_for('counter') }}">Counter</a> <a href="{{ url_for('notes') }}">Notes</a>
{% if current_user.is_authenticated %}
<span>Signed in as <b>{{ current_user.username }}</b></span>
<form method="post" action="{{ url_for('logout') }}">{{ hidden_csrf() }}
<button>Log out</button></form>
{% else %}<a href="{{ url_for('login') }}">Log in</a>{% endif %}
</header>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
<main><h1>{{ title }}</h1>{% block body %}{% endblock %}</main></body></html>""",
    "home.html": """{% extends "layout.html" %}{% block body %}
{% if current_user.is_authenticated %}
<p>Welcome back, <b>{{ current_user.username }}</b>.</p>
<p>Your account has <b>{{ devices }}</b> active session{{ "" if devices == 1 else "s" }}.</p>
<form method="post" action="{{ url_for('revoke_others') }}">{{ hidden_csrf() }}
<button>Log out my other sessions</button></form>
{% else %}
<p>You are browsing anonymously. <a href="{{ url_for('login') }}">Log in</a> with any
user name and the password <code>demo</code>.</p>
{% endif %}{% endblock %}""",
    "counter.html": """{% extends "layout.html" %}{% block body %}
<p class="big">{{ visits }}</p>
<p>session.increment("visits"): for a visitor who is not logged in, the whole session
lives in one signed cookie (no SQL, no cache).</p>{% endblock %}""",
    "notes.html": """{% extends "layout.html" %}{% block body %}
<form method="post">{{ form.csrf_token }}{{ form.note(rows=3, cols=60) }}
<button name="action" value="add">Add note</button></form>
<form method="post" action="{{ url_for('clear_notes') }}">{{ hidden_csrf() }}
<button>Clear all notes</button></form>
<p>{{ notes|length }} notes ({{ notes|map('length')|sum }} characters).</p>
<ol>{% for note in notes %}<li>{{ note }}</li>{% endfor %}</ol>{% endblock %}""",
    "login.html": """{% extends "layout.html" %}{% block body %}
{% for field, errors in form.errors.items() %}
<p class="error">{{ field }}: {{ errors|join(", ") }}</p>{% endfor %}
<form method="post">{{ form.csrf_token }}
<p>{{ form.username.label }} {{ form.username(maxlength=40) }}</p>
<p>{{ form.password.label }} {{ form.password() }} (it is <code>demo</code>)</p>
<p>{{ form.remember() }} {{ form.remember.label }}</p>
<button>Log in</button></form>{% endblock %}""",
    "error.html": """{% extends "layout.html" %}{% block body %}
<p class="error">{{ message }}</p>{% endblock %}""",
}


def hidden_csrf() -> Markup:
    """The CSRF field of a form that is only a button; the token is made on first use.

    A session is written only when a page shows a form, so a visitor who only reads
    pages gets no cookie.
    """
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(generate_csrf())


def _servers(memcached: str | Sequence[str]) -> list[str]:
    items = memcached.split(",") if isinstance(memcached, str) else list(memcached)
    return [item.strip() for item in items if item.strip()]


def _key(given: str | bytes | None, variable: str) -> str | bytes:
    key = given or os.environ.get(variable)
    if key:
        return key
    log.warning("%s is not set: using a random key that dies with the process", variable)
    return secrets.token_hex(32)


def _safe_next(target: str | None) -> str | None:
    """A local path to go back to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def create_app(
    db_url: str | None = None,
    memcached: str | Sequence[str] | None = None,
    cookie_key: str | bytes | None = None,
    secret_key: str | bytes | None = None,
) -> Flask:
    """Build the app (arguments win over the environment variables)."""
    engine = create_engine(
        db_url or os.environ.get("SA_SESSIONS_DB_URL") or DEFAULT_DB_URL,
        pool_pre_ping=True,  # pooled MariaDB connections outlive wait_timeout
        pool_recycle=1800,
    )
    Base.metadata.create_all(engine)
    servers = _servers(memcached or os.environ.get("SA_SESSIONS_MEMCACHED") or "")
    key = _key(cookie_key, "SA_SESSIONS_COOKIE_KEY")
    store = SessionStore(
        WebSession,
        engine,
        region=memcached_region(servers) if servers else memory_region(),
        secret_keys=key,
        columns={"user_id": logged_in_user},
    )
    app = Flask(__name__)
    app.config["SECRET_KEY"] = _key(secret_key, "FLASK_SECRET_KEY")
    app.jinja_loader = DictLoader(TEMPLATES)
    app.jinja_env.globals["hidden_csrf"] = hidden_csrf
    sessions = FlaskSessionInterface(store, cookie_key=key)
    sessions.init_app(app)  # flask.session is sa_sessions'; outages answer 503
    CSRFProtect(app)  # every POST needs the session's CSRF token
    login_manager = LoginManager(app)
    db = sessionmaker(engine, expire_on_commit=False)
    login_manager.user_loader(lambda user_id: _load_user(db, user_id))
    Demo(store, db).add_routes(app)
    return app


def _load_user(db: sessionmaker[DbSession], user_id: str) -> User | None:
    with db() as conn:
        return conn.get(User, int(user_id)) if user_id.isdigit() else None


class Demo:
    """The views, sharing the session store and the database."""

    def __init__(self, store: SessionStore[WebSession], db: sessionmaker[DbSession]) -> None:
        self.store = store
        self.db = db

    def add_routes(self, app: Flask) -> None:
        app.add_url_rule("/", "home", self.home)
        app.add_url_rule("/counter", "counter", self.counter)
        app.add_url_rule("/notes", "notes", self.notes, methods=["GET", "POST"])
        app.add_url_rule("/notes/clear", "clear_notes", self.clear_notes, methods=["POST"])
        app.add_url_rule("/login", "login", self.login, methods=["GET", "POST"])
        app.add_url_rule("/logout", "logout", self.logout, methods=["POST"])
        app.add_url_rule("/revoke-others", "revoke_others", self.revoke_others, methods=["POST"])
        app.add_url_rule("/healthz", "health", self.health)
        app.register_error_handler(CSRFError, self.csrf_error)
        app.register_error_handler(503, self.unavailable)

    def page(self, template: str, title: str, status: int = 200, **values: Any) -> tuple[str, int]:
        return render_template(template, title=title, **values), status

    def home(self) -> ResponseReturnValue:
        devices = 0
        if current_user.is_authenticated:
            devices = len(self.store.sessions(WebSession.user_id == current_user.id))
        return self.page("home.html", "Home", devices=devices)

    def counter(self) -> ResponseReturnValue:
        return self.page("counter.html", "Visit counter", visits=session.increment("visits"))

    def notes(self) -> ResponseReturnValue:
        form = NoteForm()
        if form.validate_on_submit():
            # Assign the list again: changes inside a stored value are not tracked.
            session["notes"] = [*session.get("notes", []), form.note.data.strip()]
            return redirect(url_for("notes"))
        return self.page("notes.html", "Notes", form=form, notes=session.get("notes", []))

    def clear_notes(self) -> ResponseReturnValue:
        session.pop("notes", None)
        return redirect(url_for("notes"))

    def login(self) -> ResponseReturnValue:
        form = LoginForm()
        if not form.validate_on_submit():
            status = 400 if request.method == "POST" else 200
            return self.page("login.html", "Log in", status, form=form)
        if not hmac.compare_digest(form.password.data.encode(), DEMO_PASSWORD.encode()):
            form.password.errors.append("Wrong password (hint: it is shown).")
            return self.page("login.html", "Log in", 400, form=form)
        user = self.user(form.username.data)
        session.regenerate_id()  # FIRST: a new id, the pre-login one is deleted (fixation)
        session.pop("csrf_token", None)  # and a new CSRF token for the new privilege
        login_user(user, remember=bool(form.remember.data))
        flash(f"Logged in as {user.username}; your session has a new id.")
        return redirect(_safe_next(request.args.get("next")) or url_for("home"))

    def user(self, username: str) -> User:
        """The user with this name, created on first login."""
        with self.db() as db:
            found = db.scalar(select(User).where(User.username == username))
            if found is not None:
                return found
            user = User(username=username, created_at=datetime.now(timezone.utc))
            db.add(user)
            try:
                db.commit()
            except sa_exc.IntegrityError:  # created by a parallel request
                db.rollback()
                return db.scalars(select(User).where(User.username == username)).one()
            return user

    def logout(self) -> ResponseReturnValue:
        # terminate() first (the row is deleted now, the cookie expired), then Flask-Login,
        # which may leave itself a note to clear its remember cookie.
        session.terminate()
        logout_user()
        return redirect(url_for("home"))

    def revoke_others(self) -> ResponseReturnValue:
        if not current_user.is_authenticated:
            return redirect(url_for("login"))
        count = session.revoke_others(WebSession.user_id == current_user.id)
        flash(f"Logged out {count} other session{'' if count == 1 else 's'}.")
        return redirect(url_for("home"))

    def health(self) -> ResponseReturnValue:
        return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"}

    def csrf_error(self, error: CSRFError) -> ResponseReturnValue:
        return self.page("error.html", "Bad request", 400, message=error.description)

    def unavailable(self, error: HTTPException) -> ResponseReturnValue:
        # The session database is down: this page must not touch the session.
        body = f"<!doctype html><title>Unavailable</title><p>{escape(error.description)}</p>"
        return body, 503


# --------------------------------------------------------------------------- serving


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref, one thread per connection: browsers keep idle connections open."""

    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the sa_sessions Flask demo.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080; 0 = any free)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = create_app()
    with make_server(args.host, args.port, app, server_class=_ThreadingWSGIServer) as server:
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"sa_sessions Flask demo on http://{host}:{server.server_port}/", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
