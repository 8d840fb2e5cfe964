"""Batched deletion of expired session rows, one short transaction per batch.

Tables of sessions reach tens of millions of rows; one unbounded DELETE holds
locks for minutes.  Here each batch deletes at most ``batch_size`` rows and
commits, so concurrent saves wait milliseconds.  No statement names the ``data``
column: the blobs are never read.  A database lock (``GET_LOCK`` /
``pg_try_advisory_lock``) keeps a second cleaner out.

PostgreSQL and SQLite delete through the ``expires_at`` index, by primary key from
a limited subquery (:func:`batch_statement`).

MySQL/MariaDB (InnoDB) first read a batch of ids without locking anything, then
``DELETE ... WHERE id IN (...) AND expires_at <= UTC_TIMESTAMP(6)`` by primary key
(the expiry checked again, so a session renewed meanwhile stays), which locks only
the rows it deletes: no next-key locks on the ``expires_at`` range, and a statement
that replicates safely in statement-based binary logs.  Where the ids come from
depends on how many rows are expired.  InnoDB stores rows in primary-key order and
session ids are random, so rows taken in ``expires_at`` order each sit on a different
page: once the table outgrows the buffer pool, every row deleted costs a random page
read (and the purge thread may read it again).  So when the first batch is full (a
backlog, perhaps), the cleaner reads a window of the primary key: if at least
:data:`PK_WALK_MIN_DENSITY` of its rows are expired, it walks the whole table in key
order, window after window (non-locking reads of ``id`` and an expiry flag, never the
blob), and deletes the expired ids of each window in key order, so each page of the
table is read about once.  Otherwise (the steady state of a regular cron job) it
stays on the ``expires_at`` index, oldest first, each batch starting at the expiry
where the previous one stopped (no rescan of rows just deleted).  Either way it ends
with batches through the index, which also catch the rows that expired during the
run, until one finds fewer than ``batch_size`` rows.

The cache is not touched: a cached copy of an expired session is never served (its
sealed expiry is checked on every load) and ages out with its TTL.

Example (what ``sa-sessions cleanup`` and :meth:`SessionStore.purge_expired` run)::

    report = purge_expired_rows(engine, WebSession.__table__, batch_size=1000,
                                max_seconds=300, progress=PurgeProgress(sys.stderr))
    log.info("purged %d rows in %.1f s", report.deleted, report.elapsed)
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import Table
from sqlalchemy import bindparam
from sqlalchemy import delete
from sqlalchemy import exc as sa_exc
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.sql import Delete

from ._progress import ProgressBar
from ._progress import format_duration
from .exceptions import CleanupAlreadyRunning
from .model import MYSQL_DIALECTS
from .model import utc_now

_T = TypeVar("_T")
log = logging.getLogger("sa_sessions.purge")
#: Where :class:`PurgeProgress` writes its periodic lines when no terminal is attached.
progress_log = logging.getLogger("sa_sessions.purge.progress")

#: MySQL/MariaDB lock wait timeout and deadlock; PostgreSQL deadlock, serialization
#: failure and lock_not_available: the batch rolled back and can simply run again.
_MYSQL_TRANSIENT = frozenset({1205, 1213})
_PG_TRANSIENT = frozenset({"40P01", "40001", "55P03"})
#: MySQL/MariaDB refuse longer names for GET_LOCK.
_MYSQL_LOCK_NAME_MAX = 64
#: Attempts per batch before a transient error is raised.
BATCH_ATTEMPTS = 3
#: MySQL/MariaDB: walk the primary key when at least this share of the rows in a
#: window is expired (below it, reading the live rows costs more than it saves).
PK_WALK_MIN_DENSITY = 0.25
#: MySQL/MariaDB: rows read per primary-key window, in batches (capped by
#: :data:`PK_WINDOW_MAX_ROWS`, never fewer than one batch).
PK_WINDOW_BATCHES = 10
#: MySQL/MariaDB: the most rows of one primary-key window (the ids held in memory).
PK_WINDOW_MAX_ROWS = 50_000


@dataclass
class PurgeReport:
    """Progress of one purge run; passed to the progress callback after each batch."""

    deleted: int = 0
    batches: int = 0
    elapsed: float = 0.0
    expired_at_start: int | None = None
    finished: bool = False
    stopped_by_budget: bool = False
    dry_run: bool = False

    @property
    def rate(self) -> float:
        """Rows deleted per second so far."""
        return self.deleted / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def remaining(self) -> int | None:
        """Estimated expired rows left (rows that expired during the run are not counted)."""
        if self.expired_at_start is None:
            return None
        return max(self.expired_at_start - self.deleted, 0)


def count_expired(engine: Engine, table: Table) -> int:
    """Expired rows now (an index range count on ``expires_at``)."""
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(table).where(table.c.expires_at <= utc_now())
        return int(conn.execute(stmt).scalar_one())


def batch_statement(engine: Engine, table: Table, batch_size: int) -> Delete:
    """A one-statement DELETE of one batch for this engine's dialect (only ``id`` and
    ``expires_at`` named): what PostgreSQL and SQLite run for every batch.

    PostgreSQL and SQLite (no ``DELETE ... LIMIT``) delete by primary key from a
    limited subquery; MySQL/MariaDB get ``DELETE ... WHERE expires_at <= now LIMIT n``,
    which the purge no longer runs there (see the module docstring) but which stays
    for callers that want the old single statement.
    """
    expired = table.c.expires_at <= utc_now()
    if engine.dialect.name in MYSQL_DIALECTS:
        # The option is keyed by the URL's dialect name ("mysql" or "mariadb").
        option = {f"{engine.dialect.name}_limit": batch_size}
        return delete(table).where(expired).with_dialect_options(**option)
    ids = select(table.c.id).where(expired).limit(batch_size).scalar_subquery()
    return delete(table).where(table.c.id.in_(ids))


def _lock_key(table: Table, database: str = "") -> str:
    """The cleaner lock's name: the table, and on MySQL/MariaDB (whose named locks are
    server-wide) its database.  Names past MySQL's 64 characters are hashed whole, so
    two long names can never share a lock by sharing a prefix."""
    key = f"sa_sessions.purge.{database + '.' if database else ''}{table.fullname}"
    if len(key) > _MYSQL_LOCK_NAME_MAX:
        key = "sa_sessions.purge#" + hashlib.sha256(key.encode()).hexdigest()[:46]
    return key


@contextmanager
def purge_lock(engine: Engine, table: Table) -> Iterator[None]:
    """Hold the cleaner lock for ``table`` or raise :class:`CleanupAlreadyRunning` at once.

    The lock lives on a dedicated connection for the whole run, so it is
    released even if this process dies (the server drops it with the connection).
    SQLite needs none: it allows one writer at a time anyway.
    """
    name = engine.dialect.name
    if name not in MYSQL_DIALECTS and name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        if name == "postgresql":
            key = _lock_key(table)  # advisory locks are per database already
            number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": number}).scalar()
            release = text("SELECT pg_advisory_unlock(:k)")
            params: dict[str, object] = {"k": number}
        else:
            key = _lock_key(table, engine.url.database or "")
            got = conn.execute(text("SELECT GET_LOCK(:k, 0)"), {"k": key}).scalar()
            release = text("SELECT RELEASE_LOCK(:k)")
            params = {"k": key}
        conn.commit()
        if not got:
            raise CleanupAlreadyRunning(f"another cleanup of {table.fullname} is running")
        try:
            yield
        finally:
            conn.execute(release, params)
            conn.commit()


def _is_transient(exc: sa_exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return False
    orig = exc.orig
    code = orig.args[0] if orig is not None and orig.args else None
    if code in _MYSQL_TRANSIENT:
        return True
    if getattr(orig, "sqlstate", None) in _PG_TRANSIENT:
        return True
    return "database is locked" in str(orig)  # SQLite busy timeout


def _in_transaction(
    engine: Engine, work: Callable[[Connection], _T], sleep: Callable[[float], None]
) -> _T:
    """Run one batch in its own transaction, retrying deadlocks and lock timeouts."""
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                return work(conn)
        except sa_exc.DBAPIError as exc:
            if attempt == BATCH_ATTEMPTS or not _is_transient(exc):
                raise
            log.warning("purge batch rolled back (%s); retrying", type(exc.orig).__name__)
            sleep(0.05 * attempt)
    raise AssertionError("unreachable")


class _SubqueryBatches:
    """PostgreSQL and SQLite: each batch is the one statement of :func:`batch_statement`."""

    def __init__(
        self, engine: Engine, table: Table, batch_size: int, sleep: Callable[[float], None]
    ) -> None:
        self.engine, self.batch_size, self.sleep = engine, batch_size, sleep
        self.statement = batch_statement(engine, table, batch_size)

    def __call__(self) -> tuple[int, bool]:
        """Run one batch: ``(rows deleted, whether it was the last one)``."""
        deleted = _in_transaction(
            self.engine, lambda conn: int(conn.execute(self.statement).rowcount), self.sleep
        )
        return deleted, deleted < self.batch_size


class _KeyedBatches:
    """MySQL/MariaDB: ids first (non-locking), then one DELETE by primary key per batch.

    The first batch takes the oldest expired ids from the ``expires_at`` index.  When
    it is full, the primary key is walked in windows of ``window`` rows while at least
    :data:`PK_WALK_MIN_DENSITY` of each window is expired; the expired ids of the
    windows are deleted ``batch_size`` at a time, in key order.  Then (or at once, for
    a sparse table) batches through the index again, each starting at the expiry where
    the previous one stopped, until one finds fewer than ``batch_size`` ids.
    """

    def __init__(
        self, engine: Engine, table: Table, batch_size: int, sleep: Callable[[float], None]
    ) -> None:
        self.engine, self.batch_size, self.sleep = engine, batch_size, sleep
        self.window = max(batch_size, min(batch_size * PK_WINDOW_BATCHES, PK_WINDOW_MAX_ROWS))
        c = table.c
        expired = c.expires_at <= utc_now()
        self.by_index = (
            select(c.id, c.expires_at)
            .where(expired, c.expires_at >= bindparam("after"))
            .order_by(c.expires_at)
            .limit(batch_size)
        )
        self.by_index_first = (
            select(c.id, c.expires_at).where(expired).order_by(c.expires_at).limit(batch_size)
        )
        flag = expired.label("expired")
        self.by_key_first = select(c.id, flag).order_by(c.id).limit(self.window)
        self.by_key = (
            select(c.id, flag).where(c.id > bindparam("after")).order_by(c.id).limit(self.window)
        )
        self.delete = delete(table).where(c.id.in_(bindparam("ids", expanding=True)), expired)
        self.first = True
        self.walking = False
        self.walk_cursor: str | None = None
        self.walk_ended = False
        self.pending: list[str] = []
        self.expiry_cursor: datetime | None = None

    def __call__(self) -> tuple[int, bool]:
        """Run one batch: ``(rows deleted, whether it was the last one)``."""
        if self.walking:
            ids = self._walk()
            if ids is not None:
                return self._delete(ids), False
        deleted, found, newest = _in_transaction(self.engine, self._by_index, self.sleep)
        last = found < self.batch_size
        if newest is not None:
            self.expiry_cursor = newest
        if self.first:
            self.first = False
            self.walking = not last
            if self.walking:
                log.debug("a full first batch: reading the primary key in windows")
        return deleted, last

    def _by_index(self, conn: Connection) -> tuple[int, int, datetime | None]:
        """The oldest expired ids from the cursor on, deleted: ``(deleted, found, newest)``."""
        if self.expiry_cursor is None:
            rows = conn.execute(self.by_index_first).all()
        else:
            rows = conn.execute(self.by_index, {"after": self.expiry_cursor}).all()
        if not rows:
            return 0, 0, None
        ids = sorted(row[0] for row in rows)
        deleted = int(conn.execute(self.delete, {"ids": ids}).rowcount)
        return deleted, len(rows), rows[-1][1]

    def _delete(self, ids: list[str]) -> int:
        def work(conn: Connection) -> int:
            return int(conn.execute(self.delete, {"ids": ids}).rowcount)

        return _in_transaction(self.engine, work, self.sleep)

    def _walk(self) -> list[str] | None:
        """The next ``batch_size`` expired ids in key order, or None once the walk is over."""
        while len(self.pending) < self.batch_size and not self.walk_ended:
            with self.engine.connect() as conn:
                if self.walk_cursor is None:
                    rows = conn.execute(self.by_key_first).all()
                else:
                    rows = conn.execute(self.by_key, {"after": self.walk_cursor}).all()
            if len(rows) < self.window:
                self.walk_ended = True
            if not rows:
                break
            self.walk_cursor = rows[-1][0]
            expired = [row[0] for row in rows if row[1]]
            if len(rows) == self.window and len(expired) < PK_WALK_MIN_DENSITY * len(rows):
                log.debug(
                    "%d of %d rows expired in a key window: deleting through the index",
                    len(expired),
                    len(rows),
                )
                self.walk_ended = True
                self.pending.clear()
                break
            self.pending.extend(expired)
        if len(self.pending) >= self.batch_size:
            ids = self.pending[: self.batch_size]
            del self.pending[: self.batch_size]
            return ids
        # Fewer than a batch left: the index batches that follow find them.
        self.walking = False
        self.pending.clear()
        self.expiry_cursor = None
        return None


def purge_expired_rows(
    engine: Engine,
    table: Table,
    *,
    batch_size: int = 1000,
    max_seconds: float | None = None,
    pause: float = 0.0,
    progress: Callable[[PurgeReport], None] | None = None,
    lock: bool = True,
    dry_run: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PurgeReport:
    """Delete expired rows batch by batch until none are left or the budget runs out.

    :param batch_size: rows per DELETE (and per transaction).  On MySQL/MariaDB a
        walk of the primary key holds the ids of one key window in memory:
        ``batch_size`` times :data:`PK_WINDOW_BATCHES`, at most :data:`PK_WINDOW_MAX_ROWS`
        (never fewer than ``batch_size``).
    :param max_seconds: stop after the batch that crosses this many seconds.
    :param pause: seconds to sleep between batches, to leave room for other writers.
    :param progress: called after every batch with the running :class:`PurgeReport`;
        when given, the expired rows are counted first (``expired_at_start``).
    :param lock: take the cleaner lock (:func:`purge_lock`); a second cleaner raises
        :class:`~sa_sessions.CleanupAlreadyRunning` at once.
    :param dry_run: only count the expired rows (``expired_at_start``); delete nothing.
    :param clock: monotonic seconds; injectable for tests.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_seconds is not None and max_seconds < 0:
        raise ValueError("max_seconds must not be negative")
    if dry_run:
        started = clock()
        report = PurgeReport(expired_at_start=count_expired(engine, table), dry_run=True)
        report.finished = True
        report.elapsed = clock() - started
        log.info("dry run: %d expired sessions would be purged", report.expired_at_start)
        return report
    kind = _KeyedBatches if engine.dialect.name in MYSQL_DIALECTS else _SubqueryBatches
    batch = kind(engine, table, batch_size, sleep)
    with purge_lock(engine, table) if lock else _no_lock():
        report = PurgeReport()
        if progress is not None:
            report.expired_at_start = count_expired(engine, table)
        started = clock()
        while True:
            deleted, last = batch()
            report.deleted += deleted
            report.batches += 1
            report.elapsed = clock() - started
            report.finished = last
            if not report.finished and max_seconds is not None:
                report.stopped_by_budget = report.elapsed >= max_seconds
            if progress is not None:
                progress(report)
            if report.finished or report.stopped_by_budget:
                break
            if pause > 0:
                sleep(pause)
    log.info(
        "purged %d expired sessions in %d batches (%.2fs)%s",
        report.deleted,
        report.batches,
        report.elapsed,
        "; stopped by the time budget" if report.stopped_by_budget else "",
    )
    return report


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


