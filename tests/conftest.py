"""Shared fixtures: real databases, a real memcached process, fresh models per test.

Service tests skip when a server is missing, unless ``SA_SESSIONS_REQUIRE_SERVICES=1``
(as in CI), where a missing server fails the run.

Environment:
  SA_SESSIONS_MYSQL_URL      default mysql+mysqldb://root@localhost/test
  SA_SESSIONS_POSTGRES_URL   default postgresql+psycopg://localhost/test
  SA_SESSIONS_MEMCACHED_BIN  default: memcached found on PATH
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import ModuleType
from typing import Any
from typing import TypeVar

import pytest
from sqlalchemy import Engine
from sqlalchemy import Integer
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.pool import StaticPool

from sa_sessions.model import SessionModel

REQUIRE_SERVICES = os.environ.get("SA_SESSIONS_REQUIRE_SERVICES") == "1"
MYSQL_URL = os.environ.get("SA_SESSIONS_MYSQL_URL", "mysql+mysqldb://root@localhost/test")
POSTGRES_URL = os.environ.get("SA_SESSIONS_POSTGRES_URL", "postgresql+psycopg://localhost/test")
SECRET = b"test-secret-key-0123456789abcdef-0123456789"
OTHER_SECRET = b"another-secret-key-0123456789abcdef-987654"


def missing_service(what: str) -> None:
    """Skip locally; fail in CI, where every service must be present."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (SA_SESSIONS_REQUIRE_SERVICES=1) but unavailable")
    pytest.skip(f"{what} unavailable")


# --------------------------------------------------------------------------- databases


def make_engine(kind: str) -> Engine:
    """A real engine of the given kind, or skip/fail when its server is absent."""
    if kind == "sqlite":
        return create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    url = {"mysql": MYSQL_URL, "postgres": POSTGRES_URL}[kind]
    try:
        engine = create_engine(url, pool_pre_ping=True, pool_recycle=1800)
        with engine.connect():
            pass
    except Exception as exc:  # missing driver or server
        missing_service(f"{kind} ({type(exc).__name__})")
        raise  # unreachable: missing_service raises
    return engine


DB_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


#: The databases that have a cleaner lock (SQLite allows one writer at a time anyway).
SERVER_DB_KINDS = DB_KINDS[1:]

_ENGINES: dict[str, Engine] = {}


@pytest.fixture
def engine(db_kind: str) -> Engine:
    """One engine per database kind for the whole run (connection pools are reused)."""
    if db_kind not in _ENGINES:
        _ENGINES[db_kind] = make_engine(db_kind)
    return _ENGINES[db_kind]


@pytest.fixture
def model(engine: Engine) -> Iterator[type[Any]]:
    """A fresh declarative Base with a mixed-in session model and a user column."""

    class Base(DeclarativeBase):
        pass

    class WebSession(SessionModel, Base):
        # Per process, so parallel test runs on one database never share a table.
        __tablename__ = f"sa_test_sessions_{os.getpid()}"
        user_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)

    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield WebSession
    Base.metadata.drop_all(engine)


@dataclass
class StatementLog:
    """Every SQL statement an engine ran while attached."""

    statements: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.statements.clear()

    def count(self, verb: str | None = None) -> int:
        if verb is None:
            return len(self.statements)
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(verb))


@contextmanager
def recording_statements(engine: Engine, statements: list[str]) -> Iterator[list[str]]:
    """Append every SQL statement ``engine`` runs to ``statements`` while inside."""

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def sql_log(engine: Engine) -> Iterator[StatementLog]:
    log = StatementLog()
    with recording_statements(engine, log.statements):
        yield log


# --------------------------------------------------------------------------- cache servers


ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_file(path: Path, module_name: str) -> ModuleType:
    """Import a script that is not in a package (bench/, examples/) by its path."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses, SQLAlchemy and Flask look the module up by name while it loads.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_EXAMPLES_LOADED: dict[str, ModuleType] = {}


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once per test run."""
    if name not in _EXAMPLES_LOADED:
        _EXAMPLES_LOADED[name] = load_file(EXAMPLES / f"{name}.py", f"sa_sessions_example_{name}")
    return _EXAMPLES_LOADED[name]


def run_bench(script: str, out: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script>`` with ``--quick``, writing its report and JSON into ``out``."""
    command = [sys.executable, str(ROOT / "bench" / script), "--quick", "--out-dir", str(out)]
    command += ["--json", str(out / "results.json")]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ)
    )


# bench/cache_servers.py: the one launcher of memcached and redis-server processes.
_cache_servers = load_file(ROOT / "bench" / "cache_servers.py", "sa_sessions_cache_servers")
MemcachedProcess = _cache_servers.MemcachedProcess
RedisProcess = _cache_servers.RedisProcess
free_port = _cache_servers.free_port
memcached_binary = _cache_servers.memcached_binary
redis_binary = _cache_servers.redis_binary

P = TypeVar("P")


def _factory(kind: type[P], binary: str | None, what: str) -> Iterator[Callable[[], P]]:
    """Start any number of servers of one kind; all are stopped at the end of the run."""
    started: list[Any] = []

    def start() -> P:
        if binary is None:
            missing_service(f"{what} binary")
            raise AssertionError("unreachable")
        server: Any = kind(binary)
        server.start()
        started.append(server)
        return server  # type: ignore[no-any-return]

    yield start
    for server in started:
        if server.proc is not None:
            server.thaw()  # a stopped process ignores SIGTERM until it runs again
        server.stop()


def _fresh(server: Any) -> Any:
    """The run's shared server, flushed (and restarted if a test stopped it)."""
    if server.proc is None:
        server.start()
    server.flush()
    return server


@pytest.fixture(scope="session")
def memcached_factory() -> Iterator[Callable[[], MemcachedProcess]]:
    yield from _factory(MemcachedProcess, memcached_binary(), "memcached")


@pytest.fixture(scope="session")
def _shared_memcached(memcached_factory: Callable[[], MemcachedProcess]) -> MemcachedProcess:
    return memcached_factory()


@pytest.fixture
def memcached(_shared_memcached: MemcachedProcess) -> MemcachedProcess:
    """The run's shared memcached, flushed."""
    return _fresh(_shared_memcached)


@pytest.fixture(scope="session")
def redis_factory() -> Iterator[Callable[[], RedisProcess]]:
    yield from _factory(RedisProcess, redis_binary(), "redis-server")


@pytest.fixture(scope="session")
def _shared_redis(redis_factory: Callable[[], RedisProcess]) -> RedisProcess:
    return redis_factory()


@pytest.fixture
def redis_server(_shared_redis: RedisProcess) -> RedisProcess:
    """The run's shared redis-server, flushed."""
    return _fresh(_shared_redis)
