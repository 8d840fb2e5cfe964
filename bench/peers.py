"""Session layers for the benchmarks: one tiny Bottle app, many ways to keep sessions.

Shared by ``bench/compare.py`` (direct WSGI calls) and ``bench/http_throughput.py``
(a real HTTP server).  Every layer wraps the SAME Bottle application; the routes reach
their session through a small adapter, so the only thing that differs between layers
is the session machinery itself:

============================  ==============================================================
``bare``                      no sessions (a plain dict stands in), subtracted from the others
``middleware_only``           the bare app under a WSGI middleware that only adds an environ
                              entry (the reference of the untouched request)
``sa_sessions``               :class:`sa_sessions.SessionMiddleware` + ``SessionStore`` on
                              MariaDB, read through memcached (``memcached_region``)
``sa_sessions_server``        the same with ``cookie_only_threshold=0``: every session in the
                              database, even small ones (apples-to-apples with server peers)
``sa_sessions_redis``         ``sa_sessions`` read through Redis (``redis_region``)
``sa_sessions_redis_server``  the same with ``cookie_only_threshold=0``
``beaker_db``                 Beaker ``ext:database`` on the same MariaDB URL
``beaker_memcached``          Beaker ``ext:memcached`` (python-memcached) on the same memcached
``beaker_cookie``             Beaker cookie sessions, AES-encrypted
``django_cached_db``          Django's ``cached_db`` engine (MariaDB + ``PyMemcacheCache``),
                              wrapped exactly like Django's ``SessionMiddleware``
``django_cached_db_redis``    the same on Django's own ``RedisCache``
``sa_sessions_no_pre_ping``   ``sa_sessions`` on an engine without ``pool_pre_ping`` (the
                              configuration check only)
============================  ==============================================================

Configuration is what each project's documentation recommends: SQLAlchemy engines
with ``pool_pre_ping=True, pool_recycle=1800`` (sa_sessions' README; Beaker gets the
same through ``session.sa_opts``), ``memcached_region([address])`` and
``redis_region(url)`` with their defaults, and ONE memcached and ONE redis-server
shared by every layer.  The counters live in ``bench/counters.py``.
"""

from __future__ import annotations

# mypy: disable-error-code="import-untyped"
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import bottle
import shapes
from cache_servers import MemcachedProcess
from cache_servers import RedisProcess
from cache_servers import memcached_binary
from cache_servers import redis_binary

MYSQL_URL = os.environ.get("SA_SESSIONS_MYSQL_URL", "mysql+mysqldb://root@localhost/test")

#: What the README recommends for every engine (a checkout pings a connection first).
ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 1800}

# Benchmark-only secrets (>= 32 bytes, as sa_sessions requires).
COOKIE_KEY = b"bench-cookie-key-0123456789abcdef-0123456789"
COOKIE_NAME = "session"
BLOB_KEY = b"bench-blob-key-0123456789abcdef-0123456789ab"
BEAKER_SECRET = "bench-beaker-secret-0123456789abcdef"
BEAKER_ENCRYPT_KEY = "bench-beaker-encrypt-key-0123456789abcdef"
BEAKER_VALIDATE_KEY = "bench-beaker-validate-key-0123456789abcdef"
DJANGO_SECRET = "bench-django-secret-key-0123456789abcdef-0123456789"

SA_TABLE = "bench_sa_sessions"
BEAKER_TABLE = "bench_beaker_cache"

LAYERS = (
    "bare",
    "middleware_only",
    "sa_sessions",
    "sa_sessions_server",
    "beaker_db",
    "beaker_memcached",
    "beaker_cookie",
    "django_cached_db",
    "sa_sessions_redis",
    "sa_sessions_redis_server",
    "django_cached_db_redis",
)
#: Layers that need a redis-server.
REDIS_LAYERS = ("sa_sessions_redis", "sa_sessions_redis_server", "django_cached_db_redis")

LAYER_TITLES = {
    "bare": "bare app",
    "middleware_only": "middleware only",
    "sa_sessions": "sa_sessions",
    "sa_sessions_server": "sa_sessions (server-only)",
    "beaker_db": "Beaker ext:database",
    "beaker_memcached": "Beaker ext:memcached",
    "beaker_cookie": "Beaker cookie (AES)",
    "django_cached_db": "Django cached_db",
    "sa_sessions_redis": "sa_sessions (Redis)",
    "sa_sessions_redis_server": "sa_sessions (Redis, server-only)",
    "django_cached_db_redis": "Django cached_db (Redis)",
    "sa_sessions_no_pre_ping": "sa_sessions (no pool_pre_ping)",
}

