"""Analytics queries with exact answers on SQLite, MariaDB and PostgreSQL.

The data are examples/analytics.py's known sessions, stored through
SessionStore; both the example's plain-SQLAlchemy questions and the
``sa_sessions.analytics`` builders must give the same, exact answers.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from sa_sessions import SessionConfigError
from sa_sessions import SessionModel
from sa_sessions import analytics
from sa_sessions.analytics import blob_length
from sa_sessions.analytics import percentiles
from sa_sessions.analytics import utc_day
from sa_sessions.analytics import utc_hour

from .conftest import load_example

UTC = timezone.utc
SQLITE = sqlite.dialect()
POSTGRES = postgresql.dialect()  # type: ignore[no-untyped-call]


example = load_example("analytics")


class Known:
    """The seeded data and the answers every database must give."""

    def __init__(self, model: type[Any], engine: Engine) -> None:
        self.now = datetime.now(UTC)
        self.sizes: list[int] = example.seed(model, engine, self.now)
        self.start = self.now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        self.created = [self.start + timedelta(minutes=m) for m, _, _ in example.KNOWN_SESSIONS]


@pytest.fixture
def known(model: type[Any], engine: Engine) -> Known:
    return Known(model, engine)


def run(engine: Engine, stmt: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(stmt)]


def test_example_questions(model: type[Any], engine: Engine, known: Known) -> None:
    answers = example.ask(engine, model, known.now)
    assert answers == {
        "active": 6,
        "per_user": [(42, 3), (7, 1)],
        "per_hour": [(known.start, 4), (known.start + timedelta(hours=1), 3)],
        "blob_avg": pytest.approx(sum(known.sizes) / 6, abs=1e-3),
        "blob_max": max(known.sizes),
        "expiring_within_hour": 2,
    }
    assert len(set(known.sizes)) > 1  # the sizes really differ


def test_counts(model: type[Any], engine: Engine, known: Known) -> None:
    assert run(engine, analytics.active_count(model)) == [(6,)]
    assert run(engine, analytics.expired_count(model)) == [(1,)]
    assert run(engine, analytics.expiring_within(model, now=known.now)) == [(2,)]
    within_a_day = analytics.expiring_within(model, timedelta(days=1, minutes=1), now=known.now)
    assert run(engine, within_a_day) == [(3,)]


def test_sessions_per_user(model: type[Any], engine: Engine, known: Known) -> None:
    assert run(engine, analytics.sessions_per_user(model)) == [(42, 3), (7, 1)]
    assert run(engine, analytics.sessions_per_user(model, limit=1)) == [(42, 3)]


def test_created_per_hour_and_day(model: type[Any], engine: Engine, known: Known) -> None:
    hours = run(engine, analytics.created_per_hour(model))
    assert hours == [(known.start, 4), (known.start + timedelta(hours=1), 3)]
    assert all(h.tzinfo is not None and h.utcoffset() == timedelta(0) for h, _ in hours)
    later = analytics.created_per_hour(model, since=known.start + timedelta(minutes=60))
    assert run(engine, later) == [(known.start + timedelta(hours=1), 3)]
    per_day = Counter(c.replace(hour=0, minute=0) for c in known.created)
    assert run(engine, analytics.created_per_day(model)) == sorted(per_day.items())


def test_blob_sizes(model: type[Any], engine: Engine, known: Known) -> None:
    [(count, average, largest)] = run(engine, analytics.blob_size_summary(model))
    assert (count, largest) == (6, max(known.sizes))
    assert float(average) == pytest.approx(sum(known.sizes) / 6, abs=1e-3)
    assert run(engine, analytics.blob_size_histogram(model)) == sorted(Counter(known.sizes).items())


def test_oldest_active(model: type[Any], engine: Engine, known: Known) -> None:
    assert run(engine, analytics.oldest_active(model)) == [(known.start + timedelta(minutes=5),)]


def nearest_rank(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered))) - 1]


def test_collect_stats(model: type[Any], engine: Engine, known: Known) -> None:
    stats = analytics.collect_stats(engine, model, days=3, now=known.now)
    today = known.now.date()
    per_day = Counter(c.date() for c in known.created)
    assert stats.active == 6 and stats.expired == 1
    assert stats.created_per_day == [
        (today - timedelta(days=d), per_day.get(today - timedelta(days=d), 0)) for d in (2, 1, 0)
    ]
    sizes = known.sizes
    assert stats.blob_bytes == analytics.BlobSizes(
        sessions=6,
        p50=nearest_rank(sizes, 0.5),
        p90=nearest_rank(sizes, 0.9),
        p99=nearest_rank(sizes, 0.99),
        max=max(sizes),
        average=round(sum(sizes) / 6, 1),
    )
    assert stats.oldest_active_created_at == known.start + timedelta(minutes=5)
    assert stats.top_users == [(42, 3), (7, 1)]
    data = stats.as_dict()
    assert data["top_users"] == [{"user_id": 42, "sessions": 3}, {"user_id": 7, "sessions": 1}]
    assert data["created_per_day"][-1] == {"day": today.isoformat(), "created": per_day[today]}


def test_buckets_ignore_the_connection_time_zone(
    model: type[Any], engine: Engine, known: Known, db_kind: str
) -> None:
    """UTC hours even when the connection runs in +05:30."""
    with engine.connect() as conn:
        if db_kind == "postgres":
            conn.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
        elif db_kind == "mysql":
            conn.execute(text("SET time_zone = '+05:30'"))
        try:
            hours = [tuple(r) for r in conn.execute(analytics.created_per_hour(model))]
            active = conn.execute(analytics.active_count(model)).scalar_one()
        finally:
            if db_kind == "mysql":
                conn.execute(text("SET time_zone = @@global.time_zone"))
            conn.rollback()
    assert hours == [(known.start, 4), (known.start + timedelta(hours=1), 3)]
    assert active == 6


def test_stats_on_an_empty_table(model: type[Any], engine: Engine) -> None:
    stats = analytics.collect_stats(engine, model, days=1)
    assert (stats.active, stats.expired, stats.top_users) == (0, 0, [])
    assert stats.blob_bytes == analytics.BlobSizes(0, None, None, None, None, None)
    assert stats.oldest_active_created_at is None
    assert stats.as_dict()["blob_bytes"]["p50"] is None


def test_example_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert example.main([]) == 0
    out = capsys.readouterr().out
    assert "active sessions:              6" in out
    assert "sessions per user:            42: 3, 7: 1" in out
    assert "expiring within the hour:     2" in out


# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("dialect", "hour", "size"),
    [
        (SQLITE, "substr(t.created_at, 1, 13)", "length(t.data)"),
        (mysql.dialect(), "LEFT(CAST(t.created_at AS CHAR), 13)", "length(t.data)"),
        (
            POSTGRES,
            "to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')",
            "octet_length(t.data)",
        ),
    ],
)
def test_compiled_sql(dialect: Any, hour: str, size: str) -> None:
    from sqlalchemy import Column
    from sqlalchemy import LargeBinary
    from sqlalchemy import MetaData
    from sqlalchemy import Table

    from sa_sessions.model import UtcDateTime

    t = Table("t", MetaData(), Column("created_at", UtcDateTime()), Column("data", LargeBinary()))
    assert str(select(utc_hour(t.c.created_at)).compile(dialect=dialect)).startswith(
        f"SELECT {hour} AS "
    )
    day = str(select(utc_day(t.c.created_at)).compile(dialect=dialect))
    assert "10" in day or "YYYY-MM-DD'" in day
    assert str(select(blob_length(t.c.data)).compile(dialect=dialect)).startswith(
        f"SELECT {size} AS "
    )


def test_percentiles() -> None:
    histogram = [(100, 50), (200, 40), (300, 9), (5000, 1)]
    assert percentiles(histogram, (0.5, 0.9, 0.99, 1.0)) == {
        0.5: 100,
        0.9: 200,
        0.99: 300,
        1.0: 5000,
    }
    assert percentiles([], (0.5,)) == {}
    assert percentiles([(7, 1)], (0.01, 0.99)) == {0.01: 7, 0.99: 7}


def test_sessions_per_user_needs_the_column() -> None:
    from sa_sessions.default_model import DefaultSession

    assert analytics.user_column(DefaultSession) is None
    with pytest.raises(ValueError, match="no 'user_id' column"):
        analytics.sessions_per_user(DefaultSession)


def test_session_table_is_the_model_modules_one() -> None:
    """One check for "a mapped SessionModel" (sa_sessions.model), still importable from here."""
    from sa_sessions.default_model import DefaultSession
    from sa_sessions.model import session_table

    assert analytics.session_table is session_table
    assert analytics.session_table(DefaultSession).name == "sa_sessions"


class _NotASessionModel:
    created_at = None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_NotASessionModel, "_NotASessionModel is not a SessionModel subclass"),
        ("WebSession", "expected a SessionModel subclass, not an instance of str"),
        (
            SessionModel,
            "SessionModel is not mapped to a table: mix SessionModel into a declarative",
        ),
    ],
)
def test_a_wrong_model_is_a_config_error(model: Any, message: str) -> None:
    with pytest.raises(SessionConfigError, match=message):
        analytics.session_table(model)
    with pytest.raises(SessionConfigError, match=message):
        analytics.user_column(model)
    engine = create_engine("sqlite://")
    with pytest.raises(SessionConfigError, match=message):
        analytics.collect_stats(engine, model)  # before any query
    engine.dispose()
