"""The session database goes down and comes back: a PRIVATE MariaDB, killed and restarted.

A MariaDB instance of this test module only (own datadir, socket and loopback port) is
killed with SIGKILL under a live engine and restarted on the same datadir and port:

* cookie-only sessions never touch the database and keep working;
* server-side operations raise :class:`~sa_sessions.SessionBackendUnavailable`, which the
  middleware answers with a 503 carrying no ``Set-Cookie`` (never a half-written cookie),
  so the browser keeps its previous cookie, which works again afterwards;
* reads of server-side sessions are still served while their copy is in memcached;
* the engine (``pool_pre_ping=True``) reconnects by itself after the restart: no 503 once
  the server answers, without recreating the engine or the store;
* under load, every write that was answered 200 survives the crash.

Needs the ``mariadbd`` and ``mariadb-install-db`` binaries (skips without them, fails
under ``SA_SESSIONS_REQUIRE_SERVICES=1``).  Figures: docs/resilience.md.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase

from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import memcached_region

from .conftest import SECRET
from .conftest import MemcachedProcess
from .conftest import free_port
from .conftest import missing_service
from .webapp import COOKIE
from .webapp import FakeClock
from .webapp import Result
from .webapp import call
from .webapp import make_middleware

pytestmark = [pytest.mark.mysql, pytest.mark.slow]


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
        if found:
            return found
    return None


@dataclass
class PrivateMariaDB:
    """mariadbd on its own datadir and loopback port; kill()/start() simulate a crash."""

    server: str
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql+mysqldb://root@127.0.0.1:{self.port}/test"

    def start(self, timeout: float = 60.0) -> None:
        args = [
            self.server,
            "--no-defaults",
            f"--datadir={self.root / 'data'}",
            f"--socket={self.root / 'm.sock'}",
            f"--pid-file={self.root / 'm.pid'}",
            "--bind-address=127.0.0.1",
            f"--port={self.port}",
            "--skip-name-resolve",
        ]
        if os.geteuid() == 0:
            args.insert(2, "--user=mysql")  # mariadbd refuses to run as root
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: see {self.root / 'server.log'}")
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError("mariadbd did not start in time")

    def _answers(self) -> bool:
        import MySQLdb

        try:
            MySQLdb.connect(host="127.0.0.1", port=self.port, user="root").close()
        except MySQLdb.OperationalError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: a crash; uncommitted transactions are rolled back at the next start."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def ensure_running(self) -> None:
        if self.proc is None:
            self.start()


@pytest.fixture(scope="module")
def private_mariadb() -> Iterator[PrivateMariaDB]:
    server = _binary("mariadbd", "mysqld")
    install = _binary("mariadb-install-db", "mysql_install_db")
    if server is None or install is None:
        missing_service("mariadbd / mariadb-install-db binaries")
        raise AssertionError("unreachable")
    root = Path(tempfile.mkdtemp(prefix="sa-mdb-"))  # short: the socket path is limited
    try:
        if os.geteuid() == 0:
            try:
                mysql = pwd.getpwnam("mysql")
            except KeyError:
                missing_service("a 'mysql' system user to run mariadbd as")
            shutil.chown(root, "mysql", "mysql")
            assert root.stat().st_uid == mysql.pw_uid  # mariadbd must own its datadir
        args = [
            install,
            f"--datadir={root / 'data'}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--user=mysql")
        subprocess.run(args, check=True, capture_output=True, timeout=180)
        db = PrivateMariaDB(server, root)
        db.start()
        import MySQLdb

        conn = MySQLdb.connect(host="127.0.0.1", port=db.port, user="root")
        conn.cursor().execute("CREATE DATABASE IF NOT EXISTS test")
        conn.close()
        yield db
        db.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mariadb(private_mariadb: PrivateMariaDB) -> PrivateMariaDB:
    """The private server, running (a previous test may have left it killed)."""
    private_mariadb.ensure_running()
    return private_mariadb


@pytest.fixture
def engine(mariadb: PrivateMariaDB) -> Iterator[Engine]:
    """One engine for the whole test: it must survive the crash and the restart."""
    eng = create_engine(mariadb.url, pool_pre_ping=True, pool_recycle=1800, pool_size=10)
    yield eng
    eng.dispose()


@pytest.fixture
def model(engine: Engine) -> Iterator[type[Any]]:
    class Base(DeclarativeBase):
        pass

    class WebSession(SessionModel, Base):
        __tablename__ = "outage_sessions"

    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield WebSession
    with contextlib.suppress(Exception):  # the server may be down after a failed test
        Base.metadata.drop_all(engine)


def cookie_of(result: Result) -> str:
    (sc,) = result.set_cookies
    assert not sc.deleted
    return f"{COOKIE}={sc.value}"


def assert_503_without_cookie(result: Result) -> None:
    assert result.status == 503
    assert result.set_cookies == []  # never a half-written cookie
    headers = dict(result.headers)
    assert headers["Retry-After"] == "5"
    assert headers["Cache-Control"] == "no-store"


# --------------------------------------------------------------------------- tests


def test_cookie_only_sessions_keep_working(
    mariadb: PrivateMariaDB, engine: Engine, model: type[Any]
) -> None:
    store = SessionStore(model, engine, secret_keys=SECRET)
    mw = make_middleware(store, catch=False)
    cookie = cookie_of(call(mw, "set=a:1"))
    assert cookie.split("=", 1)[1].startswith("v1.d")  # the data is in the cookie
    mariadb.kill()
    result = call(mw, "incr=n&set=b:2", cookie=cookie)
    assert result.status == 200
    cookie = cookie_of(result)
    result = call(mw, "show", cookie=cookie)
    assert result.status == 200 and result.json["data"] == {"a": 1, "n": 1, "b": 2}
    newcomer = call(mw, "set=c:3&show")  # a new visitor too
    assert newcomer.status == 200 and newcomer.json["data"] == {"c": 3}
    assert cookie_of(newcomer)


def test_server_side_sessions_answer_503_then_recover_without_a_new_engine(
    mariadb: PrivateMariaDB, engine: Engine, model: type[Any]
) -> None:
    """No cache: every server-side operation needs the database."""
    store = SessionStore(model, engine, secret_keys=SECRET)
    mw = make_middleware(store, cookie_only_threshold=0, catch=False)
    cookie = cookie_of(call(mw, "set=a:1"))
    assert cookie.split("=", 1)[1].startswith("v1.i")  # a signed id: the data is in a row

    mariadb.kill()
    slowest = 0.0
    for query, sent in [
        ("show", cookie),  # read
        ("set=b:2", cookie),  # update
        ("terminate", cookie),  # logout: fails loudly, the session stays
        ("regen", cookie),
        ("set=x:1", None),  # a new server-side session (INSERT)
    ]:
        started = time.monotonic()
        assert_503_without_cookie(call(mw, query, cookie=sent))
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 2.0  # refused at once, no hang
    print(f"\nFIGURES database down: slowest 503 {1000 * slowest:.1f} ms")

    mariadb.start()  # same datadir and port; the engine and its pool are the old ones
    result = call(mw, "show", cookie=cookie)  # the first request after the restart
    assert result.status == 200  # pool_pre_ping replaced the dead pooled connections
    assert result.json["data"] == {"a": 1}  # nothing half-done survived
    assert result.set_cookies == []  # the previous cookie is still the right one
    assert call(mw, "set=b:2", cookie=cookie).status == 200
    assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1, "b": 2}
    assert store.engine is engine


@pytest.mark.memcached
def test_reads_come_from_the_cache_writes_answer_503(
    mariadb: PrivateMariaDB,
    engine: Engine,
    model: type[Any],
    memcached_factory: Callable[[], MemcachedProcess],
) -> None:
    memcached = memcached_factory()
    store = SessionStore(
        model, engine, region=memcached_region([memcached.address]), secret_keys=SECRET
    )
    mw = make_middleware(store, cookie_only_threshold=0, catch=False)
    cookie = cookie_of(call(mw, "set=a:1"))

    mariadb.kill()
    for _ in range(3):  # a cache hit needs no database
        result = call(mw, "show", cookie=cookie)
        assert result.status == 200 and result.json["data"] == {"a": 1}
    assert_503_without_cookie(call(mw, "set=b:2", cookie=cookie))
    result = call(mw, "show", cookie=cookie)  # the failed write changed nothing
    assert result.status == 200 and result.json["data"] == {"a": 1}

    mariadb.start()
    assert call(mw, "set=b:2", cookie=cookie).status == 200
    assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1, "b": 2}


@dataclass
class Client:
    cookie: str
    acknowledged: int = 0  # increments answered 200
    attempted: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, status)


@pytest.mark.memcached
def test_crash_under_load_loses_no_acknowledged_write(
    mariadb: PrivateMariaDB,
    engine: Engine,
    model: type[Any],
    memcached_factory: Callable[[], MemcachedProcess],
) -> None:
    """Workers increment their own counters while the server is killed and restarted."""
    memcached = memcached_factory()
    clock = FakeClock()
    store = SessionStore(
        model,
        engine,
        region=memcached_region([memcached.address]),
        secret_keys=SECRET,
        clock=clock,
    )
    mw = make_middleware(store, cookie_only_threshold=0, clock=clock, catch=False)
    clients = [Client(cookie_of(call(mw, "set=n:0"))) for _ in range(6)]
    stop = threading.Event()
    began = time.monotonic()

    def work(c: Client) -> None:
        while not stop.is_set():
            c.attempted += 1
            result = call(mw, "incr=n", cookie=c.cookie)
            c.statuses[result.status] = c.statuses.get(result.status, 0) + 1
            c.samples.append((time.monotonic() - began, result.status))
            if result.set_cookies and result.status != 200:
                c.problems.append(f"Set-Cookie on a {result.status}")
            if result.status == 200:
                c.acknowledged += 1
                for sc in result.set_cookies:  # the id cookie names the version saved
                    if sc.deleted:
                        c.problems.append("cookie deleted on a 200")
                    c.cookie = f"{COOKIE}={sc.value}"
            elif result.status == 503:
                time.sleep(0.02)  # what Retry-After asks for, shortened
            else:
                c.problems.append(f"status {result.status}")

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        killed_at = time.monotonic() - began
        mariadb.kill()
        time.sleep(1.5)
        mariadb.start()
        restarted_at = time.monotonic() - began
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert [p for c in clients for p in c.problems] == []
    assert sum(c.statuses.get(503, 0) for c in clients) > 0  # the outage was seen
    recovered = max(
        min(t for t, status in c.samples if t > restarted_at and status == 200) for c in clients
    )
    print(
        f"\nFIGURES database crash: requests "
        f"{sum(len(c.samples) for c in clients)}, 503s "
        f"{sum(c.statuses.get(503, 0) for c in clients)}, outage "
        f"{restarted_at - killed_at:.2f} s, every client served again "
        f"{recovered - restarted_at:.3f} s after the restart returned"
    )
    for c in clients:
        assert all(status == 200 for t, status in c.samples if t < killed_at - 0.1)
        assert all(status == 200 for t, status in c.samples if t > restarted_at + 0.5)
        uncached = SessionStore(model, engine, secret_keys=SECRET, clock=clock)
        reader = make_middleware(uncached, cookie_only_threshold=0, clock=clock, catch=False)
        n = call(reader, "show", cookie=c.cookie).json["data"]["n"]
        # Every acknowledged increment is there; one whose COMMIT was processed but
        # whose answer was lost with the connection may be there too.
        assert c.acknowledged <= n <= c.attempted
        assert call(mw, "show", cookie=c.cookie).json["data"]["n"] == n  # cache is current