#: The report's table of each cache kind (the peers without a cache go with memcached).
MEMCACHED_TABLE = (
    "bare",
    "middleware_only",
    "sa_sessions",
    "sa_sessions_server",
    "beaker_db",
    "beaker_memcached",
    "beaker_cookie",
    "django_cached_db",
)
REDIS_TABLE = (
    "bare",
    "middleware_only",
    "sa_sessions_redis",
    "sa_sessions_redis_server",
    "django_cached_db_redis",
)

#: The cache each layer reads through (None: no cache).
LAYER_CACHE = {
    "sa_sessions": "memcached",
    "sa_sessions_server": "memcached",
    "beaker_memcached": "memcached",
    "django_cached_db": "memcached",
    "sa_sessions_no_pre_ping": "memcached",
    "sa_sessions_redis": "redis",
    "sa_sessions_redis_server": "redis",
    "django_cached_db_redis": "redis",
}

# Kept importable from here (``bench/http_throughput.py`` and older scripts).
small_session = shapes.small_session
large_session = shapes.large_session
LOGIN_DATA = {"user_id": shapes.USER_ID, "username": "ada.lovelace", "roles": ["customer"]}


# --------------------------------------------------------------------------- the app


@dataclass
class Adapter:
    """How the shared app reaches one layer's session."""

    get: Callable[[dict[str, Any]], Any]
    save: Callable[[Any], None] = lambda s: None
    regenerate: Callable[[Any], None] = lambda s: None
    sid: Callable[[Any], str | None] = lambda s: None


def make_app(adapter: Adapter) -> bottle.Bottle:
    """The tiny Bottle app every layer wraps (identical routes and work per layer).

    ``/read`` reads one key (``user_id``); ``/write`` reads and increments one key
    (``hits``); ``/setup/<kind>`` stores the session shape ``kind`` (``bench/shapes.py``)
    and answers with the session id.
    """
    app = bottle.Bottle(catchall=False)
    request = bottle.request
    get, save, regenerate, sid = adapter.get, adapter.save, adapter.regenerate, adapter.sid
    route: Callable[[str], Callable[[Callable[..., str]], Callable[..., str]]] = app.get

    @route("/untouched")
    def untouched() -> str:
        return "ok"

    @route("/read")
    def read() -> str:
        session = get(request.environ)
        return f"user {session.get('user_id')}"

    @route("/write")
    def write() -> str:
        session = get(request.environ)
        session["hits"] = session.get("hits", 0) + 1
        save(session)
        return "ok"

    @route("/login")
    def login() -> str:
        session = get(request.environ)
        regenerate(session)
        for key, value in LOGIN_DATA.items():
            session[key] = value
        save(session)
        return "ok"

    @route("/setup/<kind>")
    def setup(kind: str) -> str:
        session = get(request.environ)
        for key, value in shapes.data(kind).items():
            session[key] = value
        save(session)
        return sid(session) or ""

    return app


# --------------------------------------------------------------------------- layers


@dataclass
class Layer:
    """One session layer wrapped around the shared app."""

    name: str
    wsgi: Callable[..., Any]
    cookie_name: str | None = None
    #: scenario key or operation ("read_miss", ...) -> why it cannot run ("n/a (...)")
    unsupported: dict[str, str] = field(default_factory=dict)
    #: operations this layer takes part in (None: every one)
    only: frozenset[str] | None = None
    #: SQLAlchemy engines to attach statement counters to (Beaker's appears lazily)
    engines: Callable[[], list[Any]] = lambda: []
    #: Django's connection, when the layer counts statements with CaptureQueriesContext
    django: bool = False
    #: delete this session's cached copy (read on a cache miss); None: no cache
    evict: Callable[[str, str], None] | None = None
    #: scenario key or operation -> footnote
    note: dict[str, str] = field(default_factory=dict)
    #: the cache it reads through: "memcached", "redis" or None
    cache: str | None = None
    #: sa_sessions layers: their SessionStore (the floors read what it stored)
    store: Any = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                close()


def _bare() -> Layer:
    shared: dict[str, Any] = dict(large_session())
    app = make_app(Adapter(get=lambda environ: shared))
    return Layer("bare", app)


