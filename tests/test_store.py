"""The store contract, run on every database x cache configuration.

SQLite, MariaDB (mysqlclient) and PostgreSQL (psycopg), each with no cache, the
in-process memory cache, a real memcached process and a real Redis process.
"""

from __future__ import annotations

import decimal
import os
import pickle
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from dogpile.cache import CacheRegion
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import PoolResetState

from sa_sessions import SessionBackendUnavailable
from sa_sessions import SessionConfigError
from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import memcached_region
from sa_sessions import memory_region
from sa_sessions import redis_region
from sa_sessions.cache.entry import Kind
from sa_sessions.codec.blob import BlobMeta
from sa_sessions.ids import hash_session_id
from sa_sessions.ids import new_session_id

from .conftest import SECRET
from .conftest import SERVER_DB_KINDS
from .conftest import MemcachedProcess
from .conftest import RedisProcess
from .conftest import StatementLog
from .conftest import free_port

UTC = timezone.utc

CACHE_KINDS = [
    pytest.param("none", id="nocache"),
    pytest.param("memory", id="memory"),
    pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=CACHE_KINDS)
def cache_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def region(cache_kind: str, request: pytest.FixtureRequest) -> CacheRegion | None:
    if cache_kind == "none":
        return None
    if cache_kind == "memory":
        return memory_region()
    if cache_kind == "redis":
        redis: RedisProcess = request.getfixturevalue("redis_server")
        return redis_region(redis.url)
    server: MemcachedProcess = request.getfixturevalue("memcached")
    return memcached_region([server.address])


def make_store(model: type[Any], engine: Engine, region: CacheRegion | None) -> SessionStore[Any]:
    return SessionStore(
        model,
        engine,
        region=region,
        secret_keys=SECRET,
        columns={"user_id": lambda data: data.get("user_id")},
    )


@pytest.fixture
def store(model: type[Any], engine: Engine, region: CacheRegion | None) -> SessionStore[Any]:
    return make_store(model, engine, region)


@pytest.fixture(params=CACHE_KINDS[1:])
def cached_store(
    model: type[Any], engine: Engine, request: pytest.FixtureRequest
) -> SessionStore[Any]:
    """Only the configurations that have a cache."""
    if request.param == "memory":
        return make_store(model, engine, memory_region())
    if request.param == "redis":
        redis: RedisProcess = request.getfixturevalue("redis_server")
        return make_store(model, engine, redis_region(redis.url))
    server: MemcachedProcess = request.getfixturevalue("memcached")
    return make_store(model, engine, memcached_region([server.address]))


def create(store: SessionStore[Any], sid: str, data: dict[str, Any], m: BlobMeta) -> Any:
    """A new session under ``sid`` with the times of ``m``."""
    return store.save(
        sid, data, expires_at=m.expires_at, touched_at=m.touched_at, ssl_only=m.ssl_only
    )


def save_over(store: SessionStore[Any], record: Any, data: dict[str, Any], m: BlobMeta) -> Any:
    """A versioned save of ``data`` on top of ``record``."""
    return store.save(record.session_id, data, expires_at=m.expires_at, base=record)


def from_row(store: SessionStore[Any], sid: str) -> Any:
    """The session as the database alone has it (a store without a cache)."""
    return SessionStore(store.model, store.engine, secret_keys=SECRET).load(sid)


def evict(store: SessionStore[Any], sid: str) -> None:
    """Drop the cached entry, as an eviction would."""
    if store.cache is not None:
        store.cache.backend.delete(store.cache.key(hash_session_id(sid)))


def cache_kind_of(store: SessionStore[Any], sid: str) -> Kind | None:
    """The kind of the session's cache entry, or None."""
    assert store.cache is not None
    hashed = hash_session_id(sid)
    found = store.cache.backend.get(store.cache.key(hashed))
    entry = None if found is None else store.cache.entries.decode(hashed, found[0])
    return None if entry is None else entry.kind


def meta(days: float = 1, ssl_only: bool = False) -> BlobMeta:
    now = datetime.now(UTC)
    return BlobMeta(expires_at=now + timedelta(days=days), touched_at=now, ssl_only=ssl_only)


