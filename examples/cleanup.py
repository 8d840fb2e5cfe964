"""A cron-style cleaner: purge expired sessions in short batches, within a time budget.

Expired sessions are never served, but their rows stay until something deletes
them.  Run this (or ``sa-sessions cleanup --model myapp.models:WebSession``) from
cron or a systemd timer, e.g. every 10 minutes::

    */10 * * * *  python /srv/app/cleanup.py mysql+mysqldb://app@db/app

Each batch deletes at most ``batch_size`` rows through the ``expires_at`` index
in its own short transaction, so the application's saves keep flowing; the run
stops when nothing expired is left or after ``max_seconds``; only one cleaner
runs at a time (a second one gives up at once).  Without a URL this example
uses SQLite in memory and stores a few expired sessions first, to have
something to purge.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import StaticPool

from sa_sessions import CleanupAlreadyRunning
from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions.purge import PurgeReport

log = logging.getLogger("cleanup")


class Base(DeclarativeBase):
    pass


class WebSession(SessionModel, Base):
    __tablename__ = "example_cleanup_sessions"


def progress(report: PurgeReport) -> None:
    """Called after every batch; a cron job logs now and then."""
    if report.batches % 100 == 0:
        log.info("%d deleted so far (%.0f rows/s)", report.deleted, report.rate)


def purge(store: SessionStore[Any], *, max_seconds: float = 300.0) -> int | None:
    """One cron run; None when another cleaner is already at work."""
    try:
        return store.purge_expired(
            batch_size=1000,  # one short transaction per 1,000 rows
            max_seconds=max_seconds,  # leave the rest for the next run
            pause=0.05,  # let the application's writes through between batches
            progress=progress,
        )
    except CleanupAlreadyRunning:
        log.info("another cleaner is running; nothing to do")
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    demo = not args
    engine = (
        create_engine("sqlite://", poolclass=StaticPool)
        if demo
        else create_engine(args[0], pool_pre_ping=True)
    )
    store = SessionStore(WebSession, engine, secret_keys=b"example-cleanup-key-0123456789abcdef")
    if demo:
        Base.metadata.create_all(engine)
        past = datetime.now(timezone.utc) - timedelta(days=1)
        for _ in range(2500):
            store.create({"cart": []}, expires_at=past)
        store.create({"cart": []}, expires_at=past + timedelta(days=8))
        print(f"would delete: {store.purge_expired(dry_run=True)} expired sessions")
    deleted = purge(store)
    print(f"deleted: {deleted} expired sessions" if deleted is not None else "skipped")
    engine.dispose()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    raise SystemExit(main())