def environ_entry_middleware(app: Callable[..., Any]) -> Callable[..., Any]:
    """A WSGI middleware that only adds an environ entry."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["bench.session"] = None
        return app(environ, start_response)

    return middleware


def _middleware_only() -> Layer:
    shared: dict[str, Any] = dict(large_session())
    app = environ_entry_middleware(make_app(Adapter(get=lambda environ: shared)))
    return Layer("middleware_only", app, only=frozenset({"untouched"}))


def _drop_table(engine: Any, name: str) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


class _SaState:
    """Model, engine and table shared by every sa_sessions layer (one store per cache)."""

    def __init__(self) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.orm import DeclarativeBase

        from sa_sessions import SessionModel

        class Base(DeclarativeBase):
            pass

        class BenchSession(SessionModel, Base):
            __tablename__ = SA_TABLE

        self.engine = create_engine(MYSQL_URL, **ENGINE_OPTIONS)
        Base.metadata.drop_all(self.engine)
        Base.metadata.create_all(self.engine)
        self.model = BenchSession
        self.metadata = Base.metadata
        self.stores: dict[tuple[str, bool], Any] = {}
        self.engines: list[Any] = [self.engine]

    def store(self, cache: str, address: str, pre_ping: bool = True) -> Any:
        """The store on ``cache`` ("memcached": host:port, "redis": URL), one per kind."""
        from sqlalchemy import create_engine

        from sa_sessions import SessionStore
        from sa_sessions import memcached_region
        from sa_sessions import redis_region

        if (cache, pre_ping) not in self.stores:
            region = memcached_region([address]) if cache == "memcached" else redis_region(address)
            engine = self.engine
            if not pre_ping:  # the configuration check: what the old benchmark used
                engine = create_engine(MYSQL_URL)
                self.engines.append(engine)
            self.stores[cache, pre_ping] = SessionStore(
                self.model, engine, region=region, secret_keys=BLOB_KEY
            )
        return self.stores[cache, pre_ping]

    def close(self) -> None:
        for store in self.stores.values():
            with contextlib.suppress(Exception):
                store.cache.backend.close()
        self.metadata.drop_all(self.engine)
        for engine in self.engines:
            engine.dispose()


def _sa_layer(name: str, store: Any, cache: str, **options: Any) -> Layer:
    from sa_sessions import SessionMiddleware
    from sa_sessions.ids import hash_session_id
    from sa_sessions.wsgi import ENVIRON_KEY

    adapter = Adapter(
        get=lambda environ: environ[ENVIRON_KEY],
        regenerate=lambda s: s.regenerate_id(),
        sid=lambda s: s.sid,
    )
    wsgi = SessionMiddleware(
        make_app(adapter), store, cookie_key=COOKIE_KEY, cookie_name=COOKIE_NAME, **options
    )
    session_cache = store.cache
    assert session_cache is not None

    def evict(sid: str, cookie: str) -> None:
        session_cache.backend.delete(session_cache.key(hash_session_id(sid)))

    return Layer(
        name,
        wsgi,
        cookie_name=COOKIE_NAME,
        engines=lambda: [store.engine],
        evict=evict,
        cache=cache,
        store=store,
    )


def _beaker(kind: str, memcached: str, lock_dir: str) -> Layer:
    from beaker.middleware import SessionMiddleware as BeakerMiddleware

    adapter = Adapter(
        get=lambda environ: environ["beaker.session"],
        save=lambda s: s.save(),
        regenerate=lambda s: s.regenerate_id(),
        sid=lambda s: s.id,
    )
    # Beaker's best settings for speed: save_accessed_time=False stops the write that
    # Beaker otherwise makes on every request that merely reads the session.
    common = {"session.key": "beaker.session.id", "session.save_accessed_time": False}
    layer = Layer("", lambda environ, start_response: None, cookie_name="beaker.session.id")
    if kind == "db":
        from beaker.ext.sqla import SqlaNamespaceManager
        from sqlalchemy import create_engine

        engine = create_engine(MYSQL_URL)
        _drop_table(engine, BEAKER_TABLE)
        engine.dispose()
        options = {
            **common,
            "session.type": "ext:database",
            "session.url": MYSQL_URL,
            "session.table_name": BEAKER_TABLE,
            "session.secret": BEAKER_SECRET,
            # The same engine options as every SQLAlchemy layer (engine_from_config).
            "session.sa_opts": {f"sa.{k}": v for k, v in ENGINE_OPTIONS.items()},
        }
        layer.name = "beaker_db"
        # Beaker builds its own engine from the URL; count on whatever it registered.
        layer.engines = lambda: list(SqlaNamespaceManager.binds.dict.values())
        layer.note["read_miss"] = "no cache: every read is a database read"

        def close() -> None:
            for bind in SqlaNamespaceManager.binds.dict.values():
                _drop_table(bind, BEAKER_TABLE)
                bind.dispose()
            SqlaNamespaceManager.binds.dict.clear()
            SqlaNamespaceManager.tables.dict.clear()

        layer.closers.append(close)
    elif kind == "memcached":
        options = {
            **common,
            "session.type": "ext:memcached",
            "session.url": memcached,
            "session.memcache_module": "memcache",
            "session.secret": BEAKER_SECRET,
            "session.lock_dir": lock_dir,
        }
        layer.name = "beaker_memcached"
        layer.cache = "memcached"
        layer.unsupported["read_miss"] = "memcached is its only store: a miss loses the session"
    else:
        options = {
            **common,
            "session.type": "cookie",
            "session.encrypt_key": BEAKER_ENCRYPT_KEY,
            "session.validate_key": BEAKER_VALIDATE_KEY,
        }
        layer.name = "beaker_cookie"
        # CookieSession.regenerate_id() raises AttributeError in Beaker 1.14 ("property
        # 'id' has no setter"); invalidate() (new id, data cleared) is the working call.
        adapter.regenerate = lambda s: s.invalidate()
        # save_accessed_time=False would still re-encrypt on read; keep Beaker's default.
        options["session.save_accessed_time"] = True
    layer.wsgi = BeakerMiddleware(make_app(adapter), options)
    return layer


#: Django's cache alias of the Redis layer (``default`` is memcached).
DJANGO_REDIS_ALIAS = "redis"


def configure_django(memcached: str, redis: str | None = None) -> None:
    """settings.configure() for cached_db on the shared MariaDB, memcached and Redis."""
    import django
    from django.conf import settings
    from sqlalchemy.engine import make_url

    if settings.configured:
        return
    url = make_url(MYSQL_URL)
    caches: dict[str, Any] = {
        "default": {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": memcached,
        }
    }
    if redis is not None:
        caches[DJANGO_REDIS_ALIAS] = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis,
        }
    settings.configure(
        DEBUG=False,
        SECRET_KEY=DJANGO_SECRET,
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.sessions"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.mysql",
                "NAME": url.database,
                "USER": url.username or "",
                "PASSWORD": url.password or "",
                "HOST": url.host or "",
                "PORT": str(url.port or ""),
                # persistent per-thread connection, as with CONN_MAX_AGE=None
                "CONN_MAX_AGE": None,
            }
        },
        CACHES=caches,
        SESSION_ENGINE="django.contrib.sessions.backends.cached_db",
    )
    django.setup()


class DjangoSessionWSGI:
    """``django.contrib.sessions.middleware.SessionMiddleware`` as WSGI middleware.

    The same steps and settings as Django's: the session key from the cookie
    (``django.http.cookie.parse_cookie``), a lazy ``SessionStore(session_key)``, and on
    the response: delete the cookie if emptied, else ``save()`` when modified (not on
    5xx) and set the cookie with Django's max-age/expires, plus ``Vary: Cookie`` when
    the session was accessed.  It skips only Django's request/response objects, which
    would charge Django for a framework the app does not use.
    """

    ENVIRON_KEY = "django.session"

    def __init__(self, app: Callable[..., Any], store_class: Any = None) -> None:
        from importlib import import_module

        from django.conf import settings

        self.app = app
        self.settings = settings
        self.SessionStore = store_class or import_module(settings.SESSION_ENGINE).SessionStore

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        from django.http.cookie import parse_cookie

        settings = self.settings
        cookies = parse_cookie(environ.get("HTTP_COOKIE", ""))
        session = self.SessionStore(cookies.get(settings.SESSION_COOKIE_NAME))
        environ[self.ENVIRON_KEY] = session

        def session_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            headers = self._process_response(session, cookies, int(status[:3]), headers)
            return start_response(status, headers, exc_info)

        return self.app(environ, session_start_response)

    def _process_response(
        self, session: Any, cookies: dict[str, str], status: int, headers: list[Any]
    ) -> list[Any]:
        from django.http.cookie import SimpleCookie
        from django.utils.http import http_date

        settings = self.settings
        name = settings.SESSION_COOKIE_NAME
        accessed, modified, empty = session.accessed, session.modified, session.is_empty()
        jar: SimpleCookie | None = None
        if name in cookies and empty:
            jar = SimpleCookie()
            jar[name] = ""
            jar[name]["max-age"] = 0
            jar[name]["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
            jar[name]["path"] = settings.SESSION_COOKIE_PATH
            need_vary = True
        else:
            need_vary = accessed
            if (modified or settings.SESSION_SAVE_EVERY_REQUEST) and not empty:
                if session.get_expire_at_browser_close():
                    max_age = expires = None
                else:
                    max_age = session.get_expiry_age()
                    expires = http_date(time.time() + max_age)
                if status < 500:
                    session.save()
                    jar = SimpleCookie()
                    jar[name] = session.session_key
                    morsel = jar[name]
                    if max_age is not None:
                        morsel["max-age"] = int(max_age)
                        morsel["expires"] = expires
                    morsel["path"] = settings.SESSION_COOKIE_PATH
                    if settings.SESSION_COOKIE_SECURE:
                        morsel["secure"] = True
                    if settings.SESSION_COOKIE_HTTPONLY:
                        morsel["httponly"] = True
                    if settings.SESSION_COOKIE_SAMESITE:
                        morsel["samesite"] = settings.SESSION_COOKIE_SAMESITE
                    need_vary = True
        if jar is not None:
            headers = [*headers, *(("Set-Cookie", m.output(header="")[1:]) for m in jar.values())]
        if need_vary:
            headers = [*headers, ("Vary", "Cookie")]
        return headers


def _django_store_class(alias: str) -> Any:
    """cached_db's SessionStore on cache ``alias`` (what ``SESSION_CACHE_ALIAS`` selects)."""
    from django.contrib.sessions.backends import cached_db
    from django.contrib.sessions.backends.db import SessionStore as DBStore
    from django.core.cache import caches

    if alias == "default":
        return cached_db.SessionStore

    class SessionStore(cached_db.SessionStore):  # type: ignore[misc]
        def __init__(self, session_key: str | None = None) -> None:
            self._cache = caches[alias]
            DBStore.__init__(self, session_key)

    return SessionStore