EVERY_TYPE: dict[str, Any] = {
    "none": None,
    "bool": True,
    "int": 2**70,
    "float": 1.5,
    "str": "héllo ✓",
    "bytes": b"\x00\xff",
    "list": [1, "a", [2]],
    "tuple": (1, "b"),
    "set": {1, 2},
    "frozenset": frozenset({"x"}),
    "dict": {"nested": {"k": [1, 2]}},
    "datetime": datetime(2025, 6, 1, 12, 0, 0, 500, tzinfo=UTC),
    "naive": datetime(2025, 6, 1, 12, 0, 0),
    "date": date(2025, 6, 1),
    "time": time(12, 30),
    "timedelta": timedelta(hours=3),
    "decimal": decimal.Decimal("12.3400"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


@pytest.mark.parametrize("codec", ["pickle", "json"])
def test_round_trip_of_every_supported_type(
    model: type[Any], engine: Engine, region: CacheRegion | None, codec: Any
) -> None:
    store = SessionStore(model, engine, region=region, secret_keys=SECRET, codec=codec)
    sid = new_session_id()
    create(store, sid, EVERY_TYPE, meta())
    loaded = store.load(sid)
    assert loaded is not None
    assert loaded.data == EVERY_TYPE
    assert {k: type(v) for k, v in loaded.data.items()} == {
        k: type(v) for k, v in EVERY_TYPE.items()
    }
    fresh = from_row(store, sid)
    assert fresh is not None and fresh.data == EVERY_TYPE
    assert fresh.version == loaded.version == 1


def test_raw_id_is_stored_nowhere(store: SessionStore[Any], engine: Engine) -> None:
    sid = new_session_id()
    create(store, sid, {"a": 1}, meta())
    with engine.connect() as conn:
        rows = conn.execute(select(store.table)).all()
    assert [row.id for row in rows] == [hash_session_id(sid)]
    assert all(sid.encode() not in bytes(row.data) for row in rows)


def test_two_megabyte_session_round_trips(store: SessionStore[Any], sql_log: StatementLog) -> None:
    """Bigger than MySQL's 64 KiB BLOB and than memcached's 1 MiB item: served from the DB."""
    big = os.urandom(2 * 1024 * 1024)
    sid = new_session_id()
    create(store, sid, {"big": big}, meta())
    sql_log.clear()
    loaded = store.load(sid)
    assert loaded is not None and loaded.data["big"] == big
    assert sql_log.count("SELECT") == 1  # cache skipped: too large to hold
    if store.cache is not None:
        assert cache_kind_of(store, sid) is Kind.ROW_ONLY  # readers go to the row


def test_cache_hit_runs_no_sql(cached_store: SessionStore[Any], sql_log: StatementLog) -> None:
    store = cached_store
    assert store.cache is not None
    sid = new_session_id()
    create(store, sid, {"a": 1}, meta())
    store.cache.stats.reset()
    sql_log.clear()
    loaded = store.load(sid)
    assert loaded is not None and loaded.data == {"a": 1}
    assert sql_log.statements == []
    assert store.cache.stats.gets == 1


def test_cache_miss_reads_database_once_and_refills(
    store: SessionStore[Any], sql_log: StatementLog
) -> None:
    sid = new_session_id()
    create(store, sid, {"a": 1}, meta())
    evict(store, sid)
    sql_log.clear()
    assert store.load(sid) is not None
    assert sql_log.count("SELECT") == 1
    sql_log.clear()
    assert store.load(sid) is not None
    assert sql_log.count() == (0 if store.cache is not None else 1)


@pytest.fixture
def tx_log(engine: Engine) -> Iterator[list[str]]:
    """Transaction control in the order SQLAlchemy hands it to the driver.

    ``pool ROLLBACK`` is the pool's reset on return; it is left out when closing the
    connection already rolled the transaction back.  mysqlclient sends every COMMIT and
    ROLLBACK to the server; psycopg and sqlite3 skip a ROLLBACK outside a transaction.
    """
    log: list[str] = []

    def on_commit(conn: Any) -> None:
        log.append("COMMIT")

    def on_rollback(conn: Any) -> None:
        log.append("ROLLBACK")

    def on_reset(dbapi_conn: Any, record: Any, state: PoolResetState) -> None:
        if not state.transaction_was_reset:
            log.append("pool ROLLBACK")

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "rollback", on_rollback)
    event.listen(engine.pool, "reset", on_reset)
    yield log
    event.remove(engine, "commit", on_commit)
    event.remove(engine, "rollback", on_rollback)
    event.remove(engine.pool, "reset", on_reset)


def test_database_read_ends_in_the_rollback_it_costs_anyway(
    store: SessionStore[Any], sql_log: StatementLog, tx_log: list[str], db_kind: str
) -> None:
    """A cache miss is SELECT + ROLLBACK (2 MariaDB round trips), not SELECT + COMMIT + ROLLBACK.

    PostgreSQL keeps its COMMIT: psycopg skips the pool's ROLLBACK after it (no round
    trip to save) and would drop its prepared statements on a ROLLBACK.
    """
    sid = new_session_id()
    create(store, sid, {"a": 1}, meta())
    expected = ["COMMIT", "pool ROLLBACK"] if db_kind == "postgres" else ["ROLLBACK"]
    evict(store, sid)
    sql_log.clear()
    tx_log.clear()
    assert store.load(sid) is not None
    assert sql_log.count() == sql_log.count("SELECT") == 1
    assert tx_log == expected
    tx_log.clear()
    assert store.load(new_session_id()) is None  # a missing row reads the same way
    assert tx_log == expected


def test_each_write_commits_once(store: SessionStore[Any], tx_log: list[str]) -> None:
    """One COMMIT per write; the pool's ROLLBACK after it is SQLAlchemy's reset on return.

    That ROLLBACK is a MariaDB round trip that only ``pool_reset_on_return=None`` on
    the engine avoids; the store leaves the user's engine as configured.
    """
    sid = new_session_id()
    created = create(store, sid, {"a": 1}, meta())
    assert tx_log == ["COMMIT", "pool ROLLBACK"]
    tx_log.clear()
    assert save_over(store, created, {"a": 2}, meta()) is not None
    assert tx_log == ["COMMIT", "pool ROLLBACK"]
    tx_log.clear()
    store.delete(sid)
    assert tx_log == ["COMMIT", "pool ROLLBACK"]


class _UnreachableBase(DeclarativeBase):
    pass


class _UnreachableSession(SessionModel, _UnreachableBase):
    __tablename__ = "sa_test_unreachable_sessions"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("sqlite:////nonexistent-sa-sessions-dir/sessions.db", id="sqlite"),
        pytest.param(f"mysql+mysqldb://root@127.0.0.1:{free_port()}/test", id="mysql"),
        pytest.param(f"postgresql+psycopg://127.0.0.1:{free_port()}/test", id="postgres"),
    ],
)
def test_unreachable_database_is_a_typed_error_for_reads_and_writes(url: str) -> None:
    """Reads (no COMMIT) and writes (COMMIT) map connection failures the same way."""
    engine = create_engine(url)
    store = SessionStore(_UnreachableSession, engine, secret_keys=SECRET)
    sid = new_session_id()
    try:
        with pytest.raises(SessionBackendUnavailable):
            store.load(sid)
        with pytest.raises(SessionBackendUnavailable):
            create(store, sid, {"a": 1}, meta())
        with pytest.raises(SessionBackendUnavailable):
            store.delete(sid)
    finally:
        engine.dispose()


