"""A small plain-WSGI test application, and the fixtures the web-layer suites share.

The application drives the request's session through query-string actions, applied in
order, for example ``/?set=a:1&set=b:"x"&show`` (values are JSON; a value that is not JSON
is taken as a string).  Without any action the session is never touched.

=================  ============================================================
``show``           body gets data, sid, active, ssl_only, expires_at, len
``get=k``          ``session.get(k)`` into the body (``got``)
``has=k``          ``k in session`` into the body (``has``)
``set=k:json``     ``session[k] = value``
``rand=k:n``       ``session[k] =`` n pseudo-random base64url chars (incompressible)
``pad=k:n``        ``session[k] = "x" * n`` (very compressible)
``bytes=k:n``      ``session[k] =`` n pseudo-random bytes
``complex=k``      ``session[k] = 1+2j`` (pickle allow-listed, not cookie-encodable)
``quick=k:json``   ``session.set_quick(k, value)``
``popquick=k``     ``session.pop_quick(k)``
``del=k``          ``del session[k]`` (a KeyError is reported in the body)
``pop=k``          ``session.pop(k, None)``
``setdefault=k:j`` ``session.setdefault(k, value)``
``update=json``    ``session.update(obj)``
``clear``          ``session.clear()``
``incr=k[:d]``     ``session.increment(k, d)``
``append=k:json``  ``session[k].append(value)`` in place (not tracked on its own)
``mark=k``         ``session.mark_changed(k)``
``modified``       ``session.modified = True``
``start[=secs]``   ``session.start(expiration=timedelta(seconds=secs))``
``startssl``       ``session.start(ssl_only=True)``
``regen[=secs]``   ``session.regenerate_id(...)``
``terminate``      ``session.terminate()``
``hook=name``      call ``hooks[name](session)`` (tests pass hooks to the factory)
``status=NNN``     respond with that status (3xx adds a Location header)
``raise``          raise RuntimeError after the actions
``twice``          call start_response twice (the second time with exc_info)
=================  ============================================================
"""

from __future__ import annotations

import http.cookiejar
import json
import random
import string
import sys
import threading
import warnings
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
from dogpile.cache import CacheRegion
from sqlalchemy import Engine
from sqlalchemy import select

from sa_sessions import Session
from sa_sessions import SessionMiddleware
from sa_sessions import SessionStore
from sa_sessions import get_current_session
from sa_sessions import memcached_region
from sa_sessions import memory_region
from sa_sessions import redis_region
from sa_sessions.cache.entry import Kind
from sa_sessions.cookies import MAX_COOKIE_BYTES
from sa_sessions.cookies import CookieCodec
from sa_sessions.cookies import CookieState
from sa_sessions.ids import hash_session_id
from sa_sessions.wsgi import ENVIRON_KEY

from .conftest import SECRET
from .conftest import MemcachedProcess
from .conftest import RedisProcess
from .conftest import StatementLog

with warnings.catch_warnings():
    # WebOb still imports the deprecated cgi module on Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    import webtest

UTC = timezone.utc
COOKIE = "session"
HOST_COOKIE = "__Host-session"
MAX_SET_COOKIE = MAX_COOKIE_BYTES

Hook = Callable[[Any], Any]
StartResponse = Callable[..., Any]
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_ALPHABET = string.ascii_letters + string.digits + "-_"