_django_table_ready = False


def _django(memcached: str, redis: str | None, alias: str) -> Layer:
    global _django_table_ready
    configure_django(memcached, redis)
    from django.core.management import call_command
    from django.db import connection

    if not _django_table_ready:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS django_session")
            cursor.execute(
                "DELETE FROM django_migrations WHERE app = 'sessions'"
                if "django_migrations" in connection.introspection.table_names()
                else "SELECT 1"
            )
        call_command("migrate", "sessions", verbosity=0)
        _django_table_ready = True

    store_class = _django_store_class(alias)
    adapter = Adapter(
        get=lambda environ: environ[DjangoSessionWSGI.ENVIRON_KEY],
        regenerate=lambda s: s.cycle_key(),  # what django.contrib.auth.login() calls
        sid=lambda s: s.session_key,
    )
    wsgi = DjangoSessionWSGI(make_app(adapter), store_class)

    def evict(sid: str, cookie: str) -> None:
        key = cookie.split("=", 1)[1]
        store = store_class(key)
        store._cache.delete(store.cache_key)

    def close() -> None:
        # Leave the shared database as found: no session table, no migration record.
        global _django_table_ready
        if not _django_table_ready:
            return
        _django_table_ready = False
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS django_session")
            cursor.execute("DELETE FROM django_migrations WHERE app = 'sessions'")
            cursor.execute("SELECT COUNT(*) FROM django_migrations")
            if cursor.fetchone()[0] == 0:
                cursor.execute("DROP TABLE django_migrations")
        connection.close()

    name = "django_cached_db" if alias == "default" else "django_cached_db_redis"
    return Layer(
        name,
        wsgi,
        cookie_name="sessionid",
        django=True,
        evict=evict,
        closers=[close],
        cache=LAYER_CACHE[name],
    )


