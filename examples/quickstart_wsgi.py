"""Quick start: sa_sessions in any WSGI application, with SessionMiddleware.

``python examples/quickstart_wsgi.py`` sends a few requests to the app over
real HTTP and prints the answers; ``--serve`` serves it on port 8080.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import secrets
import threading
import urllib.request
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server

from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase

from sa_sessions import SessionMiddleware
from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import get_current_session
from sa_sessions import memory_region

# --- the quick start -------------------------------------------------------------
KEY = os.environ.get("SA_SESSIONS_COOKIE_KEY") or secrets.token_hex(32)  # >= 32 bytes

# PEP 3333 types with public names (Python 3.10+).
Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class Base(DeclarativeBase):
    pass


class WebSession(SessionModel, Base):
    __tablename__ = "web_sessions"


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    session = get_current_session()  # or environ["sa_sessions.session"]
    if environ["PATH_INFO"] == "/logout":
        session.terminate()
        text = "Bye."
    else:
        text = f"Hello! Visits in this session: {session.increment('visits')}"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode() + b"\n"]


def create_app(db_url: str = "sqlite:///quickstart.sqlite3") -> WSGIApp:
    engine = create_engine(db_url)
    Base.metadata.create_all(engine)
    store = SessionStore(WebSession, engine, region=memory_region(), secret_keys=KEY)
    return SessionMiddleware(hello, store, cookie_key=KEY)


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
        with make_server("127.0.0.1", args.port, app) as server:
            print(f"serving on http://127.0.0.1:{args.port}/", flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                return 0
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