class FakeClock:
    """A settable clock returning aware UTC datetimes (shared by settings and store)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def random_text(n: int) -> str:
    """Deterministic, incompressible text of n base64url characters."""
    return "".join(random.Random(n).choices(_ALPHABET, k=n))


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _split(arg: str) -> tuple[str, str]:
    key, _, value = arg.partition(":")
    return key, value


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def make_app(hooks: dict[str, Hook] | None = None) -> WSGIApp:
    """The action-driven test application (see the module docstring)."""
    hooks = hooks or {}

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        session = get_current_session()
        assert session is environ[ENVIRON_KEY]
        status = "200 OK"
        headers = [("Content-Type", "application/json")]
        out: dict[str, Any] = {}
        boom = twice = False
        for action, arg in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True):
            key, raw = _split(arg)
            if action == "show":
                out.update(
                    data={k: _jsonable(v) for k, v in session.items()},
                    sid=session.sid,
                    active=session.is_active(),
                    ssl_only=session.is_ssl_only(),
                    expires_at=session.expires_at.isoformat() if session.expires_at else None,
                    len=len(session),
                    bool=bool(session),
                )
            elif action == "get":
                out.setdefault("got", {})[arg] = _jsonable(session.get(arg))
            elif action == "has":
                out.setdefault("has", {})[arg] = arg in session
            elif action == "set":
                session[key] = _value(raw)
            elif action == "rand":
                session[key] = random_text(int(raw))
            elif action == "pad":
                session[key] = "x" * int(raw)
            elif action == "bytes":
                session[key] = random.Random(int(raw)).randbytes(int(raw))
            elif action == "complex":
                session[arg] = 1 + 2j
            elif action == "quick":
                session.set_quick(key, _value(raw))
            elif action == "popquick":
                out["popped"] = _jsonable(session.pop_quick(arg))
            elif action == "del":
                try:
                    del session[arg]
                except KeyError:
                    out["keyerror"] = arg
            elif action == "pop":
                out["popped"] = _jsonable(session.pop(arg, None))
            elif action == "setdefault":
                out["setdefault"] = _jsonable(session.setdefault(key, _value(raw)))
            elif action == "update":
                session.update(json.loads(arg))
            elif action == "clear":
                session.clear()
            elif action == "incr":
                out["incr"] = session.increment(key, int(raw) if raw else 1)
            elif action == "append":
                session[key].append(_value(raw))
            elif action == "mark":
                session.mark_changed(arg)
            elif action == "modified":
                session.modified = True
            elif action == "start":
                session.start(expiration=timedelta(seconds=int(arg)) if arg else None)
            elif action == "startssl":
                session.start(ssl_only=True)
            elif action == "regen":
                session.regenerate_id(timedelta(seconds=int(arg)) if arg else None)
            elif action == "terminate":
                session.terminate()
            elif action == "hook":
                out.setdefault("hooks", {})[arg] = _jsonable(hooks[arg](session))
            elif action == "status":
                status = {
                    "200": "200 OK",
                    "302": "302 Found",
                    "303": "303 See Other",
                    "403": "403 Forbidden",
                    "404": "404 Not Found",
                }[arg]
                if arg.startswith("3"):
                    headers.append(("Location", "http://localhost/next"))
            elif action == "raise":
                boom = True
            elif action == "twice":
                twice = True
            elif action in (COOKIE, HOST_COOKIE):
                pass  # an id in the URL: the library must ignore it (R6)
            else:
                raise AssertionError(f"unknown test action {action!r}")
        if boom:
            raise RuntimeError("handler failed on purpose")
        body = json.dumps(out).encode()
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        if twice:
            try:
                raise RuntimeError("error page after the headers were prepared")
            except RuntimeError:
                start_response("500 Internal Server Error", list(headers), sys.exc_info())
        return [body]

    return app


def catch_errors(app: WSGIApp, errors: list[BaseException] | None = None) -> WSGIApp:
    """What servers and frameworks do: turn an exception into a 500 page via exc_info.

    Caught exceptions are appended to ``errors`` when given.
    """

    def wrapped(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        except Exception as exc:
            if errors is not None:
                errors.append(exc)
            body = b"internal error"
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
                sys.exc_info(),
            )
            return [body]

    return wrapped


def make_middleware(
    store: SessionStore[Any] | None,
    *,
    app: WSGIApp | None = None,
    hooks: dict[str, Hook] | None = None,
    catch: bool = True,
    errors: list[BaseException] | None = None,
    cookie_key: Any = SECRET,
    session_hooks: Any = None,
    **options: Any,
) -> SessionMiddleware:
    """``SessionMiddleware(app, store, cookie_key=..., **options)`` around the test app.

    ``hooks`` are the test app's ``hook=<name>`` actions; ``session_hooks`` is the
    middleware's own ``hooks=`` option (lifecycle hooks).
    """
    inner = app if app is not None else make_app(hooks)
    if catch:
        inner = catch_errors(inner, errors)
    if session_hooks is not None:
        options["hooks"] = session_hooks
    return SessionMiddleware(inner, store, cookie_key=cookie_key, **options)


# --------------------------------------------------------------------------- cookies


@dataclass
class SetCookie:
    """One parsed Set-Cookie line."""

    line: str
    name: str
    value: str
    attrs: dict[str, str]
    flags: set[str]

    @property
    def deleted(self) -> bool:
        return self.attrs.get("max-age") == "0"


def parse_set_cookie(line: str) -> SetCookie:
    first, *rest = [part.strip() for part in line.split(";")]
    name, _, value = first.partition("=")
    attrs: dict[str, str] = {}
    flags: set[str] = set()
    for part in rest:
        if "=" in part:
            k, _, v = part.partition("=")
            attrs[k.lower()] = v
        else:
            flags.add(part.lower())
    return SetCookie(line, name, value, attrs, flags)


def set_cookies(response: Any) -> list[SetCookie]:
    """Every Set-Cookie of a WebTest response, each checked against the 4096-byte budget."""
    lines = response.headers.getall("Set-Cookie")
    for line in lines:
        assert len(line.encode("latin-1")) <= MAX_SET_COOKIE, len(line)
    return [parse_set_cookie(line) for line in lines]


def cookie_codec(key: Any = SECRET, name: str = COOKIE) -> CookieCodec:
    return CookieCodec(key, cookie_name=name)


def signed_id_cookie(
    session_id: str, clock: FakeClock, *, key: Any = SECRET, lifetime: timedelta | None = None
) -> str:
    """A genuinely signed id cookie value for any (well-formed) id."""
    now = clock()
    state = CookieState(
        kind="id",
        session_id=session_id,
        issued_at=now,
        expires_at=now + (lifetime or timedelta(days=7)),
        ssl_only=False,
        data=None,
        extra={},
    )
    return cookie_codec(key).encode(state)


class Client:
    """A WebTest client that keeps only our cookie and sends it as a raw header."""

    def __init__(self, middleware: SessionMiddleware, *, https: bool = False) -> None:
        self.middleware = middleware
        self.https = https
        scheme = "https" if https else "http"
        jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.app = webtest.TestApp(
            middleware, extra_environ={"wsgi.url_scheme": scheme}, cookiejar=jar
        )
        self.cookies: dict[str, str] = {}
        self.last: list[SetCookie] = []

    @property
    def name(self) -> str:
        return HOST_COOKIE if self.https else COOKIE

    @property
    def value(self) -> str | None:
        return self.cookies.get(self.name)

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def get(
        self, query: str = "", *, cookie: str | None = None, status: int | str | None = None
    ) -> Any:
        """GET /?query; ``cookie`` replaces the whole Cookie header for this request."""
        header = self.cookie_header() if cookie is None else cookie
        headers = {"Cookie": header} if header else {}
        response = self.app.get("/?" + query, headers=headers, status=status or "*")
        self.last = set_cookies(response)
        for sc in self.last:
            if sc.deleted:
                self.cookies.pop(sc.name, None)
            else:
                self.cookies[sc.name] = sc.value
        return response

    def json(self, query: str = "", **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.get(query, **kwargs).json
        return result

    def ours(self) -> list[SetCookie]:
        """The session Set-Cookie lines of the last response."""
        return [sc for sc in self.last if sc.name in (COOKIE, HOST_COOKIE)]

    def kind(self) -> str | None:
        """'d' (data cookie), 'i' (id cookie) or None for the current cookie."""
        value = self.value
        return value.split(".")[1][0] if value else None


# --------------------------------------------------------------------------- fixtures

#: The backend combinations every end-to-end suite runs on.
CONFIGS = [
    pytest.param("sqlite", id="sqlite-memory"),
    pytest.param("mysql", id="mariadb-memcached", marks=[pytest.mark.mysql, pytest.mark.memcached]),
    pytest.param("postgres", id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


@pytest.fixture(params=CONFIGS, name="db_kind")
def db_kind_fixture(request: pytest.FixtureRequest) -> str:
    """Overrides conftest's db_kind: SQLite + memory, MariaDB + memcached, PostgreSQL + Redis."""
    return str(request.param)


