"""An audit trail from the lifecycle hooks: logins, logouts and revocations in a table.

``SessionMiddleware(..., hooks=AuditTrail(engine))`` writes one row per event into an
``audit_events`` table of your own: a session created, its id regenerated (at login),
ended (logout), other sessions revoked ("log out my other devices"), or found
expired.  Hooks are given hashed ids (the session table's primary key) and never a
raw session id, so the audit table is no way into anybody's session; a hook that
fails is logged and changes nothing about the request.

Run it to see a laptop and a phone sign in, the laptop log the phone out, then
log out itself::

    python examples/audit_hooks.py                 # SQLite file
    python examples/audit_hooks.py postgresql+psycopg://localhost/test
"""

from __future__ import annotations

import argparse
import io
import secrets
import sys
from collections.abc import Callable
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy import Engine
from sqlalchemy import ForeignKey
from sqlalchemy import String
from sqlalchemy import create_engine
from sqlalchemy import delete
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from sa_sessions import SessionMiddleware
from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import get_current_session
from sa_sessions import memory_region
from sa_sessions.model import UtcDateTime

KEY = secrets.token_hex(32)

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "audit_demo_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


class WebSession(SessionModel, Base):
    __tablename__ = "audit_demo_sessions"

    user_id: Mapped[int | None] = mapped_column(ForeignKey("audit_demo_users.id"), index=True)


class AuditEvent(Base):
    """One lifecycle event; ``session`` is a hashed id, safe to keep and to show."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    event: Mapped[str] = mapped_column(String(20))
    session: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(200))


class AuditTrail:
    """The hooks: each writes one row, in its own short transaction."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock

    def _record(self, event: str, session: str | None, detail: str | None = None) -> None:
        row = {"at": self.clock(), "event": event, "session": session, "detail": detail}
        with self.engine.begin() as conn:
            conn.execute(insert(AuditEvent), row)

    def on_created(self, hashed_id: str) -> None:
        self._record("created", hashed_id)

    def on_regenerated(self, old_hashed_id: str, new_hashed_id: str) -> None:
        self._record("regenerated", new_hashed_id, f"was {old_hashed_id[:12]}")

    def on_ended(self, hashed_id: str) -> None:
        self._record("ended", hashed_id)

    def on_revoked(self, count: int, criteria: tuple[ColumnElement[bool], ...]) -> None:
        self._record("revoked", None, f"{count} other session(s)")

    def on_expired(self, hashed_id: str) -> None:
        self._record("expired", hashed_id)


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """``/login?user=N``, ``/logout-others``, ``/logout`` and a visit counter."""
    session = get_current_session()
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    if path == "/login":
        session.regenerate_id()  # a new id at every login: no session fixation
        session["user_id"] = int(query.removeprefix("user="))
        text = f"signed in as user {session['user_id']}"
    elif path == "/logout-others":
        count = session.revoke_others(WebSession.user_id == session["user_id"])
        text = f"logged out {count} other session(s)"
    elif path == "/logout":
        session.terminate()
        text = "signed out"
    else:
        text = f"visit {session.increment('visits')}"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode()]


def create_app(db_url: str) -> tuple[SessionMiddleware, Engine]:
    engine = create_engine(db_url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.scalar(select(User.id).where(User.id == 7)) is None:
            conn.execute(insert(User), {"id": 7, "name": "ada"})
    store = SessionStore(
        WebSession,
        engine,
        region=memory_region(),
        secret_keys=KEY,
        columns={"user_id": lambda data: data.get("user_id")},
    )
    hooks = AuditTrail(engine, store.clock)
    return SessionMiddleware(app, store, cookie_key=KEY, hooks=hooks), engine


class Browser:
    """Calls the WSGI app directly and keeps its one session cookie."""

    def __init__(self, wsgi: SessionMiddleware, name: str) -> None:
        self.wsgi = wsgi
        self.name = name
        self.cookie: str | None = None

    def get(self, target: str) -> str:
        path, _, query = target.partition("?")
        environ: Environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
        }
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        headers: list[tuple[str, str]] = []

        def start_response(status: str, sent: list[tuple[str, str]], exc: object = None) -> Any:
            headers.extend(sent)
            return lambda data: None

        body = b"".join(self.wsgi(environ, start_response)).decode()
        for name, value in headers:
            if name == "Set-Cookie":
                pair = value.split(";", 1)[0]
                self.cookie = None if pair.endswith("=") else pair
        return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lifecycle hooks writing an audit table.")
    parser.add_argument("url", nargs="?", default="sqlite:///audit_hooks.sqlite3")
    args = parser.parse_args(argv)
    wsgi, engine = create_app(args.url)
    with engine.begin() as conn:
        conn.execute(delete(AuditEvent))
    laptop, phone = Browser(wsgi, "laptop"), Browser(wsgi, "phone")
    for browser, target in [
        (laptop, "/"),
        (laptop, "/login?user=7"),
        (phone, "/login?user=7"),
        (laptop, "/logout-others"),
        (phone, "/"),
        (laptop, "/logout"),
    ]:
        print(f"{browser.name:6} GET {target:16} {browser.get(target)}")
    print("audit_events:")
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEvent.event, AuditEvent.session, AuditEvent.detail).order_by(AuditEvent.id)
        )
        for event, session, detail in rows:
            shown = session[:12] if session else "-"
            print(f"  {event:12} {shown:12} {detail or ''}".rstrip())
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
