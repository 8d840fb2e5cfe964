"""Session layers for the benchmarks: one tiny Bottle app, six ways to keep sessions.

Shared by ``bench/compare.py`` (direct WSGI calls) and ``bench/http_throughput.py``
(a real HTTP server).  Every layer wraps the SAME Bottle application; the routes reach
their session through a small adapter, so the only thing that differs between layers
is the session machinery itself:

======================  ===================================================================
``bare``                no sessions (a plain dict stands in), subtracted from the others
``sa_sessions``         :class:`sa_sessions.SessionMiddleware` + ``SessionStore`` on
                        MariaDB, read through memcached (``memcached_region``)
``sa_sessions_server``  the same with ``cookie_only_threshold=0``: every session in the
                        database, even small ones (apples-to-apples with server peers)
``beaker_db``           Beaker ``ext:database`` on the same MariaDB URL
``beaker_memcached``    Beaker ``ext:memcached`` (python-memcached) on the same memcached
``beaker_cookie``       Beaker cookie sessions, AES-encrypted (``encrypt_key``/``validate_key``)
``django_cached_db``    Django's ``cached_db`` engine (MariaDB + ``PyMemcacheCache``), wrapped
                        exactly like ``django.contrib.sessions.middleware.SessionMiddleware``
======================  ===================================================================

Counting helpers (:class:`DriverCounter`, :class:`CacheCounter`, :func:`memcached_stats`)
measure SQL statements and cache round trips exactly; see docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import bottle
from cache_servers import MemcachedProcess
from cache_servers import memcached_binary

MYSQL_URL = os.environ.get("SA_SESSIONS_MYSQL_URL", "mysql+mysqldb://root@localhost/test")

# Benchmark-only secrets (>= 32 bytes, as sa_sessions requires).
COOKIE_KEY = b"bench-cookie-key-0123456789abcdef-0123456789"
BLOB_KEY = b"bench-blob-key-0123456789abcdef-0123456789ab"
BEAKER_SECRET = "bench-beaker-secret-0123456789abcdef"
BEAKER_ENCRYPT_KEY = "bench-beaker-encrypt-key-0123456789abcdef"
BEAKER_VALIDATE_KEY = "bench-beaker-validate-key-0123456789abcdef"
DJANGO_SECRET = "bench-django-secret-key-0123456789abcdef-0123456789"

SA_TABLE = "bench_sa_sessions"
BEAKER_TABLE = "bench_beaker_cache"

LAYERS = (
    "bare",
    "sa_sessions",
    "sa_sessions_server",
    "beaker_db",
    "beaker_memcached",
    "beaker_cookie",
    "django_cached_db",
)

LAYER_TITLES = {
    "bare": "bare app",
    "sa_sessions": "sa_sessions",
    "sa_sessions_server": "sa_sessions (server-only)",
    "beaker_db": "Beaker ext:database",
    "beaker_memcached": "Beaker ext:memcached",
    "beaker_cookie": "Beaker cookie (AES)",
    "django_cached_db": "Django cached_db",
}


# --------------------------------------------------------------------------- session data

_WORD_TEXT = (
    "account address amount answer apple article basket battery bicycle blanket bottle "
    "budget button camera candle carpet castle ceiling channel chapter cheese circle "
    "climate coffee collar comfort copper cotton country cousin credit custom damage "
    "danger delivery desert detail device dinner doctor dollar double drawer effect "
    "energy engine evening expert fabric factory family farmer father feather figure "
    "finger flower forest fortune friend garden garlic gentle global golden guitar "
    "hammer handle harbor health height helmet history holiday honey hunter island "
    "jacket jungle kettle kitchen ladder laptop leather lemon letter limit liquid little "
    "luggage magnet market meadow member memory method middle minute mirror moment "
    "monkey morning mother motion muscle napkin nature needle number object office "
    "orange origin output oxygen packet paddle palace pantry paper parcel pencil pepper "
    "person pillow planet pocket poetry police powder prison profit public puzzle rabbit "
    "radio random reason record remote rescue ribbon riddle rocket saddle salmon sample "
    "saucer school screen season second secret sensor shadow silver simple sister socket "
    "spirit spring square stable statue stream street summer supply switch symbol system "
    "tablet target teapot tennis thread ticket timber tomato tongue travel trophy tunnel "
    "turtle uncle update useful valley velvet vessel violin volume wallet walnut window "
    "winter wisdom wonder yellow "
)
_WORDS = tuple(_WORD_TEXT.split())


def small_session() -> dict[str, Any]:
    """Two keys: what a logged-in user's session holds on most sites."""
    return {"user_id": 4242, "csrf": "9f86d081884c7d659a2feaa0c55ad015"}


