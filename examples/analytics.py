"""Questions about your sessions, asked in plain SQLAlchemy.

Sessions are rows of YOUR model, so analytics is ordinary SQL on an indexed
table.  This example maps a model with a ``user_id`` column (filled from the
session data by a ``columns=`` hook), stores a few known sessions through
:class:`~sa_sessions.SessionStore`, then asks:

* how many sessions are active?                ``select(func.count()).where(WebSession.is_active)``
* how many sessions does each user have?       ``GROUP BY user_id``
* how many sessions were created per hour?     ``sa_sessions.analytics.utc_hour`` (portable)
* how big are the stored blobs (avg / max)?    ``sa_sessions.analytics.blob_length``
* how many sessions expire within the hour?    a range on the ``expires_at`` index

Run it::

    python examples/analytics.py                                  # SQLite in memory
    python examples/analytics.py mysql+mysqldb://root@localhost/test
"""

from __future__ import annotations

import sys
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import Integer
from sqlalchemy import create_engine
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.pool import StaticPool

from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions.analytics import blob_length
from sa_sessions.analytics import utc_hour


class Base(DeclarativeBase):
    pass


class WebSession(SessionModel, Base):
    __tablename__ = "example_analytics_sessions"
    user_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)


# (created this many minutes after the top of the hour two hours ago, user, expires in)
KNOWN_SESSIONS: list[tuple[int, int | None, timedelta]] = [
    (5, 42, timedelta(days=7)),
    (10, 42, timedelta(days=7)),
    (15, 7, timedelta(minutes=30)),  # expires within the hour
    (65, 42, timedelta(days=1)),
    (70, None, timedelta(minutes=45)),  # anonymous (a cart), expires within the hour
    (75, None, timedelta(days=7)),
    (20, 7, -timedelta(hours=1)),  # already expired
]


class SettableClock:
    """The store's clock, set to each known creation time before the row is stored."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def seed(model: Any, engine: Engine, now: datetime) -> list[int]:
    """Store :data:`KNOWN_SESSIONS` in ``model``; returns the blob size of each active one."""
    clock = SettableClock(now)
    store = SessionStore(
        model,
        engine,
        secret_keys=b"example-analytics-key-0123456789abcdef",
        columns={"user_id": lambda data: data.get("user_id")},  # log out everywhere by user
        clock=clock,  # created_at/updated_at of the rows
    )
    two_hours_ago = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    sizes: list[int] = []
    for minutes, user_id, expires_in in KNOWN_SESSIONS:
        clock.now = two_hours_ago + timedelta(minutes=minutes)
        data: dict[str, Any] = {"cart": ["book"] * (minutes // 5)}
        if user_id is not None:
            data["user_id"] = user_id
        record = store.create(data, expires_at=now + expires_in)
        if expires_in > timedelta(0):
            sizes.append(record.blob_size)
    return sizes


def ask(engine: Engine, model: Any, now: datetime) -> dict[str, Any]:
    """The questions of the module docstring, as plain SQLAlchemy queries."""
    per_user = func.count().label("sessions")
    hour = utc_hour(model.created_at).label("hour")
    size = blob_length(model.data)
    with engine.connect() as conn:
        active = conn.execute(select(func.count()).where(model.is_active)).scalar_one()
        users = conn.execute(
            select(model.user_id, per_user)
            .where(model.is_active, model.user_id.is_not(None))
            .group_by(model.user_id)
            .order_by(per_user.desc())
        ).all()
        hours = conn.execute(select(hour, func.count()).group_by(hour).order_by(hour)).all()
        average, largest = conn.execute(
            select(func.avg(size), func.max(size)).where(model.is_active)
        ).one()
        expiring = conn.execute(
            select(func.count()).where(
                model.expires_at > now, model.expires_at <= now + timedelta(hours=1)
            )
        ).scalar_one()
    return {
        "active": int(active),
        "per_user": [(user, int(n)) for user, n in users],
        "per_hour": [(h, int(n)) for h, n in hours],
        "blob_avg": float(average),
        "blob_max": int(largest),
        "expiring_within_hour": int(expiring),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else "sqlite://"
    options: dict[str, Any] = (
        {"poolclass": StaticPool} if url == "sqlite://" else {"pool_pre_ping": True}
    )
    engine = create_engine(url, **options)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    now = datetime.now(timezone.utc)
    seed(WebSession, engine, now)
    answers = ask(engine, WebSession, now)
    print(f"active sessions:              {answers['active']}")
    print("sessions per user:            " + ", ".join(f"{u}: {n}" for u, n in answers["per_user"]))
    for hour, created in answers["per_hour"]:
        print(f"created {hour:%Y-%m-%d %H}:00 UTC:     {created}")
    print(f"blob bytes (avg / max):       {answers['blob_avg']:.1f} / {answers['blob_max']}")
    print(f"expiring within the hour:     {answers['expiring_within_hour']}")
    Base.metadata.drop_all(engine)
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
