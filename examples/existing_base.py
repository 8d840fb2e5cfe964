"""SessionModel in an existing SQLAlchemy application: your Base, your users table.

Sessions are rows of a model you declare next to your own, so they can carry
a foreign key to ``users``, take part in relationships and joins, and be
found and revoked with ordinary SQL.  Run::

    python examples/existing_base.py                       # SQLite file
    python examples/existing_base.py postgresql+psycopg://localhost/test
"""

from __future__ import annotations

import argparse
import secrets
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from sqlalchemy import ForeignKey
from sqlalchemy import String
from sqlalchemy import create_engine
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship

from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import memory_region


class Base(DeclarativeBase):
    """The application's existing declarative base."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    sessions: Mapped[list[WebSession]] = relationship(back_populates="user", passive_deletes=True)


class WebSession(SessionModel, Base):
    """One session per row; SessionModel brings id, data, timestamps and version."""

    __tablename__ = "web_sessions"

    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    user: Mapped[User | None] = relationship(back_populates="sessions")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SessionModel in an existing model.")
    parser.add_argument("url", nargs="?", default="sqlite:///existing_base.sqlite3")
    args = parser.parse_args(argv)

    engine = create_engine(args.url)
    Base.metadata.drop_all(engine)  # a clean slate for the example
    Base.metadata.create_all(engine)
    store = SessionStore(
        WebSession,
        engine,
        region=memory_region(),
        secret_keys=secrets.token_bytes(32),
        # Filled from the session data at every save: SQL can find a user's sessions.
        columns={"user_id": lambda data: data.get("user_id")},
    )

    with DbSession(engine) as db:
        alice = User(email="alice@example.com")
        bob = User(email="bob@example.com")
        db.add_all([alice, bob])
        db.commit()
        alice_id, bob_id = alice.id, bob.id

    # Store sessions through the store (what SessionMiddleware does for a request).
    now = datetime.now(timezone.utc)
    week = now + timedelta(days=7)
    laptop = store.create({"user_id": alice_id, "cart": ["book", "lamp"]}, expires_at=week)
    phone = store.create({"user_id": alice_id, "theme": "dark"}, expires_at=week)
    store.create({"user_id": bob_id}, expires_at=week)
    store.create({"user_id": alice_id}, expires_at=now - timedelta(minutes=1))  # expired
    loaded = store.load(laptop.session_id)
    print("loaded laptop session:", loaded.data if loaded else None)

    with DbSession(engine) as db:
        mine = db.scalars(
            select(WebSession)
            .where(WebSession.is_active, WebSession.user_id == alice_id)
            .order_by(WebSession.created_at)
        ).all()
        print(f"alice has {len(mine)} active sessions:")
        for row in mine:
            print(
                f"  {row.id[:12]}...  expires {row.expires_at:%Y-%m-%d %H:%M} UTC, "
                f"{len(row.data)} byte blob, user {row.user.email if row.user else None}"
            )
        per_user = db.execute(
            select(User.email, func.count(WebSession.id))
            .join(WebSession, WebSession.user_id == User.id)
            .where(WebSession.is_active)
            .group_by(User.email)
            .order_by(User.email)
        ).all()
        print("active sessions per user:", {email: count for email, count in per_user})

    # Purge expired rows, then log alice out everywhere except on the laptop.
    print("purged expired:", store.purge_expired())
    # Rows are keyed by the SHA-256 of the session id: laptop.hashed_id.
    print(
        "revoked:", store.revoke(WebSession.user_id == alice_id, WebSession.id != laptop.hashed_id)
    )
    print("phone session after revoke:", store.load(phone.session_id))
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