def large_session(target_bytes: int = 20_000, seed: int = 20240601) -> dict[str, Any]:
    """About ``target_bytes`` of realistic, JSON-compatible session data.

    A shopping cart, recently viewed ids, preferences, a form draft and search history,
    built from a 250-word vocabulary with random numbers: it compresses like real
    text (about 3x with zlib), not like repeated junk.
    """
    rng = random.Random(seed)

    def words(n: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(n))

    data: dict[str, Any] = {
        "user_id": 4242,
        "username": "ada.lovelace",
        "roles": ["customer", "beta", "newsletter"],
        "csrf": f"{rng.getrandbits(128):032x}",
        "hits": 0,
        "prefs": {
            "lang": "en-GB",
            "currency": "EUR",
            "theme": "dark",
            "page_size": 48,
            "notifications": {"email": True, "sms": False, "push": True},
        },
        "cart": [],
        "recently_viewed": [],
        "search_history": [],
        "draft": {"subject": words(8).capitalize(), "paragraphs": []},
    }
    import pickle

    def size() -> int:
        return len(pickle.dumps(data, protocol=5))

    while size() < target_bytes:
        data["cart"].append(
            {
                "sku": f"SKU-{rng.randrange(10**6):06d}",
                "name": words(rng.randint(2, 5)).title(),
                "qty": rng.randint(1, 4),
                "price_cents": rng.randint(199, 49_999),
                "options": [rng.choice(_WORDS) for _ in range(rng.randint(0, 3))],
            }
        )
        data["recently_viewed"].extend(rng.randrange(10**7) for _ in range(6))
        data["search_history"].append(words(rng.randint(1, 4)))
        data["draft"]["paragraphs"].append(words(rng.randint(12, 30)).capitalize() + ".")
    return data


LOGIN_DATA = {"user_id": 4242, "username": "ada.lovelace", "roles": ["customer"]}


# --------------------------------------------------------------------------- the app


@dataclass
class Adapter:
    """How the shared app reaches one layer's session."""

    get: Callable[[dict[str, Any]], Any]
    save: Callable[[Any], None] = lambda s: None
    regenerate: Callable[[Any], None] = lambda s: None
    sid: Callable[[Any], str | None] = lambda s: None


_DATA = {"small": small_session, "large": large_session}


def make_app(adapter: Adapter) -> bottle.Bottle:
    """The tiny Bottle app every layer wraps (identical routes and work per layer)."""
    app = bottle.Bottle(catchall=False)
    request = bottle.request
    get, save, regenerate, sid = adapter.get, adapter.save, adapter.regenerate, adapter.sid
    payloads = {kind: make() for kind, make in _DATA.items()}

    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        session = get(request.environ)
        return f"user {session.get('user_id')}"

    @app.get("/write")
    def write() -> str:
        session = get(request.environ)
        session["hits"] = session.get("hits", 0) + 1
        save(session)
        return "ok"

    @app.get("/login")
    def login() -> str:
        session = get(request.environ)
        regenerate(session)
        for key, value in LOGIN_DATA.items():
            session[key] = value
        save(session)
        return "ok"

    @app.get("/setup/<kind>")
    def setup(kind: str) -> str:
        session = get(request.environ)
        for key, value in payloads[kind].items():
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
    #: scenario -> reason it cannot run ("n/a (...)")
    unsupported: dict[str, str] = field(default_factory=dict)
    #: SQLAlchemy engines to attach statement counters to (Beaker's appears lazily)
    engines: Callable[[], list[Any]] = lambda: []
    #: Django's connection, when the layer counts statements with CaptureQueriesContext
    django: bool = False
    #: delete this session's cached copy (large read on a cache miss); None: no cache
    evict: Callable[[str, str], None] | None = None
    note: dict[str, str] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                close()