class PurgeProgress:
    """A progress callback: a live bar on a terminal, else a log line every N batches.

    The bar shows rows deleted, rate, the estimate left (from the count taken at
    the start) and an ETA; it goes to ``stream`` only when ``stream.isatty()``.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        log_every: int = 100,
        logger: logging.Logger = progress_log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if log_every < 1:
            raise ValueError("log_every must be at least 1")
        self.bar = ProgressBar(stream, clock=clock) if stream.isatty() else None
        self.log_every = log_every
        self.logger = logger

    def __call__(self, report: PurgeReport) -> None:
        if self.bar is not None:
            final = report.finished or report.stopped_by_budget
            self.bar.update(report.deleted, report.expired_at_start, report.elapsed, final=final)
        elif report.batches % self.log_every == 0:
            self.logger.info("%s", describe(report))

    def close(self) -> None:
        """End the bar's line (call once the purge returned or failed)."""
        if self.bar is not None:
            self.bar.close()


def describe(report: PurgeReport) -> str:
    """One line about a running purge: rows, batches, rate and what is left."""
    line = (
        f"purge: {report.deleted:,} rows deleted in {report.batches:,} batches "
        f"({report.rate:,.0f} rows/s"
    )
    remaining = report.remaining
    if remaining is not None:
        eta = remaining / report.rate if report.rate > 0 else None
        line += f", ~{remaining:,} left, ETA {format_duration(eta)}"
    return line + ")"