@pytest.fixture(name="clock")
def clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="region")
def region_fixture(db_kind: str, request: pytest.FixtureRequest) -> CacheRegion:
    if db_kind == "sqlite":
        return memory_region()
    if db_kind == "postgres":
        redis: RedisProcess = request.getfixturevalue("redis_server")
        return redis_region(redis.url)
    server: MemcachedProcess = request.getfixturevalue("memcached")
    return memcached_region([server.address])


@dataclass
class Web:
    """Everything an end-to-end test needs: store, counters, clock and clients."""

    model: type[Any]
    engine: Engine
    region: CacheRegion
    store: SessionStore[Any]
    sql: StatementLog
    clock: FakeClock
    extra: list[SessionStore[Any]] = field(default_factory=list)
    #: Per-test scratch space (e.g. a cookie reused across hypothesis examples).
    scratch: dict[str, Any] = field(default_factory=dict)

    def new_store(self, **options: Any) -> SessionStore[Any]:
        options.setdefault("region", self.region)
        options.setdefault("secret_keys", SECRET)
        store = SessionStore(self.model, self.engine, clock=self.clock, **options)
        self.extra.append(store)
        return store

    def middleware(self, store: Any = "default", **options: Any) -> SessionMiddleware:
        options.setdefault("clock", self.clock)
        return make_middleware(self.store if store == "default" else store, **options)

    def client(self, *, https: bool = False, store: Any = "default", **options: Any) -> Client:
        return Client(self.middleware(store, **options), https=https)

    def reset(self) -> None:
        """Zero the SQL log and the cache counters before a measured request."""
        self.sql.clear()
        for store in (self.store, *self.extra):
            if store.cache is not None:
                store.cache.stats.reset()

    @property
    def stats(self) -> Any:
        assert self.store.cache is not None
        return self.store.cache.stats

    def counts(self) -> tuple[int, int, int, int]:
        """(SQL statements, cache gets, cache sets, cache deletes) since reset()."""
        s = self.stats
        return len(self.sql.statements), s.gets, s.sets, s.deletes

    def row(self, session_id: str, store: SessionStore[Any] | None = None) -> Any:
        """The raw (data, version) row stored for a session id, or None (not logged)."""
        table = (store or self.store).table
        query = select(table.c.data, table.c.version, table.c.expires_at).where(
            table.c.id == hash_session_id(session_id)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first()

    @staticmethod
    def row_id(session_id: str) -> str:
        """The primary key of a session's row (SHA-256 hex of its id)."""
        return hash_session_id(session_id)

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(self.store.table.c.id)).all())

    def cache_entry(self, session_id: str, store: SessionStore[Any] | None = None) -> Any:
        """The authenticated cache entry of a session, or None (not counted in stats)."""
        cache = (store or self.store).cache
        assert cache is not None
        hashed = hash_session_id(session_id)
        found = cache.backend.get(cache.key(hashed))
        return None if found is None else cache.entries.decode(hashed, found[0])

    def evict(self, session_id: str, store: SessionStore[Any] | None = None) -> None:
        """Drop the session's cache entry, as an eviction would (not counted in stats)."""
        cache = (store or self.store).cache
        assert cache is not None
        cache.backend.delete(cache.key(hash_session_id(session_id)))

    def cached(self, session_id: str, store: SessionStore[Any] | None = None) -> bool:
        """Whether the cache holds a copy of the session (not an end marker)."""
        entry = self.cache_entry(session_id, store)
        return entry is not None and entry.kind is Kind.COPY

    def ended_in_cache(self, session_id: str, store: SessionStore[Any] | None = None) -> bool:
        """Whether the cache holds an end marker for the session."""
        entry = self.cache_entry(session_id, store)
        return entry is not None and entry.kind is Kind.ENDED