@dataclass
class Services:
    memcached: str
    lock_dir: str
    redis: str | None = None
    sa: _SaState | None = None


def build_layers(
    memcached: str, names: tuple[str, ...] = LAYERS, *, redis: str | None = None
) -> tuple[dict[str, Layer], Services]:
    """Build the requested layers on one memcached (``host:port``), one Redis (URL;
    needed only by the Redis layers) and MYSQL_URL."""
    services = Services(memcached, tempfile.mkdtemp(prefix="bench-beaker-"), redis)
    layers: dict[str, Layer] = {}
    for name in names:
        if name == "bare":
            layers[name] = _bare()
        elif name == "middleware_only":
            layers[name] = _middleware_only()
        elif name.startswith("sa_sessions"):
            if services.sa is None:
                services.sa = _SaState()
            cache = LAYER_CACHE[name]
            address = memcached if cache == "memcached" else redis
            if address is None:
                raise ValueError(f"{name} needs a redis-server (redis=...)")
            pre_ping = name != "sa_sessions_no_pre_ping"
            store = services.sa.store(cache, address, pre_ping)
            options = {"cookie_only_threshold": 0} if name.endswith("_server") else {}
            layers[name] = _sa_layer(name, store, cache, **options)
        elif name == "beaker_db":
            layers[name] = _beaker("db", memcached, services.lock_dir)
        elif name == "beaker_memcached":
            layers[name] = _beaker("memcached", memcached, services.lock_dir)
        elif name == "beaker_cookie":
            layers[name] = _beaker("cookie", memcached, services.lock_dir)
        elif name == "django_cached_db":
            layers[name] = _django(memcached, redis, "default")
        elif name == "django_cached_db_redis":
            if redis is None:
                raise ValueError(f"{name} needs a redis-server (redis=...)")
            layers[name] = _django(memcached, redis, DJANGO_REDIS_ALIAS)
        else:
            raise ValueError(f"unknown layer {name!r}")
    return layers, services


