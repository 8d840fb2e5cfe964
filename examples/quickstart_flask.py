"""Quick start: sa_sessions in a Flask application.

``python examples/quickstart_flask.py`` sends a few requests to the app over
real HTTP and prints the answers; ``--serve`` serves it on port 8080.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import secrets
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server

from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase

from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import memory_region
from sa_sessions.flask import FlaskSessionInterface
from sa_sessions.flask import session  # flask.session, typed as an sa_sessions Session

# --- the quick start -------------------------------------------------------------
KEY = os.environ.get("SA_SESSIONS_COOKIE_KEY") or secrets.token_hex(32)  # >= 32 bytes


class Base(DeclarativeBase):
    pass


class WebSession(SessionModel, Base):
    __tablename__ = "web_sessions"


def create_app(db_url: str = "sqlite:///quickstart.sqlite3") -> Flask:
    engine = create_engine(db_url)
    Base.metadata.create_all(engine)
    store = SessionStore(WebSession, engine, region=memory_region(), secret_keys=KEY)
    app = Flask(__name__)
    FlaskSessionInterface(store, cookie_key=KEY).init_app(app)

    @app.get("/")
    def index() -> str:
        visits = session.increment("visits")  # small: lives in the signed cookie
        return f"Hello! Visits in this session: {visits}\n"

    @app.get("/logout")
    def logout() -> str:
        session.terminate()
        return "Bye.\n"

    return app


# --- running it ------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve", action="store_true", help="serve on --port until Ctrl-C")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    app = create_app()
    if args.serve:
        app.run(host="127.0.0.1", port=args.port)
        return 0
    with make_server("127.0.0.1", 0, app, handler_class=_Quiet) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        for path in ("/", "/", "/", "/logout", "/"):
            with browser.open(f"http://127.0.0.1:{server.server_port}{path}") as response:
                print(f"GET {path:8} {response.read().decode().strip()}")
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
