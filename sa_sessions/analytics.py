"""Typed query builders over a :class:`~sa_sessions.SessionModel` subclass.

Each builder returns a SQLAlchemy :class:`~sqlalchemy.sql.Select`; run it with
your own connection or ORM session::

    with engine.connect() as conn:
        active = conn.execute(active_count(WebSession)).scalar_one()
        per_hour = dict(conn.execute(created_per_hour(WebSession, since=yesterday)).all())

Time buckets are computed in UTC on every dialect (``to_char(... AT TIME ZONE
'UTC')`` on PostgreSQL, a prefix of the stored UTC text on MySQL/MariaDB and
SQLite) and come back as aware UTC datetimes.  Blob sizes are in bytes
(``octet_length`` on PostgreSQL, ``length`` elsewhere).  :func:`collect_stats`
gathers what ``sa-sessions stats`` shows.  A model that is not a mapped
:class:`~sa_sessions.SessionModel` subclass raises
:class:`~sa_sessions.SessionConfigError` (:func:`~sa_sessions.model.session_table`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import Column
from sqlalchemy import Engine
from sqlalchemy import Integer
from sqlalchemy import Select
from sqlalchemy import String
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from ._clock import UTC
from ._clock import utcnow
from .model import SessionModel
from .model import session_table as session_table  # re-exported: it used to live here

# --------------------------------------------------------------------------- SQL pieces


class UtcBucket(TypeDecorator[datetime]):
    """Reads ``YYYY-MM-DD`` or ``YYYY-MM-DD HH`` bucket text as an aware UTC datetime."""

    impl = String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        text = str(value)
        day = datetime.strptime(text[:10], "%Y-%m-%d").replace(tzinfo=UTC)
        return day.replace(hour=int(text[11:13])) if len(text) >= 13 else day


class _utc_prefix(FunctionElement[datetime]):
    """Base of the bucket functions: the first ``chars`` characters of the UTC time text."""

    type = UtcBucket()
    inherit_cache = True
    chars = 10
    pg_format = "YYYY-MM-DD"


class utc_day(_utc_prefix):
    """The UTC day of a :class:`~sa_sessions.model.UtcDateTime` column (``GROUP BY``-able)."""

    inherit_cache = True
    name = "utc_day"


class utc_hour(_utc_prefix):
    """The UTC hour of a :class:`~sa_sessions.model.UtcDateTime` column."""

    inherit_cache = True
    name = "utc_hour"
    chars = 13
    pg_format = "YYYY-MM-DD HH24"


def _argument(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(_utc_prefix)
def _prefix_sqlite(element: _utc_prefix, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores the column as UTC text "YYYY-MM-DD HH:MM:SS.ffffff".
    return f"substr({_argument(element, compiler, **kw)}, 1, {element.chars})"


@compiles(_utc_prefix, "mysql")
@compiles(_utc_prefix, "mariadb")
def _prefix_mysql(element: _utc_prefix, compiler: SQLCompiler, **kw: Any) -> str:
    # DATETIME(6) holds naive UTC: its text form starts "YYYY-MM-DD HH".
    return f"LEFT(CAST({_argument(element, compiler, **kw)} AS CHAR), {element.chars})"


@compiles(_utc_prefix, "postgresql")
def _prefix_pg(element: _utc_prefix, compiler: SQLCompiler, **kw: Any) -> str:
    # timestamptz: convert to UTC first, whatever the connection's TimeZone.
    column = _argument(element, compiler, **kw)
    return f"to_char({column} AT TIME ZONE 'UTC', '{element.pg_format}')"


class blob_length(FunctionElement[int]):
    """Size in bytes of a binary column: ``octet_length`` on PostgreSQL, ``length`` elsewhere."""

    type = Integer()
    inherit_cache = True
    name = "blob_length"


@compiles(blob_length)
def _length_default(element: blob_length, compiler: SQLCompiler, **kw: Any) -> str:
    return f"length({_argument(element, compiler, **kw)})"


@compiles(blob_length, "postgresql")
def _length_pg(element: blob_length, compiler: SQLCompiler, **kw: Any) -> str:
    return f"octet_length({_argument(element, compiler, **kw)})"


# --------------------------------------------------------------------------- builders


def active_count(model: type[SessionModel]) -> Select[int]:
    """Sessions that have not expired."""
    return select(func.count()).select_from(model).where(model.is_active)


def expired_count(model: type[SessionModel]) -> Select[int]:
    """Expired rows still in the table (the purge's backlog)."""
    return select(func.count()).select_from(model).where(model.is_expired)


def user_column(model: type[SessionModel], name: str = "user_id") -> Column[Any] | None:
    """The model's column ``name`` (e.g. a user id set by a ``columns=`` hook), or None."""
    column: Column[Any] | None = session_table(model).c.get(name)
    return column


def sessions_per_user(
    model: type[SessionModel], *, limit: int | None = None, column: str = "user_id"
) -> Select[Any, int]:
    """``(user id, active sessions)``, most sessions first; rows without a user are skipped."""
    user = user_column(model, column)
    if user is None:
        raise ValueError(f"{model.__name__} has no {column!r} column")
    sessions = func.count().label("sessions")
    stmt = (
        select(user, sessions)
        .where(model.is_active, user.is_not(None))
        .group_by(user)
        .order_by(sessions.desc(), user)
    )
    return stmt if limit is None else stmt.limit(limit)


def created_per_hour(
    model: type[SessionModel], *, since: datetime | None = None
) -> Select[datetime, int]:
    """``(UTC hour, sessions created)`` in time order; every row counts, expired or not."""
    return _created_per(utc_hour(model.created_at), model, since)


def created_per_day(
    model: type[SessionModel], *, since: datetime | None = None
) -> Select[datetime, int]:
    """``(UTC day as midnight UTC, sessions created)`` in time order."""
    return _created_per(utc_day(model.created_at), model, since)


def _created_per(
    bucket: ColumnElement[datetime], model: type[SessionModel], since: datetime | None
) -> Select[datetime, int]:
    labelled = bucket.label("bucket")
    stmt = select(labelled, func.count().label("created")).group_by(labelled).order_by(labelled)
    return stmt if since is None else stmt.where(model.created_at >= since)


def blob_size_summary(model: type[SessionModel]) -> Select[int, Any, int | None]:
    """``(active sessions, average blob bytes, largest blob bytes)``.

    The average is a ``Decimal`` on MySQL/PostgreSQL and a ``float`` on SQLite.
    """
    size = blob_length(model.data)
    return select(func.count(), func.avg(size), func.max(size)).where(model.is_active)


def blob_size_histogram(model: type[SessionModel]) -> Select[int, int]:
    """``(blob bytes, active sessions of that size)``, smallest first: exact percentiles."""
    size = blob_length(model.data).label("size")
    return (
        select(size, func.count().label("sessions"))
        .where(model.is_active)
        .group_by(size)
        .order_by(size)
    )


def expiring_within(
    model: type[SessionModel],
    within: timedelta = timedelta(hours=1),
    *,
    now: datetime | None = None,
) -> Select[int]:
    """Active sessions whose expiry falls in the next ``within`` (from ``now``, default UTC now)."""
    start = now or utcnow()
    return (
        select(func.count())
        .select_from(model)
        .where(model.expires_at > start, model.expires_at <= start + within)
    )


def oldest_active(model: type[SessionModel]) -> Select[datetime | None]:
    """Creation time of the oldest session still active (None on an empty table)."""
    return select(func.min(model.created_at)).where(model.is_active)


# --------------------------------------------------------------------------- stats


def percentiles(histogram: Iterable[tuple[int, int]], points: Iterable[float]) -> dict[float, int]:
    """Nearest-rank percentiles from ``(value, count)`` pairs sorted by value."""
    pairs = [(int(value), int(count)) for value, count in histogram]
    total = sum(count for _, count in pairs)
    result: dict[float, int] = {}
    if total == 0:
        return result
    for point in points:
        rank, seen = max(1, math.ceil(point * total)), 0
        for value, count in pairs:
            seen += count
            if seen >= rank:
                result[point] = value
                break
    return result


@dataclass(frozen=True)
class BlobSizes:
    """Blob sizes in bytes over the active sessions."""

    sessions: int
    p50: int | None
    p90: int | None
    p99: int | None
    max: int | None
    average: float | None


@dataclass(frozen=True)
class SessionStats:
    """What ``sa-sessions stats`` reports; :meth:`as_dict` has stable JSON keys."""

    table: str
    generated_at: datetime
    active: int
    expired: int
    created_per_day: list[tuple[date, int]]
    blob_bytes: BlobSizes
    oldest_active_created_at: datetime | None
    top_users: list[tuple[Any, int]] | None

    def as_dict(self) -> dict[str, Any]:
        """These stats as plain data with stable keys, what ``sa-sessions stats --json``
        prints.

        Datetimes and days become ISO 8601 strings; ``created_per_day`` is a list of
        ``{"day", "created"}`` objects, oldest first, ``blob_bytes`` an object of
        :class:`BlobSizes`' fields, and ``top_users`` a list of ``{"user_id",
        "sessions"}`` objects (each user id as its column holds it), or None when the
        model has no ``user_id`` column.
        """
        oldest = self.oldest_active_created_at
        users = self.top_users
        return {
            "table": self.table,
            "generated_at": self.generated_at.isoformat(),
            "active": self.active,
            "expired": self.expired,
            "created_per_day": [
                {"day": day.isoformat(), "created": n} for day, n in self.created_per_day
            ],
            "blob_bytes": {
                "sessions": self.blob_bytes.sessions,
                "p50": self.blob_bytes.p50,
                "p90": self.blob_bytes.p90,
                "p99": self.blob_bytes.p99,
                "max": self.blob_bytes.max,
                "average": self.blob_bytes.average,
            },
            "oldest_active_created_at": oldest.isoformat() if oldest is not None else None,
            "top_users": None
            if users is None
            else [{"user_id": user, "sessions": n} for user, n in users],
        }


def collect_stats(
    engine: Engine,
    model: type[SessionModel],
    *,
    days: int = 7,
    top_users: int = 10,
    now: datetime | None = None,
) -> SessionStats:
    """Counts, creations per UTC day (``days`` days, today included), blob sizes, top users."""
    table = session_table(model)  # a wrong model fails here, before any query
    if days < 1:
        raise ValueError("days must be at least 1")
    now = now or utcnow()
    first_day = now.date() - timedelta(days=days - 1)
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    with engine.connect() as conn:
        active = int(conn.execute(active_count(model)).scalar_one())
        expired = int(conn.execute(expired_count(model)).scalar_one())
        per_day = {b.date(): int(n) for b, n in conn.execute(created_per_day(model, since=since))}
        count, average, largest = conn.execute(blob_size_summary(model)).one()
        histogram = [(int(size), int(n)) for size, n in conn.execute(blob_size_histogram(model))]
        points = percentiles(histogram, (0.5, 0.9, 0.99))
        oldest = conn.execute(oldest_active(model)).scalar_one()
        users = None
        if user_column(model) is not None:
            rows = conn.execute(sessions_per_user(model, limit=top_users))
            users = [(user, int(n)) for user, n in rows]
    sizes = BlobSizes(
        sessions=int(count),
        p50=points.get(0.5),
        p90=points.get(0.9),
        p99=points.get(0.99),
        max=None if largest is None else int(largest),
        average=None if average is None else round(float(average), 1),
    )
    return SessionStats(
        table=table.fullname,
        generated_at=now,
        active=active,
        expired=expired,
        created_per_day=[
            (first_day + timedelta(days=i), per_day.get(first_day + timedelta(days=i), 0))
            for i in range(days)
        ],
        blob_bytes=sizes,
        oldest_active_created_at=oldest,
        top_users=users,
    )