def _bare() -> Layer:
    shared: dict[str, Any] = dict(large_session())
    app = make_app(Adapter(get=lambda environ: shared))
    return Layer("bare", app)


def _drop_table(engine: Any, name: str) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


class _SaState:
    """Model, engine and store shared by both sa_sessions layers (one table)."""

    def __init__(self, memcached: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.orm import DeclarativeBase

        from sa_sessions import SessionModel
        from sa_sessions import SessionStore
        from sa_sessions import memcached_region

        class Base(DeclarativeBase):
            pass

        class BenchSession(SessionModel, Base):
            __tablename__ = SA_TABLE

        # The defaults a user gets from create_engine(); no pre-ping (it would add a
        # round trip per checkout to every SQLAlchemy layer alike).
        self.engine = create_engine(MYSQL_URL)
        Base.metadata.drop_all(self.engine)
        Base.metadata.create_all(self.engine)
        self.model = BenchSession
        self.metadata = Base.metadata
        self.region = memcached_region([memcached])
        self.store = SessionStore(
            BenchSession, self.engine, region=self.region, secret_keys=BLOB_KEY
        )

    def close(self) -> None:
        self.metadata.drop_all(self.engine)
        self.engine.dispose()


def _sa_layer(name: str, state: _SaState, **options: Any) -> Layer:
    from sa_sessions import SessionMiddleware
    from sa_sessions.ids import hash_session_id
    from sa_sessions.wsgi import ENVIRON_KEY

    adapter = Adapter(
        get=lambda environ: environ[ENVIRON_KEY],
        regenerate=lambda s: s.regenerate_id(),
        sid=lambda s: s.sid,
    )
    store = state.store
    wsgi = SessionMiddleware(make_app(adapter), store, cookie_key=COOKIE_KEY, **options)
    cache = store.cache
    assert cache is not None

    def evict(sid: str, cookie: str) -> None:
        cache.backend.delete(cache.key(hash_session_id(sid)))

    return Layer(name, wsgi, cookie_name="session", engines=lambda: [state.engine], evict=evict)


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
    layer = Layer("", None, cookie_name="beaker.session.id")
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
        }
        layer.name = "beaker_db"
        # Beaker builds its own engine from the URL; count on whatever it registered.
        layer.engines = lambda: list(SqlaNamespaceManager.binds.dict.values())
        layer.note["large_read_miss"] = "no cache: every read is a database read"

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
        layer.unsupported["large_read_miss"] = (
            "memcached is its only store: a miss loses the session"
        )
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


def configure_django(memcached: str) -> None:
    """settings.configure() for cached_db on the shared MariaDB and memcached."""
    import django
    from django.conf import settings
    from sqlalchemy.engine import make_url

    if settings.configured:
        return
    url = make_url(MYSQL_URL)
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
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                "LOCATION": memcached,
            }
        },
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

    def __init__(self, app: Callable[..., Any]) -> None:
        from importlib import import_module

        from django.conf import settings

        self.app = app
        self.settings = settings
        self.SessionStore = import_module(settings.SESSION_ENGINE).SessionStore

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


def _django(memcached: str) -> Layer:
    configure_django(memcached)
    from django.contrib.sessions.backends.cached_db import SessionStore
    from django.core.management import call_command
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS django_session")
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'sessions'"
            if "django_migrations" in connection.introspection.table_names()
            else "SELECT 1"
        )
    call_command("migrate", "sessions", verbosity=0)

    adapter = Adapter(
        get=lambda environ: environ[DjangoSessionWSGI.ENVIRON_KEY],
        regenerate=lambda s: s.cycle_key(),  # what django.contrib.auth.login() calls
        sid=lambda s: s.session_key,
    )
    wsgi = DjangoSessionWSGI(make_app(adapter))

    def evict(sid: str, cookie: str) -> None:
        key = cookie.split("=", 1)[1]
        store = SessionStore(key)
        store._cache.delete(store.cache_key)

    def close() -> None:
        # Leave the shared database as found: no session table, no migration record.
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS django_session")
            cursor.execute("DELETE FROM django_migrations WHERE app = 'sessions'")
            cursor.execute("SELECT COUNT(*) FROM django_migrations")
            if cursor.fetchone()[0] == 0:
                cursor.execute("DROP TABLE django_migrations")
        connection.close()

    return Layer(
        "django_cached_db", wsgi, cookie_name="sessionid", django=True, evict=evict, closers=[close]
    )