def test_exactly_one_write_statement_per_save(
    store: SessionStore[Any], sql_log: StatementLog
) -> None:
    sid = new_session_id()
    sql_log.clear()
    created = create(store, sid, {"a": 1}, meta())
    assert sql_log.statements and len(sql_log.statements) == 1
    assert sql_log.count("INSERT") == 1
    sql_log.clear()
    updated = save_over(store, created, {"a": 2}, meta())
    assert updated is not None and updated.version == 2
    assert len(sql_log.statements) == 1 and sql_log.count("UPDATE") == 1
    if store.cache is not None:
        assert store.cache.stats.sets >= 2


def test_update_from_a_stale_version_merges_only_its_changes(store: SessionStore[Any]) -> None:
    sid = new_session_id()
    first = create(store, sid, {"a": 1, "b": 1}, meta())
    assert save_over(store, first, {"a": 2, "b": 1}, meta()) is not None  # row: version 2
    merged = save_over(store, first, {"a": 1, "b": 3}, meta())  # from version 1: changes b only
    assert merged is not None and merged.version == 3
    loaded = from_row(store, sid)
    assert loaded is not None and loaded.data == {"a": 2, "b": 3} and loaded.version == 3
    explicit = store.save(sid, {}, expires_at=merged.expires_at, base=first, changes={"c": 4})
    assert explicit is not None and dict(explicit.data) == {"a": 2, "b": 3, "c": 4}


def test_update_never_resurrects_a_deleted_session(
    store: SessionStore[Any], engine: Engine
) -> None:
    sid = new_session_id()
    record = create(store, sid, {"user": "alice"}, meta())
    store.delete(sid)
    assert save_over(store, record, {"user": "alice", "more": 1}, meta()) is None
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(store.table)).scalar() == 0
    assert store.load(sid) is None


