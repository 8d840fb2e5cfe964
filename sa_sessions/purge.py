"""Batched deletion of expired session rows, one short transaction per batch.

Tables of sessions reach tens of millions of rows; one unbounded DELETE holds
locks for minutes.  Here each batch deletes at most ``batch_size`` rows through
the ``expires_at`` index and commits, so concurrent saves wait milliseconds.
MySQL/MariaDB use ``DELETE ... LIMIT``; PostgreSQL and SQLite (which have no
such clause) delete by primary key from a limited subquery.  No statement names
the ``data`` column: the blobs are never read.  A database lock (``GET_LOCK`` /
``pg_try_advisory_lock``) keeps a second cleaner out.

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
from typing import TextIO

from sqlalchemy import Engine
from sqlalchemy import Table
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

log = logging.getLogger("sa_sessions.purge")
#: Where :class:`PurgeProgress` writes its periodic lines when no terminal is attached.
progress_log = logging.getLogger("sa_sessions.purge.progress")

#: MySQL/MariaDB lock wait timeout and deadlock; PostgreSQL deadlock, serialization
#: failure and lock_not_available: the batch rolled back and can simply run again.
_MYSQL_TRANSIENT = frozenset({1205, 1213})
_PG_TRANSIENT = frozenset({"40P01", "40001", "55P03"})
#: Attempts per batch before a transient error is raised.
BATCH_ATTEMPTS = 3


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
    """The DELETE of one batch for this engine's dialect (only ``id``/``expires_at`` named)."""
    expired = table.c.expires_at <= utc_now()
    if engine.dialect.name in MYSQL_DIALECTS:
        # The option is keyed by the URL's dialect name ("mysql" or "mariadb").
        option = {f"{engine.dialect.name}_limit": batch_size}
        return delete(table).where(expired).with_dialect_options(**option)
    ids = select(table.c.id).where(expired).limit(batch_size).scalar_subquery()
    return delete(table).where(table.c.id.in_(ids))


def _lock_key(table: Table) -> str:
    return f"sa_sessions.purge.{table.fullname}"


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
    key = _lock_key(table)
    with engine.connect() as conn:
        if name == "postgresql":
            number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": number}).scalar()
            release = text("SELECT pg_advisory_unlock(:k)")
            params: dict[str, object] = {"k": number}
        else:
            got = conn.execute(text("SELECT GET_LOCK(:k, 0)"), {"k": key[:64]}).scalar()
            release = text("SELECT RELEASE_LOCK(:k)")
            params = {"k": key[:64]}
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


def _delete_batch(engine: Engine, statement: Delete, sleep: Callable[[float], None]) -> int:
    """Run one batch in its own transaction, retrying deadlocks and lock timeouts."""
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                return int(conn.execute(statement).rowcount)
        except sa_exc.DBAPIError as exc:
            if attempt == BATCH_ATTEMPTS or not _is_transient(exc):
                raise
            log.warning("purge batch rolled back (%s); retrying", type(exc.orig).__name__)
            sleep(0.05 * attempt)
    raise AssertionError("unreachable")


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

    :param batch_size: rows per DELETE (and per transaction).
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
    statement = batch_statement(engine, table, batch_size)
    with purge_lock(engine, table) if lock else _no_lock():
        report = PurgeReport()
        if progress is not None:
            report.expired_at_start = count_expired(engine, table)
        started = clock()
        while True:
            deleted = _delete_batch(engine, statement, sleep)
            report.deleted += deleted
            report.batches += 1
            report.elapsed = clock() - started
            report.finished = deleted < batch_size
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