@dataclass
class Services:
    memcached: str
    lock_dir: str
    sa: _SaState | None = None


def build_layers(
    memcached: str, names: tuple[str, ...] = LAYERS
) -> tuple[dict[str, Layer], Services]:
    """Build the requested layers against one memcached address and MYSQL_URL."""
    services = Services(memcached, tempfile.mkdtemp(prefix="bench-beaker-"))
    layers: dict[str, Layer] = {}
    for name in names:
        if name == "bare":
            layers[name] = _bare()
        elif name.startswith("sa_sessions"):
            if services.sa is None:
                services.sa = _SaState(memcached)
            options = {"cookie_only_threshold": 0} if name == "sa_sessions_server" else {}
            layers[name] = _sa_layer(name, services.sa, **options)
        elif name == "beaker_db":
            layers[name] = _beaker("db", memcached, services.lock_dir)
        elif name == "beaker_memcached":
            layers[name] = _beaker("memcached", memcached, services.lock_dir)
        elif name == "beaker_cookie":
            layers[name] = _beaker("cookie", memcached, services.lock_dir)
        elif name == "django_cached_db":
            layers[name] = _django(memcached)
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


# --------------------------------------------------------------------------- counting


class DriverCounter:
    """Counts every MySQLdb round trip: statements, COMMIT, ROLLBACK, autocommit, ping.

    Installed on ``MySQLdb.connections.Connection`` (all three SQL layers use that
    driver), so it sees what SQLAlchemy, Beaker and Django send, including the
    transaction control that statement hooks never show.
    """

    _NAMES = ("query", "commit", "rollback", "autocommit", "ping")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._saved: dict[str, Any] = {}

    def install(self) -> None:
        from MySQLdb import _mysql
        from MySQLdb.connections import Connection

        base = _mysql.connection
        counts = self.counts
        original_query = Connection.query
        self._saved = {name: Connection.__dict__.get(name) for name in self._NAMES}

        def query(conn: Any, sql: Any) -> Any:
            counts["query"] += 1
            return original_query(conn, sql)

        def commit(conn: Any) -> Any:
            counts["commit"] += 1
            return base.commit(conn)

        def rollback(conn: Any) -> Any:
            counts["rollback"] += 1
            return base.rollback(conn)

        def autocommit(conn: Any, on: Any) -> None:
            on = bool(on)
            if conn.get_autocommit() != on:
                counts["autocommit"] += 1
                base.autocommit(conn, on)

        def ping(conn: Any, *args: Any) -> Any:
            counts["ping"] += 1
            return base.ping(conn, *args)

        for name, fn in zip(self._NAMES, (query, commit, rollback, autocommit, ping), strict=True):
            setattr(Connection, name, fn)

    def uninstall(self) -> None:
        from MySQLdb.connections import Connection

        for name, original in self._saved.items():
            if original is None:
                with contextlib.suppress(AttributeError):
                    delattr(Connection, name)
            else:
                setattr(Connection, name, original)
        self._saved = {}

    def total(self) -> int:
        return sum(self.counts.values())