def test_expired_sessions_are_never_served_and_deleted_when_read(
    store: SessionStore[Any], engine: Engine
) -> None:
    sid = new_session_id()
    past = datetime.now(UTC) - timedelta(seconds=1)
    create(store, sid, {"a": 1}, BlobMeta(expires_at=past, touched_at=past))
    assert store.load(sid) is None
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(store.table)).scalar() == 0
    assert from_row(store, sid) is None
    if store.cache is not None:
        assert cache_kind_of(store, sid) is Kind.ENDED


@pytest.mark.parametrize(
    "bad_id", ["", "x", "a" * 42, "a" * 44, "' OR '1'='1", "abc def" + "a" * 36, "a\r\n" * 15]
)
def test_malformed_ids_reach_no_backend(
    store: SessionStore[Any], sql_log: StatementLog, bad_id: str
) -> None:
    sql_log.clear()
    assert store.load(bad_id) is None
    store.delete(bad_id)
    assert sql_log.statements == []
    if store.cache is not None:
        assert store.cache.stats.gets == 0 and store.cache.stats.deletes == 0


def test_blob_edited_in_the_database_is_rejected(
    store: SessionStore[Any], engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    sid = new_session_id()
    create(store, sid, {"role": "user"}, meta())
    evict(store, sid)
    with engine.begin() as conn:
        blob = bytearray(conn.execute(select(store.table.c.data)).scalar_one())
        blob[20] ^= 0x01
        conn.execute(update(store.table).values(data=bytes(blob)))
    with caplog.at_level("WARNING", logger="sa_sessions.security"):
        assert store.load(sid) is None
    assert "rejected" in caplog.text
    assert sid not in caplog.text


def test_blob_swapped_from_another_row_is_rejected(
    store: SessionStore[Any], engine: Engine
) -> None:
    victim, attacker = new_session_id(), new_session_id()
    create(store, victim, {"role": "admin"}, meta())
    create(store, attacker, {"role": "user"}, meta())
    t = store.table
    with engine.begin() as conn:
        admin_blob = conn.execute(
            select(t.c.data).where(t.c.id == hash_session_id(victim))
        ).scalar_one()
        conn.execute(update(t).where(t.c.id == hash_session_id(attacker)).values(data=admin_blob))
    evict(store, attacker)
    assert store.load(attacker) is None
    assert store.load(victim) is not None


class _Gadget:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_pickle_gadget_in_the_row_never_executes(
    store: SessionStore[Any], engine: Engine, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    sid = new_session_id()
    create(store, sid, {"a": 1}, meta())
    evict(store, sid)
    gadget = pickle.dumps(_Gadget(marker))
    with engine.begin() as conn:
        conn.execute(update(store.table).values(data=gadget))
    assert store.load(sid) is None
    assert not marker.exists()


def test_pickle_gadget_in_the_cache_never_executes(
    cached_store: SessionStore[Any], tmp_path: Path
) -> None:
    store = cached_store
    assert store.cache is not None
    marker = tmp_path / "pwned"
    sid = new_session_id()
    create(store, sid, {"a": 1}, meta())
    hashed = hash_session_id(sid)
    store.cache.backend.set(store.cache.key(hashed), pickle.dumps(_Gadget(marker)), 60)
    loaded = store.load(sid)  # rejected from the cache, then served from the database
    assert loaded is not None and loaded.data == {"a": 1}
    assert not marker.exists()


@pytest.mark.memcached
def test_cache_down_gives_the_same_results(
    model: type[Any], engine: Engine, memcached_factory: Callable[[], MemcachedProcess]
) -> None:
    server = memcached_factory()
    store = SessionStore(
        model, engine, region=memcached_region([server.address]), secret_keys=SECRET
    )
    sid = new_session_id()
    record = create(store, sid, {"a": 1}, meta())
    server.stop()
    for _ in range(3):
        loaded = store.load(sid)
        assert loaded is not None and loaded.data == {"a": 1}
    saved = save_over(store, record, {"a": 2}, meta())
    assert saved is not None
    loaded = store.load(sid)
    assert loaded is not None and loaded.data == {"a": 2}
    server.start()  # comes back empty: nothing stale to serve
    loaded = store.load(sid)
    assert loaded is not None and loaded.data == {"a": 2}


def test_purge_deletes_only_expired_rows_in_batches(
    store: SessionStore[Any], engine: Engine
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    expired = [new_session_id() for _ in range(25)]
    live = [new_session_id() for _ in range(7)]
    for sid in expired:
        create(store, sid, {"x": 1}, BlobMeta(expires_at=past, touched_at=past))
    for sid in live:
        create(store, sid, {"x": 1}, meta())
    batches: list[int] = []
    deleted = store.purge_expired(
        batch_size=10, progress=lambda report: batches.append(report.deleted)
    )
    assert deleted == 25
    assert batches == [10, 20, 25]
    with engine.connect() as conn:
        remaining = set(conn.scalars(select(store.table.c.id)))
    assert remaining == {hash_session_id(sid) for sid in live}


def test_revoke_by_a_user_column(store: SessionStore[Any], engine: Engine) -> None:
    alice = [new_session_id() for _ in range(3)]
    bob = new_session_id()
    for sid in alice:
        create(store, sid, {"user_id": 42}, meta())
    create(store, bob, {"user_id": 7}, meta())
    for sid in alice:
        assert store.load(sid) is not None  # warm the cache
    assert store.revoke(store.model.user_id == 42) == 3
    for sid in alice:
        assert store.load(sid) is None
        if store.cache is not None:
            assert cache_kind_of(store, sid) is Kind.ENDED
    bob_session = store.load(bob)
    assert bob_session is not None and bob_session.data == {"user_id": 7}
    with engine.connect() as conn:
        users = conn.scalars(select(store.table.c.user_id)).all()
    assert users == [7]


def test_derived_columns_follow_the_data(store: SessionStore[Any], engine: Engine) -> None:
    sid = new_session_id()
    record = create(store, sid, {"user_id": 5}, meta())
    save_over(store, record, {"user_id": 6}, meta())
    with engine.connect() as conn:
        assert conn.execute(select(store.table.c.user_id)).scalar_one() == 6


def test_hybrids_select_the_right_rows(store: SessionStore[Any], engine: Engine) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    old, new = new_session_id(), new_session_id()
    create(store, old, {"a": 1}, BlobMeta(expires_at=past, touched_at=past))
    create(store, new, {"a": 1}, meta())
    model = store.model
    with engine.connect() as conn:
        expired = conn.scalars(select(model.id).where(model.is_expired)).all()
        active = conn.scalars(select(model.id).where(model.is_active)).all()
    assert expired == [hash_session_id(old)]
    assert active == [hash_session_id(new)]


def test_a_sessionmaker_bound_to_an_engine_is_accepted(model: type[Any], engine: Engine) -> None:
    from sqlalchemy.orm import sessionmaker

    store = SessionStore(model, sessionmaker(bind=engine), secret_keys=SECRET)
    assert store.engine is engine
    record = store.create({"a": 1}, expires_at=meta().expires_at)
    loaded = store.load(record.session_id)
    assert loaded is not None and loaded.data == {"a": 1}


def test_a_sessionmaker_without_an_engine_is_refused(model: type[Any]) -> None:
    from sqlalchemy.orm import sessionmaker

    with pytest.raises(SessionConfigError, match="no Engine bound"):
        SessionStore(model, sessionmaker(), secret_keys=SECRET)
    with pytest.raises(SessionConfigError, match="Engine or a sessionmaker"):
        SessionStore(model, "sqlite://", secret_keys=SECRET)  # type: ignore[arg-type]


@pytest.mark.parametrize("db_kind", SERVER_DB_KINDS)
def test_a_connection_killed_mid_request_is_a_typed_error_then_recovers(
    db_kind: str, model: type[Any], engine: Engine
) -> None:
    """The pooled connection dies under the store (no pre-ping): the next statement on it
    fails as SessionBackendUnavailable, and the following one reconnects."""
    bare = create_engine(engine.url, pool_size=1, max_overflow=0)
    try:
        store = SessionStore(model, bare, secret_keys=SECRET)
        record = store.create({"a": 1}, expires_at=meta().expires_at)
        with bare.connect() as conn:  # the pool's only connection: find its server id
            own = conn.exec_driver_sql(
                "SELECT CONNECTION_ID()" if db_kind == "mysql" else "SELECT pg_backend_pid()"
            ).scalar()
        with engine.connect() as admin:
            kill = "KILL %s" if db_kind == "mysql" else "SELECT pg_terminate_backend(%s)"
            admin.exec_driver_sql(kill % int(own))
        with pytest.raises(SessionBackendUnavailable):
            store.load(record.session_id)
        loaded = store.load(record.session_id)  # the pool replaced the dead connection
        assert loaded is not None and loaded.data == {"a": 1}
    finally:
        bare.dispose()
