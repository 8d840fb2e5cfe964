"""SessionStore: sessions as versioned rows, read through a cache.

The database row is the truth; the cache is a read-through, write-through copy
that is never authoritative.  New sessions are INSERTed, existing ones are
UPDATEd with ``WHERE id = ? AND version = ?`` and never upserted, so a slow
request can never bring back a session that another request deleted.

Example::

    store = SessionStore(WebSession, engine, region=memcached_region("127.0.0.1:11211"),
                         secret_keys=os.environ["SESSION_KEY"])
    record = store.create(new_session_id(), {"user_id": 42}, BlobMeta(expires, now))
    again = store.load(record.session_id)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any
from typing import Generic
from typing import Literal
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import Table
from sqlalchemy import bindparam
from sqlalchemy import delete
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from ._cache_guard import CacheStats
from ._cache_guard import GuardedCache
from ._clock import Clock
from ._clock import utcnow
from .cache import CircuitBreaker
from .codec.blob import BlobCodec
from .codec.blob import BlobMeta
from .codec.blob import Packed
from .codec.blob import Serializer
from .exceptions import CodecError
from .exceptions import SessionBackendUnavailable
from .exceptions import SessionConfigError
from .ids import hash_session_id
from .ids import is_well_formed_id
from .ids import log_id
from .model import SessionModel
from .purge import PurgeReport
from .purge import purge_expired_rows
from .signing import KeyInput

if TYPE_CHECKING:
    from dogpile.cache import CacheRegion

log = logging.getLogger("sa_sessions.store")
security_log = logging.getLogger("sa_sessions.security")

M = TypeVar("M", bound=SessionModel)

#: Derived-column hooks: column name -> function of the session data.
ColumnHooks = Mapping[str, Callable[[Mapping[str, Any]], Any]]

#: Version of a session that so far lives only in the cache (quick writes, no_datastore).
CACHE_ONLY_VERSION = 0

#: :meth:`SessionStore.update_locked` result: the row changed between the read and the
#: UPDATE (only possible where SELECT ... FOR UPDATE takes no row lock, i.e. SQLite).
CHANGED: Literal["changed"] = "changed"


@dataclass(frozen=True, slots=True)
class StoredSession:
    """One loaded or saved session: what the store knows about it."""

    session_id: str
    hashed_id: str
    version: int
    meta: BlobMeta
    data: dict[str, Any]
    blob_size: int = 0

    @property
    def in_database(self) -> bool:
        return self.version != CACHE_ONLY_VERSION

    @property
    def expires_at(self) -> datetime:
        return self.meta.expires_at


class _LockedWrite:
    """One write transaction of :meth:`SessionStore._locked_write`."""

    __slots__ = ("_cache", "_hashed", "cached", "conn")

    def __init__(self, conn: Connection, cache: GuardedCache | None, hashed: str) -> None:
        self.conn = conn
        self.cached = False
        self._cache = cache
        self._hashed = hashed

    def cache(self, version: int, blob: bytes) -> None:
        """Write the cached copy now, before the commit releases the row lock."""
        if self._cache is not None:
            self.cached = True
            self._cache.set(self._hashed, version, blob)


def _decoded(data: Mapping[str, Any]) -> dict[str, Any]:
    """What column hooks see: every value decoded; one that cannot be is left out (logged)."""
    view: dict[str, Any] = {}
    for key, value in data.items():
        if type(value) is Packed:
            try:
                value = value.value()
            except CodecError:
                security_log.error("a stored session value cannot be decoded; hooks skip it")
                continue
        view[key] = value
    return view


def _engine_of(bind: Engine | sessionmaker[Any]) -> Engine:
    if isinstance(bind, Engine):
        return bind
    if isinstance(bind, sessionmaker):
        engine = bind.kw.get("bind")
        if isinstance(engine, Engine):
            return engine
        raise SessionConfigError("the sessionmaker passed as bind has no Engine bound to it")
    raise SessionConfigError(f"bind must be an Engine or a sessionmaker, not {type(bind).__name__}")


class SessionStore(Generic[M]):
    """Load, create, update and delete sessions stored as rows of ``model``."""

    #: Default cap on an encoded session (well under MEDIUMBLOB and max_allowed_packet).
    default_max_session_bytes = 4 * 1024 * 1024
    #: Default cap on a cached copy (below memcached's 1 MiB item limit).
    default_max_cache_bytes = 512 * 1024

    def __init__(
        self,
        model: type[M],
        bind: Engine | sessionmaker[Any],
        *,
        region: CacheRegion | None = None,
        secret_keys: KeyInput,
        codec: Serializer = "pickle",
        max_session_bytes: int | None = None,
        max_cache_bytes: int | None = None,
        cache_prefix: str = "sas:",
        columns: ColumnHooks | None = None,
        pickle_classes: Iterable[type] = (),
        circuit_breaker: CircuitBreaker | None = None,
        clock: Clock = utcnow,
    ) -> None:
        if not (isinstance(model, type) and issubclass(model, SessionModel)):
            raise SessionConfigError("model must be a mapped subclass of SessionModel")
        table = getattr(model, "__table__", None)
        if not isinstance(table, Table):
            raise SessionConfigError(f"{model.__name__} is not mapped to a table")
        self.model = model
        self.table = table
        self.engine = _engine_of(bind)
        self.clock = clock
        self.codec = BlobCodec(
            secret_keys,
            serializer=codec,
            max_bytes=max_session_bytes or self.default_max_session_bytes,
            allowed_classes=pickle_classes,
        )
        self.columns: dict[str, Callable[[Mapping[str, Any]], Any]] = dict(columns or {})
        unknown = sorted(set(self.columns) - set(table.c.keys()))
        reserved = sorted(
            set(self.columns) & {"id", "data", "version", "created_at", "updated_at", "expires_at"}
        )
        if unknown or reserved:
            raise SessionConfigError(
                f"derived columns must be user columns of {table.name}: {unknown or reserved}"
            )
        self.cache: GuardedCache | None = None
        if region is not None:
            self.cache = GuardedCache(
                region,
                prefix=cache_prefix,
                max_value_bytes=max_cache_bytes or self.default_max_cache_bytes,
                breaker=circuit_breaker,
            )
        # A COMMIT leaves the pool a ROLLBACK to send on return, so reads end in that
        # ROLLBACK instead: one round trip less.  Not on PostgreSQL, whose drivers skip
        # the pool's ROLLBACK outside a transaction (nothing to save) and where psycopg
        # drops its prepared statements on every ROLLBACK.
        self._reads_commit = self.engine.dialect.name == "postgresql"
        self._build_statements()

    def __repr__(self) -> str:
        return f"SessionStore({self.model.__name__}, {self.engine.url.render_as_string()})"

    # ------------------------------------------------------------------ statements

    def _build_statements(self) -> None:
        c = self.table.c
        self._select = select(c.data, c.version).where(c.id == bindparam("h"))
        self._select_for_update = self._select.with_for_update()
        extra: dict[str, Any] = {name: bindparam(f"x_{name}") for name in self.columns}
        self._insert = insert(self.table).values(
            id=bindparam("h"),
            data=bindparam("b_data"),
            version=bindparam("b_version"),
            created_at=bindparam("b_now"),
            updated_at=bindparam("b_now"),
            expires_at=bindparam("b_expires"),
            **extra,
        )
        self._update = (
            update(self.table)
            .where(c.id == bindparam("h"), c.version == bindparam("b_old_version"))
            .values(
                data=bindparam("b_data"),
                version=bindparam("b_version"),
                updated_at=bindparam("b_now"),
                expires_at=bindparam("b_expires"),
                **extra,
            )
        )
        self._delete = delete(self.table).where(c.id == bindparam("h"))

    @contextmanager
    def _connection(self, *, commit: bool = True) -> Iterator[Connection]:
        """One short transaction; connection-level failures become a typed error.

        With ``commit=False`` closing the connection ends the transaction with the
        ROLLBACK that returning it to the pool costs anyway (see ``_reads_commit``).
        """
        try:
            with self.engine.begin() if commit else self.engine.connect() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise SessionBackendUnavailable(
                f"session database unavailable ({type(exc.orig).__name__})", exc
            ) from exc
        except sa_exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise SessionBackendUnavailable("session database connection lost", exc) from exc
            raise

    @contextmanager
    def _locked_write(self, hashed: str) -> Iterator[_LockedWrite]:
        """A write transaction whose cached copy is written while the row lock is held.

        Writers to one row commit in the order of its lock; writing the cached copy
        before the commit (:meth:`_LockedWrite.cache`) makes the cache follow the
        same order.  Written after the commit, a writer delayed between its commit
        and its cache write would overwrite a newer copy with its older one, served
        until the next write.  If the transaction fails after the cache was
        written, the cached copy is deleted again.
        """
        write: _LockedWrite | None = None
        try:
            with self._connection() as conn:
                write = _LockedWrite(conn, self.cache, hashed)
                yield write
        except BaseException:
            if write is not None and write.cached and self.cache is not None:
                self.cache.delete(hashed)
            raise

    # ------------------------------------------------------------------ reading

    def load(
        self, session_id: str, *, cache_only: bool = False, lazy: bool = False
    ) -> StoredSession | None:
        """The live session with this id: cache first, then the database.

        Malformed ids, missing, expired or tampered sessions are all None; an
        id that is not shaped like one of ours never reaches a backend.  With
        ``cache_only`` (``no_datastore`` sessions) a cache miss is final.  With
        ``lazy`` the values stay :class:`~sa_sessions.codec.blob.Packed` until used
        (what a request does: it unpickles only the keys it reads).
        """
        if not is_well_formed_id(session_id):
            return None
        hashed = hash_session_id(session_id)
        if self.cache is not None:
            cached = self.cache.get(hashed)
            if cached is not None:
                record = self._open(session_id, hashed, *cached, source="cache", lazy=lazy)
                if record is not None:
                    return self._live(record)
                self.cache.delete(hashed)
        if cache_only:
            return None
        return self._load_from_database(session_id, hashed, lazy)

    def load_fresh(self, session_id: str, *, lazy: bool = False) -> StoredSession | None:
        """Like :meth:`load` but straight from the database (after a version conflict)."""
        if not is_well_formed_id(session_id):
            return None
        return self._load_from_database(session_id, hash_session_id(session_id), lazy)

    def _load_from_database(self, session_id: str, hashed: str, lazy: bool) -> StoredSession | None:
        with self._connection(commit=self._reads_commit) as conn:
            row = conn.execute(self._select, {"h": hashed}).first()
        if row is None:
            return None
        blob, version = bytes(row[0]), int(row[1])
        record = self._open(session_id, hashed, version, blob, source="database", lazy=lazy)
        if record is None:
            return None
        record = self._live(record)
        if record is not None and self.cache is not None:
            # add, not set: a writer that committed after our read has cached a newer
            # version already, which a plain set would overwrite with this old one.
            self.cache.add(hashed, version, blob)
        return record

    def _open(
        self,
        session_id: str,
        hashed: str,
        version: int,
        blob: bytes,
        *,
        source: str,
        lazy: bool = False,
    ) -> StoredSession | None:
        try:
            opened = self.codec.open_lazy if lazy else self.codec.open
            meta, data = opened(hashed, version, blob)
        except CodecError as exc:
            security_log.warning(
                "rejected a session blob from the %s (session %s): %s",
                source,
                log_id(hashed),
                exc,
            )
            return None
        return StoredSession(session_id, hashed, version, meta, data, len(blob))

    def _live(self, record: StoredSession | None) -> StoredSession | None:
        if record is None or record.meta.expires_at <= self.clock():
            return None
        return record

    # ------------------------------------------------------------------ writing

    def create(self, session_id: str, data: Mapping[str, Any], meta: BlobMeta) -> StoredSession:
        """INSERT a new session (version 1), then cache it."""
        hashed = hash_session_id(session_id)
        blob = self.codec.seal(hashed, 1, meta, data)
        with self._connection() as conn:
            conn.execute(self._insert, self._params(hashed, 1, blob, meta, data))
        return self._cached(StoredSession(session_id, hashed, 1, meta, dict(data), len(blob)), blob)

    def update(
        self, current: StoredSession, data: Mapping[str, Any], meta: BlobMeta
    ) -> StoredSession | None:
        """Versioned UPDATE; None when another writer got there first or the row is gone.

        A session that so far lived only in the cache is INSERTed instead; a
        duplicate key then also means "someone else won" (None).
        """
        if not current.in_database:
            try:
                return self.create(current.session_id, data, meta)
            except sa_exc.IntegrityError:
                return None
        version = current.version + 1
        blob = self.codec.seal(current.hashed_id, version, meta, data)
        params = self._params(current.hashed_id, version, blob, meta, data)
        params["b_old_version"] = current.version
        with self._locked_write(current.hashed_id) as write:
            if write.conn.execute(self._update, params).rowcount != 1:
                log.info("version conflict on session %s", log_id(current.hashed_id))
                return None
            write.cache(version, blob)
        return replace(current, version=version, meta=meta, data=dict(data), blob_size=len(blob))

    def update_locked(
        self,
        session_id: str,
        merge: Callable[[dict[str, Any]], dict[str, Any]],
        meta: BlobMeta,
        *,
        lazy: bool = False,
    ) -> StoredSession | Literal["changed"] | None:
        """Re-read the row under a row lock, apply ``merge`` to its data, UPDATE it.

        One transaction: ``SELECT ... FOR UPDATE``, then the versioned UPDATE, so
        parallel writers queue on the row lock instead of failing and retrying
        (MySQL/MariaDB, PostgreSQL).  Returns the saved session; None when the
        row is gone, expired or unreadable (the caller drops its changes: no
        resurrection); :data:`CHANGED` when another writer slipped in between,
        which only happens where no row lock exists (SQLite).
        """
        hashed = hash_session_id(session_id)
        with self._locked_write(hashed) as write:
            row = write.conn.execute(self._select_for_update, {"h": hashed}).first()
            if row is None:
                return None
            version = int(row[1])
            current = self._live(
                self._open(session_id, hashed, version, bytes(row[0]), source="database", lazy=lazy)
            )
            if current is None:
                return None
            data = merge(current.data)
            blob = self.codec.seal(hashed, version + 1, meta, data)
            params = self._params(hashed, version + 1, blob, meta, data)
            params["b_old_version"] = version
            if write.conn.execute(self._update, params).rowcount != 1:
                return CHANGED
            write.cache(version + 1, blob)
        return replace(
            current, version=version + 1, meta=meta, data=dict(data), blob_size=len(blob)
        )

    def save_cache_only(
        self,
        session_id: str,
        data: Mapping[str, Any],
        meta: BlobMeta,
        *,
        version: int,
        only_if_cached: bool = False,
    ) -> StoredSession | None:
        """Write only the cached copy (quick writes and ``no_datastore``); may be lost.

        With ``only_if_cached`` the write happens only while the cache still holds
        this very version; None otherwise (evicted, or deleted by a logout or
        revoke), and the caller should save to the database instead, where the
        versioned UPDATE notices a deleted session.  A blind write would put a
        revoked session back into the cache.
        """
        if self.cache is None:
            raise SessionConfigError("cache-only writes need a cache region")
        hashed = hash_session_id(session_id)
        if only_if_cached:
            current = self.cache.get(hashed)
            if current is None or current[0] != version:
                return None
        blob = self.codec.seal(hashed, version, meta, data)
        self.cache.set(hashed, version, blob)
        return StoredSession(session_id, hashed, version, meta, dict(data), len(blob))

    def delete(self, session_id: str) -> None:
        """Delete the row, then the cached copy (never the other way round)."""
        if not is_well_formed_id(session_id):
            return
        hashed = hash_session_id(session_id)
        with self._connection() as conn:
            conn.execute(self._delete, {"h": hashed})
        if self.cache is not None:
            self.cache.delete(hashed)

    def _params(
        self, hashed: str, version: int, blob: bytes, meta: BlobMeta, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "h": hashed,
            "b_data": blob,
            "b_version": version,
            "b_now": self.clock(),
            "b_expires": meta.expires_at,
        }
        if self.columns:
            view = _decoded(data)
            for name, hook in self.columns.items():
                params[f"x_{name}"] = hook(view)
        return params

    def has_derived_values(self, data: Mapping[str, Any]) -> bool:
        """True when a derived-column hook yields a value: such sessions must be revocable."""
        if not self.columns:
            return False
        view = _decoded(data)
        return any(hook(view) is not None for hook in self.columns.values())

    def _cached(self, record: StoredSession, blob: bytes) -> StoredSession:
        if self.cache is not None:
            self.cache.set(record.hashed_id, record.version, blob)
        return record

    # ------------------------------------------------------------------ maintenance

    def purge_expired(
        self,
        batch_size: int = 1000,
        *,
        max_seconds: float | None = None,
        pause: float = 0.0,
        progress: Callable[[PurgeReport], None] | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete expired rows in bounded batches, one short transaction each.

        Returns the number of rows deleted, or with ``dry_run=True`` the number
        that would be (nothing is deleted).  Stops when none are left or after the
        batch that crosses ``max_seconds``; sleeps ``pause`` seconds between
        batches; calls ``progress`` after each batch.  Only one cleaner runs per
        table (MySQL/MariaDB ``GET_LOCK``, PostgreSQL advisory lock): a second
        raises :class:`~sa_sessions.CleanupAlreadyRunning` at once.  Cached
        copies of expired sessions are never served (their sealed expiry is
        checked) and age out with their TTL.  See :mod:`sa_sessions.purge`.
        """
        report = purge_expired_rows(
            self.engine,
            self.table,
            batch_size=batch_size,
            max_seconds=max_seconds,
            pause=pause,
            progress=progress,
            dry_run=dry_run,
        )
        return (report.expired_at_start or 0) if dry_run else report.deleted

    def revoke(self, *criteria: ColumnElement[bool], batch_size: int = 1000) -> int:
        """Delete every session matching SQL criteria on the model, rows then cache.

        Example: ``store.revoke(WebSession.user_id == 42)`` logs a user out everywhere.
        """
        if not criteria:
            raise ValueError("revoke() needs at least one criterion; use purge for expiry")
        c = self.table.c
        deleted = 0
        while True:
            with self._connection() as conn:
                ids = list(conn.scalars(select(c.id).where(*criteria).limit(batch_size)))
                if ids:
                    deleted += conn.execute(delete(self.table).where(c.id.in_(ids))).rowcount
            if ids and self.cache is not None:
                self.cache.delete_many(ids)
            if len(ids) < batch_size:
                return deleted

    @property
    def cache_stats(self) -> CacheStats | None:
        return self.cache.stats if self.cache is not None else None
