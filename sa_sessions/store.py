"""SessionStore: sessions as versioned rows of your model, read through a cache.

The row is the truth; the cache (see :mod:`sa_sessions.cache.guard`) holds
authenticated copies that are served only when they can be trusted:

* a copy older than the version the client's cookie names (``min_version``)
  is never served: a client always sees at least what it was last shown;
* a copy whose stamp is older than ``max_staleness`` is first checked against
  the row (its version, by primary key), so a replayed or resurrected entry is
  served for at most that long after its session changed or ended;
* a session that ended leaves an end marker that a racing refill cannot
  overwrite.

New sessions are INSERTed (never upserted: an id that already has a row raises
:class:`~sa_sessions.SessionIdTaken`); existing ones are UPDATEd with
``WHERE id = ? AND version = ?``.  When another writer got there first, the
fresh row is re-read under a row lock, only this writer's changed keys are
applied to it, and it is UPDATEd in the same transaction (bounded retries where
the database has no row locks); a row deleted meanwhile stays deleted.

Example::

    store = SessionStore(WebSession, engine, region=memcached_region("127.0.0.1:11211"),
                         secret_keys=os.environ["SESSION_KEY"])
    record = store.create({"user_id": 42}, expires_at=utcnow() + timedelta(days=7))
    again = store.load(record.session_id)
    store.save(again.session_id, {**again.data, "cart": []}, expires_at=again.expires_at,
               base=again)
    store.delete(record.session_id)
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from datetime import datetime
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING
from typing import Any
from typing import Generic
from typing import Literal
from typing import NamedTuple
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from ._clock import Clock
from ._clock import to_micros
from ._clock import utcnow
from ._redact import redact_url
from .cache.entry import EndReason
from .cache.guard import Absent
from .cache.guard import CachedCopy
from .cache.guard import CacheStats
from .cache.guard import Ended
from .cache.guard import Lookup
from .cache.guard import SessionCache
from .cache.regions import session_cache_for
from .changes import apply_changes
from .changes import changes_between
from .codec.blob import BlobCodec
from .codec.blob import BlobMeta
from .codec.blob import Layout
from .codec.blob import Packed
from .codec.blob import Serializer
from .exceptions import CodecError
from .exceptions import SessionConfigError
from .exceptions import SessionConflict
from .exceptions import UnstorableValue
from .ids import hash_session_id
from .ids import is_hashed_id
from .ids import is_well_formed_id
from .ids import log_id
from .ids import new_session_id
from .model import SessionModel
from .model import session_table
from .model import utc_now
from .purge import PurgeReport
from .purge import purge_expired_rows
from .rows import SessionRows
from .signing import KeyInput

if TYPE_CHECKING:
    from dogpile.cache import CacheRegion

log = logging.getLogger("sa_sessions.store")
security_log = logging.getLogger("sa_sessions.security")

M = TypeVar("M", bound=SessionModel)

#: Derived-column hooks: column name -> ``fn(data)`` or ``fn(data, environ)``.
ColumnHooks = Mapping[str, Callable[..., Any]]

_RESERVED_COLUMNS = frozenset({"id", "data", "version", "created_at", "updated_at", "expires_at"})
#: Backoff between merges that lost the race anyway (databases without row locks: SQLite):
#: a random pause of up to ``_BACKOFF_BASE * 2**attempt`` seconds, capped.
_BACKOFF_BASE = 0.004
_BACKOFF_CAP = 0.1
#: Added to ``max_staleness`` for end markers, covering clock differences between hosts.
_END_MARKER_MARGIN = 5.0
_NOTHING = Absent()


@dataclass(frozen=True, slots=True)
class StoredSession:
    """One stored session as the store read or wrote it.

    ``data`` maps keys to values (from :meth:`SessionStore.load`), or with
    ``lazy=True`` to values still in their stored form until read (what a request
    does).  ``cache_copy`` is the cached copy it came from, which the next write
    of this session uses to replace exactly that copy.
    """

    session_id: str
    version: int
    data: Mapping[str, Any]
    expires_at: datetime
    touched_at: datetime
    ssl_only: bool = False
    blob_size: int = 0
    cache_only: bool = False
    cache_copy: CachedCopy | None = field(default=None, repr=False, compare=False)
    #: Kept server-side even when small enough for its cookie (``Session.save(True)``).
    pinned: bool = False
    #: The session's own idle timeout (None: the application's).
    idle_timeout: timedelta | None = None

    @property
    def hashed_id(self) -> str:
        """SHA-256 hex of the id: the primary key and the cache key."""
        return hash_session_id(self.session_id)


class _Values(Mapping[str, Any]):
    """A read-only view of session data that decodes a stored value only when read.

    What column hooks see: a hook reading ``data.get("user_id")`` costs one value's
    unpickling, not the whole session's.  A value that cannot be decoded is absent
    (and logged).
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if type(value) is Packed:
            try:
                return value.value(key)
            except CodecError:
                security_log.error("a stored session value cannot be decoded; hooks skip it")
                raise KeyError(key) from None
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One stored session as a listing shows it ("your sessions"): no id, no data.

    ``hashed_id`` is the row's key (the SHA-256 of the id): enough to tell "this
    session" apart or to revoke one, useless as a cookie.  ``last_seen`` is the row's
    ``updated_at``: the last write, or the last idle-timeout touch.  ``columns`` holds
    the model's own columns (derived ones such as ``user_id``, a user agent, a
    network).
    """

    hashed_id: str
    created_at: datetime
    last_seen: datetime
    expires_at: datetime
    columns: Mapping[str, Any]


def _decoded(data: Mapping[str, Any]) -> dict[str, Any]:
    """Every value decoded; one that cannot be is left out (logged)."""
    view = _Values(data)
    decoded: dict[str, Any] = {}
    for key in data:
        try:
            decoded[key] = view[key]
        except KeyError:
            continue
    return decoded


def _takes_environ(name: str, hook: Callable[..., Any]) -> bool:
    """Whether a column hook is ``fn(data, environ)`` (True) or ``fn(data)`` (False)."""
    try:
        parameters = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):
        return False  # a builtin or other callable without a signature: fn(data)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in parameters if p.kind in kinds]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    if len(required) > 2 or not (positional or varargs):
        raise SessionConfigError(
            f"the hook of column {name!r} must take (data) or (data, environ) positionally"
        )
    return varargs or len(positional) >= 2


def _engine_of(bind: Engine | sessionmaker[Any]) -> Engine:
    if isinstance(bind, Engine):
        return bind
    if isinstance(bind, sessionmaker):
        engine = bind.kw.get("bind")
        if isinstance(engine, Engine):
            return engine
        raise SessionConfigError("the sessionmaker passed as bind has no Engine bound to it")
    raise SessionConfigError(f"bind must be an Engine or a sessionmaker, not {type(bind).__name__}")


def _seconds(name: str, value: object, *, minimum: float) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise SessionConfigError(
            f"{name} must be a timedelta or a number of seconds >= {minimum:g}, got {value!r}"
        )
    return float(value)


def _size(name: str, value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SessionConfigError(f"{name} must be a positive number of bytes, got {value!r}")
    return value


class _Write(NamedTuple):
    """What one save writes besides the data."""

    meta: BlobMeta
    default_idle: timedelta | None
    environ: Mapping[str, Any] | None

    def row_expiry(self) -> datetime:
        """What ``expires_at`` says in the row: the absolute expiry, or sooner when the
        session goes idle first, so SQL (the hybrids, cleanup) sees the effective end."""
        idle = self.meta.idle_timeout or self.default_idle
        if idle is None:
            return self.meta.expires_at
        return min(self.meta.expires_at, self.meta.touched_at + idle)


class _Lost(Exception):
    """Internal: a locked merge lost the race anyway (no row locks); retry it."""


class SessionStore(Generic[M]):
    """Load, save and delete sessions stored as rows of ``model``; see the module docstring.

    ``region`` is a dogpile region from :func:`~sa_sessions.memcached_region`,
    :func:`~sa_sessions.redis_region`, :func:`~sa_sessions.memory_region` or
    configured with one of their backend names; anything that could unpickle
    what it reads is refused.  ``max_staleness`` (a timedelta or seconds, at
    least 1 s, default 30 s) bounds how long a cached copy is served without
    checking the row: after a session ended, a copy that missed the news (a cache
    node that was frozen, a replayed entry) serves nothing after that long.
    ``merge_retries`` bounds the merges of one save where a concurrent writer
    won (they queue on a row lock on MySQL/MariaDB and PostgreSQL).
    ``blob_layout`` is ``"indexed"`` (the default: opening a session decodes only its
    key index, and a save re-encodes only the values that changed) or ``"keyed"``,
    the layout 0.1.0 reads: use it while 0.1.0 processes still serve requests during
    an upgrade, then drop it (both layouts are always read).
    """

    #: Default cap on an encoded session (well under MEDIUMBLOB and max_allowed_packet).
    default_max_session_bytes = 4 * 1024 * 1024
    #: Default cap on a cached copy: 1000 KiB fits memcached's default 1 MiB item
    #: with room for the key and the item header.
    default_max_cache_bytes = 1000 * 1024

    def __init__(
        self,
        model: type[M],
        bind: Engine | sessionmaker[Any],
        *,
        region: CacheRegion | None = None,
        secret_keys: KeyInput,
        codec: Serializer = "pickle",
        blob_layout: Layout = "indexed",
        max_session_bytes: int | None = None,
        max_cache_bytes: int | None = None,
        cache_prefix: str = "sas:",
        columns: ColumnHooks | None = None,
        pickle_classes: Iterable[type] = (),
        max_staleness: timedelta | float = timedelta(seconds=30),
        merge_retries: int = 10,
        clock: Clock = utcnow,
    ) -> None:
        table = session_table(model)
        self.model = model
        self.table = table
        self.engine = _engine_of(bind)
        self.clock = clock
        self.codec = BlobCodec(
            secret_keys,
            serializer=codec,
            max_bytes=_size("max_session_bytes", max_session_bytes, self.default_max_session_bytes),
            allowed_classes=pickle_classes,
            layout=blob_layout,
        )
        self.columns: dict[str, Callable[..., Any]] = dict(columns or {})
        unknown = sorted(set(self.columns) - set(table.c.keys()))
        reserved = sorted(set(self.columns) & _RESERVED_COLUMNS)
        if unknown or reserved:
            raise SessionConfigError(
                f"derived columns must be user columns of {table.name}: {unknown or reserved}"
            )
        if isinstance(merge_retries, bool) or not isinstance(merge_retries, int):
            raise SessionConfigError("merge_retries must be an int >= 0")
        if merge_retries < 0:
            raise SessionConfigError("merge_retries must be an int >= 0")
        self.merge_retries = merge_retries
        self.max_staleness = timedelta(seconds=_seconds("max_staleness", max_staleness, minimum=1))
        self._staleness_us = int(self.max_staleness.total_seconds() * 1_000_000)
        self.cache: SessionCache | None = None
        if region is not None:
            self.cache = SessionCache(
                session_cache_for(region),
                keys=secret_keys,
                prefix=cache_prefix,
                max_value_bytes=_size(
                    "max_cache_bytes", max_cache_bytes, self.default_max_cache_bytes
                ),
                end_marker_ttl=self.max_staleness.total_seconds() + _END_MARKER_MARGIN,
            )
        self.rows = SessionRows(self.engine, table, self.columns)
        #: Columns filled from the request (``fn(data, environ)``): metadata such as the
        #: user agent, which unlike data-derived columns does not make a session revocable.
        self.request_columns = frozenset(
            name for name, hook in self.columns.items() if _takes_environ(name, hook)
        )

    def __repr__(self) -> str:
        return f"SessionStore({self.model.__name__}, {redact_url(self.engine.url)})"

    def _now_us(self) -> int:
        return to_micros(self.clock())

    @staticmethod
    def _ttl(expires_at: datetime, now: datetime) -> float:
        return max(1.0, (expires_at - now).total_seconds())

    # ------------------------------------------------------------------ reading

    def load(
        self,
        session_id: str,
        *,
        min_version: int = 0,
        lazy: bool = False,
        cache_only: bool = False,
    ) -> StoredSession | None:
        """The live session with this id, or None (malformed id, missing, ended, expired,
        tampered).

        ``min_version`` is the version the client was last shown (its cookie says):
        no older copy is served.  With ``lazy`` the values stay in their stored form
        until read (:class:`~sa_sessions.codec.blob.Packed`); with ``cache_only``
        (sessions that live in the cache alone) the database is never asked.  An
        expired session found here is deleted, row and cache entry.
        """
        found = self.find(session_id, min_version=min_version, lazy=lazy, cache_only=cache_only)
        return found if isinstance(found, StoredSession) else None

    def find(
        self,
        session_id: str,
        *,
        min_version: int = 0,
        lazy: bool = False,
        cache_only: bool = False,
    ) -> StoredSession | EndReason | None:
        """Like :meth:`load`, but a session known to have ended gives the reason it
        ended: a request holding a regenerated session's old cookie must not expire the
        cookie the regenerating response sent, and an expiry found here is reported as
        ``EndReason.EXPIRED``."""
        if not is_well_formed_id(session_id):
            return None
        hashed = hash_session_id(session_id)
        now = self.clock()
        cache = self.cache
        seen: Lookup = _NOTHING
        if cache is not None:
            seen = cache.read(hashed)
            if type(seen) is Ended:
                return seen.reason
            if type(seen) is CachedCopy and seen.version >= min_version:
                if cache_only or to_micros(now) - seen.stamp_us <= self._staleness_us:
                    if seen.blob is not None:
                        record = self._open(
                            session_id, hashed, seen.version, seen.blob, "cache", lazy, seen
                        )
                        if record is not None:
                            if cache_only:
                                record = replace(record, cache_only=True)
                            return self._unless_expired(record, now)
                else:
                    checked = self._revalidate(session_id, hashed, seen, lazy)
                    if checked is not None:
                        return checked
        if cache_only:
            return None
        return self._load_row(session_id, hashed, seen, min_version, lazy)

    def _revalidate(
        self, session_id: str, hashed: str, seen: CachedCopy, lazy: bool
    ) -> StoredSession | EndReason | None:
        """A copy past ``max_staleness``: check its version by primary key.

        Returns the copy's session (restamped), why it ended when the row is gone or
        expired, or None when the row must be read.
        """
        cache = self.cache
        assert cache is not None
        now = self.clock()
        version = self.rows.version(hashed)
        if version is None:
            cache.end(hashed, EndReason.ENDED, to_micros(now))
            return EndReason.ENDED
        if version != seen.version or seen.blob is None:
            return None
        record = self._open(session_id, hashed, seen.version, seen.blob, "cache", lazy, seen)
        if record is None:
            return None
        live = self._unless_expired(record, now)
        if not isinstance(live, StoredSession):
            return live
        cache.restamp(hashed, seen, to_micros(now), self._ttl(record.expires_at, now))
        return replace(live, cache_copy=None)  # the restamp changed the cached value

    def _load_row(
        self, session_id: str, hashed: str, seen: Lookup, min_version: int, lazy: bool
    ) -> StoredSession | EndReason | None:
        now = self.clock()  # before the read: the copy was current at some time after it
        row = self.rows.read(hashed)
        cache = self.cache
        if row is None:
            if cache is not None and type(seen) is CachedCopy:
                cache.end(hashed, EndReason.ENDED, to_micros(now))  # a copy of a gone row
            return None
        blob, version = row
        record = self._open(session_id, hashed, version, blob, "database", lazy)
        if record is None:
            return None
        if version < min_version:
            log.warning(
                "session %s: the row (version %d) is older than the client's cookie (%d); "
                "was the database restored?",
                log_id(hashed),
                version,
                min_version,
            )
        live = self._unless_expired(record, now)
        # Replace what the read found: nothing, garbage, an older copy, or an unusable
        # copy of this version.  A copy newer than this row means a writer published
        # after this read, and a row-only marker of this version is already right.
        if (
            isinstance(live, StoredSession)
            and cache is not None
            and (
                type(seen) is Absent
                or (
                    type(seen) is CachedCopy
                    and (seen.version < version or (seen.version == version and seen.blob))
                )
            )
        ):
            ttl = self._ttl(live.expires_at, now)
            cache.fill(hashed, version, blob, to_micros(now), ttl, seen)
        return live

    def _open(
        self,
        session_id: str,
        hashed: str,
        version: int,
        blob: bytes | memoryview,
        source: str,
        lazy: bool,
        copy: CachedCopy | None = None,
    ) -> StoredSession | None:
        try:
            opened = self.codec.open_lazy if lazy else self.codec.open
            meta, data = opened(hashed, version, blob)
        except CodecError as exc:
            security_log.warning(
                "rejected a session blob from the %s (session %s): %s", source, log_id(hashed), exc
            )
            return None
        return self._record(session_id, version, data, meta, blob, cache_copy=copy)

    def _unless_expired(
        self, record: StoredSession, now: datetime
    ) -> StoredSession | Literal[EndReason.EXPIRED]:
        """The record, or ``EndReason.EXPIRED`` after deleting it (row and cache entry)."""
        if record.expires_at > now:
            return record
        log.info("session %s expired; deleting it", log_id(record.hashed_id))
        self.delete(
            record.session_id,
            reason=EndReason.EXPIRED,
            version=record.version,
            cache_only=record.cache_only,
        )
        return EndReason.EXPIRED

    # ------------------------------------------------------------------ writing

    def create(
        self,
        data: Mapping[str, Any],
        *,
        expires_at: datetime,
        ssl_only: bool = False,
        pinned: bool = False,
        idle_timeout: timedelta | None = None,
        cache_only: bool = False,
    ) -> StoredSession:
        """Store a new session under a fresh id (in ``record.session_id``)."""
        saved = self.save(
            new_session_id(),
            data,
            expires_at=expires_at,
            ssl_only=ssl_only,
            pinned=pinned,
            idle_timeout=idle_timeout,
            cache_only=cache_only,
        )
        assert saved is not None  # a new session cannot have been deleted meanwhile
        return saved

    def save(
        self,
        session_id: str,
        data: Mapping[str, Any],
        *,
        expires_at: datetime,
        base: StoredSession | None = None,
        changes: Mapping[str, Any] | None = None,
        touched_at: datetime | None = None,
        ssl_only: bool = False,
        pinned: bool = False,
        idle_timeout: timedelta | None = None,
        default_idle_timeout: timedelta | None = None,
        environ: Mapping[str, Any] | None = None,
        cache_only: bool = False,
        lazy: bool = False,
    ) -> StoredSession | None:
        """Store ``data`` as the session ``session_id``; the saved session, or None when
        it was deleted meanwhile (a logout is never undone).

        Without ``base`` the session is new: INSERTed, and
        :class:`~sa_sessions.SessionIdTaken` if that id already has a row (it is never
        merged).  With ``base`` (what :meth:`load` returned) it is a versioned UPDATE;
        if another writer saved since, ``changes`` (key -> new value,
        :data:`~sa_sessions.changes.DELETED` or an
        :class:`~sa_sessions.changes.Increment`; by default the difference between
        ``base.data`` and ``data``) are applied to the fresh row instead, at most
        ``merge_retries`` times before :class:`~sa_sessions.SessionConflict`.  The
        merged data comes back decoded, or with ``lazy`` as stored values (as
        :meth:`load` with ``lazy``).

        ``pinned`` keeps a small session server-side (so it stays revocable) and
        ``idle_timeout`` gives it an idle timeout of its own; both are sealed into the
        blob with the expiry.  The row's ``expires_at`` is the effective end: the
        expiry, or sooner when the session goes idle first (its own idle timeout, else
        ``default_idle_timeout``, the application's).  ``environ`` is the request,
        handed to column hooks that take it (``fn(data, environ)``).

        :raises UnstorableValue: a value the codec cannot store.
        :raises SessionTooLarge: over ``max_session_bytes``.
        :raises SessionIntegrityError: the database refused the row (e.g. a foreign key
            of a derived column); nothing was written.
        """
        if not is_well_formed_id(session_id):
            raise ValueError("session_id is not a session id issued by this library")
        now = self.clock()
        meta = BlobMeta(expires_at, touched_at or now, ssl_only, pinned, idle_timeout)
        write = _Write(meta, default_idle_timeout, environ)
        hashed = hash_session_id(session_id)
        if cache_only:
            return self._save_cached(session_id, hashed, data, meta, base, changes, now)
        if base is None:
            return self._insert(session_id, hashed, data, write, now)
        version = base.version + 1
        blob = self._seal(hashed, version, meta, data)
        params = self._params(hashed, version, blob, write, data, now)
        params["b_old_version"] = base.version
        if self.rows.update_row(params):
            token = base.cache_copy.token if base.cache_copy is not None else None
            self._publish(hashed, version, blob, meta, now, token)
            return self._record(session_id, version, data, meta, blob)
        if changes is None:
            changes = changes_between(base.data, data)
        log.info("version conflict on session %s; merging %d keys", log_id(hashed), len(changes))
        merged = self._merge(session_id, hashed, changes, write)
        if merged is None or lazy:
            return merged
        return replace(merged, data=_decoded(merged.data))

    def _insert(
        self, session_id: str, hashed: str, data: Mapping[str, Any], write: _Write, now: datetime
    ) -> StoredSession:
        meta = write.meta
        blob = self._seal(hashed, 1, meta, data)
        self.rows.insert_row(self._params(hashed, 1, blob, write, data, now))
        self._publish(hashed, 1, blob, meta, now, None)
        return self._record(session_id, 1, data, meta, blob)

    def _merge(
        self, session_id: str, hashed: str, changes: Mapping[str, Any], write: _Write
    ) -> StoredSession | None:
        meta = write.meta
        for attempt in range(self.merge_retries):
            now = self.clock()
            try:
                with self.rows.locked() as locked:
                    row = locked.read(hashed)
                    if row is None:
                        log.info("session %s was deleted meanwhile; not saved", log_id(hashed))
                        return None
                    fresh = self._open(session_id, hashed, row[1], row[0], "database", lazy=True)
                    if fresh is None or fresh.expires_at <= now:
                        return None
                    data = apply_changes(fresh.data, changes)
                    version = fresh.version + 1
                    blob = self._seal(hashed, version, meta, data)
                    params = self._params(hashed, version, blob, write, data, now)
                    params["b_old_version"] = fresh.version
                    if not locked.update(params):
                        raise _Lost
            except _Lost:
                time.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))
                continue
            self._publish(hashed, version, blob, meta, now, None)
            return self._record(session_id, version, data, meta, blob)
        raise SessionConflict(
            f"session {log_id(hashed)} kept changing concurrently; gave up after "
            f"{self.merge_retries} merges"
        )

    def _save_cached(
        self,
        session_id: str,
        hashed: str,
        data: Mapping[str, Any],
        meta: BlobMeta,
        base: StoredSession | None,
        changes: Mapping[str, Any] | None,
        now: datetime,
    ) -> StoredSession | None:
        """A session that lives in the cache alone: versions advance by compare-and-swap."""
        cache = self.cache
        if cache is None:
            raise SessionConfigError("cache-only sessions need a cache region")
        ttl = self._ttl(meta.expires_at, now)
        if base is None:
            blob = self._seal(hashed, 1, meta, data)
            if not cache.create(hashed, 1, blob, to_micros(now), ttl):
                log.warning("session %s could not be cached; it is lost", log_id(hashed))
            return self._record(session_id, 1, data, meta, blob, cache_only=True)
        current: StoredSession | None = base
        for _ in range(max(1, self.merge_retries)):
            if current is None or current.cache_copy is None:
                return None
            version = current.version + 1
            blob = self._seal(hashed, version, meta, data)
            if cache.replace_with(hashed, current.cache_copy, version, blob, to_micros(now), ttl):
                return self._record(session_id, version, data, meta, blob, cache_only=True)
            if changes is None:
                changes = changes_between(base.data, data)
            current = self.load(session_id, lazy=True, cache_only=True)
            if current is not None:
                data = apply_changes(current.data, changes)
        raise SessionConflict(f"session {log_id(hashed)} kept changing concurrently")

    def save_quick(self, base: StoredSession, data: Mapping[str, Any]) -> StoredSession | None:
        """Write ``data`` to the cached copy only (fast; lost if the cache drops it).

        Only the very copy ``base`` was read from is replaced; None when it changed,
        vanished or was never cached (then save the row with :meth:`save`, whose
        versioned UPDATE notices a session deleted meanwhile).
        """
        cache, copy = self.cache, base.cache_copy
        if cache is None or copy is None or copy.blob is None:
            return None
        now = self.clock()
        hashed = base.hashed_id
        meta = BlobMeta(base.expires_at, now, base.ssl_only, base.pinned, base.idle_timeout)
        blob = self._seal(hashed, base.version, meta, data)
        if not cache.replace(hashed, copy, blob, self._ttl(base.expires_at, now)):
            return None
        return replace(base, data=data, touched_at=now, blob_size=len(blob), cache_copy=None)

    def delete(
        self,
        session_id: str,
        *,
        reason: EndReason = EndReason.ENDED,
        version: int | None = None,
        cache_only: bool = False,
    ) -> bool:
        """Delete the row, then mark the session ended in the cache.

        With ``version`` only that version is deleted (False if the row changed or
        is gone).  ``reason`` tells requests still holding the old cookie whether a
        replacement cookie is on its way (``EndReason.REPLACED``).  True when a row
        was deleted (always True for ``cache_only``).
        """
        if not is_well_formed_id(session_id):
            return False
        hashed = hash_session_id(session_id)
        deleted = True if cache_only else self.rows.delete_row(hashed, version)
        if self.cache is not None and (deleted or version is None):
            self.cache.end(hashed, reason, self._now_us())
        return bool(deleted)

    # ------------------------------------------------------------------ helpers

    def _seal(self, hashed: str, version: int, meta: BlobMeta, data: Mapping[str, Any]) -> bytes:
        try:
            return self.codec.seal(hashed, version, meta, data)
        except UnstorableValue:
            raise
        except TypeError as exc:
            raise UnstorableValue(str(exc)) from exc

    def _params(
        self,
        hashed: str,
        version: int,
        blob: bytes,
        write: _Write,
        data: Mapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "h": hashed,
            "b_data": blob,
            "b_version": version,
            "b_now": now,
            "b_expires": write.row_expiry(),
        }
        if self.columns:
            for name, value in self.derived_values(data, write.environ).items():
                params[f"x_{name}"] = value
        return params

    def derived_values(
        self, data: Mapping[str, Any], environ: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The values of the derived columns (``columns=``) for ``data`` and the request.

        Hooks see the data through a view that decodes only the values they read.
        """
        if not self.columns:
            return {}
        view = _Values(data)
        request = environ if environ is not None else {}
        return {
            name: hook(view, request) if name in self.request_columns else hook(view)
            for name, hook in self.columns.items()
        }

    def has_derived_values(self, data: Mapping[str, Any]) -> bool:
        """True when a column derived from the data has a value (a logged-in user, say):
        such a session must stay server-side, where it can be revoked."""
        view = _Values(data)
        return any(
            hook(view) is not None
            for name, hook in self.columns.items()
            if name not in self.request_columns
        )

    def _publish(
        self,
        hashed: str,
        version: int,
        blob: bytes,
        meta: BlobMeta,
        stamped_at: datetime,
        token: object | None,
    ) -> None:
        """Cache a committed version; ``stamped_at`` was read before the write began."""
        if self.cache is not None:
            ttl = self._ttl(meta.expires_at, stamped_at)
            self.cache.publish(hashed, version, blob, to_micros(stamped_at), ttl, token)

    def _record(
        self,
        session_id: str,
        version: int,
        data: Mapping[str, Any],
        meta: BlobMeta,
        blob: bytes | memoryview,
        *,
        cache_only: bool = False,
        cache_copy: CachedCopy | None = None,
    ) -> StoredSession:
        return StoredSession(
            session_id,
            version,
            data,
            meta.expires_at,
            meta.touched_at,
            meta.ssl_only,
            len(blob),
            cache_only,
            cache_copy,
            meta.pinned,
            meta.idle_timeout,
        )

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
        """End every session matching SQL criteria on the model: rows, then cache entries.

        Example: ``store.revoke(WebSession.user_id == 42)`` logs a user out everywhere.
        Returns the number of sessions ended.
        """
        if not criteria:
            raise ValueError("revoke() needs at least one criterion; use purge for expiry")
        deleted = 0
        while True:
            ids = self.rows.delete_matching(criteria, batch_size)
            deleted += len(ids)
            if ids and self.cache is not None:
                valid = [hashed for hashed in ids if is_hashed_id(hashed)]
                if len(valid) != len(ids):
                    security_log.warning(
                        "revoke: %d rows had a malformed id", len(ids) - len(valid)
                    )
                self.cache.end_many(valid, EndReason.REVOKED, self._now_us())
            if len(ids) < batch_size:
                return deleted

    def sessions(
        self, *criteria: ColumnElement[bool], limit: int | None = None
    ) -> list[SessionInfo]:
        """The live sessions matching SQL criteria on the model, most recently seen first.

        Example: ``store.sessions(WebSession.user_id == 42)`` lists a user's devices.
        Only metadata is read (never the blob), and no raw id is ever returned.
        """
        c = self.table.c
        fixed = {"id", "data", "version", "created_at", "updated_at", "expires_at"}
        own = [column for column in self.table.columns if column.name not in fixed]
        active: ColumnElement[bool] = c.expires_at > utc_now()
        rows = self.rows.select_matching(
            [*criteria, active],
            [c.id, c.created_at, c.updated_at, c.expires_at, *own],
            order_by=c.updated_at.desc(),
            limit=limit,
        )
        return [
            SessionInfo(
                row["id"],
                row["created_at"],
                row["updated_at"],
                row["expires_at"],
                MappingProxyType({column.name: row[column.name] for column in own}),
            )
            for row in rows
        ]

    @property
    def cache_stats(self) -> CacheStats | None:
        """Exact counts of cache round trips (None without a cache)."""
        return self.cache.stats if self.cache is not None else None