@pytest.fixture(name="web")
def web_fixture(
    model: type[Any],
    engine: Engine,
    region: CacheRegion,
    sql_log: StatementLog,
    clock: FakeClock,
) -> Web:
    store = SessionStore(model, engine, region=region, secret_keys=SECRET, clock=clock)
    return Web(model, engine, region, store, sql_log, clock)


# --------------------------------------------------------------------------- direct API


def environ_for(cookie: str | None = None, *, https: bool = False) -> Environ:
    """A minimal WSGI environ for driving a Session directly."""
    environ: Environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "443" if https else "80",
        "wsgi.url_scheme": "https" if https else "http",
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    return environ


def open_session(
    middleware: SessionMiddleware, value: str | None = None, *, https: bool = False
) -> Session:
    """A request's Session with our cookie set to ``value`` (None: no cookie)."""
    name = HOST_COOKIE if https else COOKIE
    cookie = None if value is None else f"{name}={value}"
    return Session(middleware.settings, environ_for(cookie, https=https))


def finish(session: Session) -> str | None:
    """Run the response-time save; the new cookie value, "" when deleted, None if unchanged."""
    result: str | None = None
    for name, header in session.finalize():
        if name == "Set-Cookie":
            sc = parse_set_cookie(header)
            assert len(header) <= MAX_SET_COOKIE
            result = "" if sc.deleted else sc.value
    return result


@dataclass
class Result:
    """A response from a direct WSGI call."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def set_cookies(self) -> list[SetCookie]:
        lines = [v for k, v in self.headers if k.lower() == "set-cookie"]
        for line in lines:
            assert len(line.encode("latin-1")) <= MAX_SET_COOKIE
        return [parse_set_cookie(line) for line in lines]

    @property
    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


def call(
    app: WSGIApp, query: str = "", *, cookie: str | None = None, https: bool = False
) -> Result:
    """One request straight through the WSGI interface (any header bytes allowed)."""
    environ = environ_for(cookie, https=https)
    environ["QUERY_STRING"] = query
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append((status, headers))
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    status, headers = seen[-1]
    return Result(int(status.split()[0]), headers, body)


def parallel(count: int, work: Callable[[int], Result]) -> list[Result]:
    """Run ``work(i)`` in ``count`` threads at once; every call must return."""
    results: list[Result | BaseException | None] = [None] * count

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    failures = [r for r in results if not isinstance(r, Result)]
    assert failures == []
    return [r for r in results if isinstance(r, Result)]