def close_layers(layers: dict[str, Layer], services: Services) -> None:
    for layer in layers.values():
        layer.close()
    if services.sa is not None:
        with contextlib.suppress(Exception):
            services.sa.close()
    shutil.rmtree(services.lock_dir, ignore_errors=True)


# --------------------------------------------------------------------------- WSGI calls

_ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "bench.local",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "bench.local",
    "HTTP_USER_AGENT": "sa_sessions-bench/1",
    "HTTP_ACCEPT": "text/html",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def environ_for(path: str, cookie: str | None) -> dict[str, Any]:
    """A fresh PEP 3333 environ for GET ``path`` (a template copy: cheap, identical)."""
    environ = dict(_ENVIRON)
    environ["PATH_INFO"] = path
    environ["wsgi.input"] = io.BytesIO()
    environ["wsgi.errors"] = sys.stderr
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    return environ


@dataclass
class Response:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]


def call(app: Callable[..., Any], path: str, cookie: str | None = None) -> Response:
    """One request through ``app`` by a direct WSGI call."""
    box: list[Any] = []

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        box[:] = [status, headers]
        return lambda data: None

    result = app(environ_for(path, cookie), start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Response(box[0], box[1], body)


def cookie_pair(set_cookie: str) -> str:
    """``name=value`` from a Set-Cookie line."""
    return set_cookie.split(";", 1)[0].strip()


# --------------------------------------------------------------------------- cache servers


class BenchMemcached(MemcachedProcess):
    """The private memcached of a run: 256 MB (room for every layer's 1 MB sessions
    without evictions); the item size limit stays memcached's default 1 MB."""

    def arguments(self) -> list[str]:
        args = super().arguments()
        args[args.index("-m") + 1] = "256"
        return args


@contextlib.contextmanager
def _private_server(
    given: str | None, binary: str | None, what: str, start: Callable[[str], Any]
) -> Iterator[str]:
    """Yield ``given``, or the address of a server started here from ``binary``."""
    if given:
        yield given
        return
    if binary is None:
        raise RuntimeError(f"{what} binary not found (set SA_SESSIONS_{what.upper()}_BIN)")
    server, address = start(binary)
    try:
        yield address
    finally:
        server.stop()


def _started(server: Any, address: str) -> tuple[Any, str]:
    server.start()
    return server, address


def memcached_server(address: str | None = None) -> contextlib.AbstractContextManager[str]:
    """``host:port`` of a private memcached (started here unless ``address``)."""

    def start(binary: str) -> tuple[Any, str]:
        server = BenchMemcached(binary)
        return _started(server, server.address)

    return _private_server(address, memcached_binary(), "memcached", start)


def redis_server(url: str | None = None) -> contextlib.AbstractContextManager[str]:
    """The URL of a private redis-server (started here unless ``url``)."""

    def start(binary: str) -> tuple[Any, str]:
        server = RedisProcess(binary)
        return _started(server, server.url)

    return _private_server(url, redis_binary(), "redis", start)