class CacheCounter:
    """Counts memcached round trips in both client libraries, by command.

    pymemcache (sa_sessions, Django, the floors): every network exchange of
    ``pymemcache.client.base.Client`` goes through ``_fetch_cmd``, ``_store_cmd`` or
    ``_misc_cmd``.  python-memcached (Beaker): every command goes through
    ``_Host.send_cmd``/``send_cmds``.  Cross-checked against memcached's own
    ``stats`` counters (:func:`memcached_stats`).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._saved: list[tuple[Any, str, Any]] = []

    @staticmethod
    def _op(name: bytes | str) -> str:
        name = name.decode() if isinstance(name, bytes) else name
        name = name.split(" ", 1)[0].strip().lower()
        if name in ("get", "gets"):
            return "get"
        if name in ("set", "add", "replace", "cas", "append", "prepend"):
            return "set"
        if name == "delete":
            return "delete"
        return name

    def install(self) -> None:
        from pymemcache.client import base as pm

        counts, op = self.counts, self._op
        fetch, store, misc = pm.Client._fetch_cmd, pm.Client._store_cmd, pm.Client._misc_cmd

        def _fetch_cmd(client: Any, name: bytes, *args: Any, **kw: Any) -> Any:
            counts[op(name)] += 1
            return fetch(client, name, *args, **kw)

        def _store_cmd(client: Any, name: bytes, *args: Any, **kw: Any) -> Any:
            counts[op(name)] += 1
            return store(client, name, *args, **kw)

        def _misc_cmd(client: Any, cmds: Any, cmd_name: bytes, *args: Any, **kw: Any) -> Any:
            counts[op(cmd_name)] += 1
            return misc(client, cmds, cmd_name, *args, **kw)

        patches: list[tuple[Any, str, Any]] = [
            (pm.Client, "_fetch_cmd", _fetch_cmd),
            (pm.Client, "_store_cmd", _store_cmd),
            (pm.Client, "_misc_cmd", _misc_cmd),
        ]
        with contextlib.suppress(ImportError):
            import memcache

            send_cmd, send_cmds = memcache._Host.send_cmd, memcache._Host.send_cmds

            def py_send_cmd(host: Any, cmd: Any) -> Any:
                counts[op(cmd)] += 1
                return send_cmd(host, cmd)

            def py_send_cmds(host: Any, cmds: Any) -> Any:
                counts[op(cmds)] += 1
                return send_cmds(host, cmds)

            patches += [
                (memcache._Host, "send_cmd", py_send_cmd),
                (memcache._Host, "send_cmds", py_send_cmds),
            ]
        for owner, name, fn in patches:
            self._saved.append((owner, name, owner.__dict__[name]))
            setattr(owner, name, fn)

    def uninstall(self) -> None:
        for owner, name, original in self._saved:
            setattr(owner, name, original)
        self._saved = []

    def total(self) -> int:
        return sum(self.counts.values())


class SqlCounter:
    """Statements as the libraries report them: SQLAlchemy events, Django's capture."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.count = 0
        self._engines: list[Any] = []
        self._capture: Any = None

    def _record(self, *args: Any) -> None:
        self.count += 1

    def install(self) -> None:
        from sqlalchemy import event

        for engine in self.layer.engines():
            event.listen(engine, "before_cursor_execute", self._record)
            self._engines.append(engine)
        if self.layer.django:
            from django.db import connection
            from django.test.utils import CaptureQueriesContext

            self._capture = CaptureQueriesContext(connection)
            self._capture.__enter__()

    def snapshot(self) -> int:
        django = 0
        if self._capture is not None:
            # Django 4.2+ also logs its transaction control (BEGIN = autocommit off,
            # COMMIT, ROLLBACK) as pseudo-queries; the driver counter sees those as round
            # trips, so only real statements are counted here, as with SQLAlchemy.
            django = sum(
                1
                for q in self._capture.captured_queries
                if q["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")
            )
        return self.count + django

    def uninstall(self) -> None:
        from sqlalchemy import event

        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._record)
        self._engines = []
        if self._capture is not None:
            self._capture.__exit__(None, None, None)
            self._capture = None


def memcached_stats(address: str) -> dict[str, int]:
    """memcached's own counters (independent of any client library)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    stats: dict[str, int] = {}
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            with contextlib.suppress(ValueError):
                stats[parts[1]] = int(parts[2])
    return stats


def server_ops(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    def delta(*names: str) -> int:
        return sum(after.get(n, 0) - before.get(n, 0) for n in names)

    return {
        "get": delta("cmd_get"),
        "set": delta("cmd_set"),
        "delete": delta("delete_hits", "delete_misses"),
    }


# --------------------------------------------------------------------------- memcached


@contextlib.contextmanager
def memcached_server(address: str | None = None) -> Iterator[str]:
    """Yield ``host:port`` of a private memcached (started here unless ``address``)."""
    if address:
        yield address
        return
    binary = memcached_binary()
    if binary is None:
        raise RuntimeError("memcached binary not found (set SA_SESSIONS_MEMCACHED_BIN)")
    server = MemcachedProcess(binary)
    server.start()
    try:
        yield server.address
    finally:
        server.stop()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
