"""Batched purge of expired rows on SQLite, MariaDB and PostgreSQL.

Batches are counted from the SQL actually sent; the single-cleaner lock is held
by another thread; the time budget runs on an injected clock; progress output is
checked on a fake terminal and in log records.
"""

from __future__ import annotations

import io
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import MetaData
from sqlalchemy import Table
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import text

from sa_sessions import CleanupAlreadyRunning
from sa_sessions import SessionStore
from sa_sessions._progress import ProgressBar
from sa_sessions._progress import format_duration
from sa_sessions._progress import render_bar
from sa_sessions.purge import PurgeProgress
from sa_sessions.purge import PurgeReport
from sa_sessions.purge import batch_statement
from sa_sessions.purge import purge_expired_rows
from sa_sessions.purge import purge_lock

from .conftest import SECRET
from .conftest import SERVER_DB_KINDS
from .conftest import StatementLog

UTC = timezone.utc
MYSQL = ("mysql", "mariadb")


def add_rows(
    engine: Engine, table: Table, *, expired: int = 0, live: int = 0, user_id: int | None = None
) -> set[str]:
    """Insert rows directly; returns the ids of the live ones."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    live_ids: set[str] = set()
    for i in range(expired + live):
        row_id = secrets.token_hex(32)
        is_live = i >= expired
        expires = now + timedelta(days=1) if is_live else now - timedelta(minutes=5 + i)
        rows.append(
            {
                "id": row_id,
                "data": b"\x10" + secrets.token_bytes(40),
                "created_at": now - timedelta(days=2),
                "updated_at": now - timedelta(days=2),
                "expires_at": expires,
                "version": 1,
                "user_id": user_id,
            }
        )
        if is_live:
            live_ids.add(row_id)
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
    return live_ids


def remaining_ids(engine: Engine, table: Table) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(select(table.c.id)))


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class StepClock:
    """Monotonic seconds advancing by ``step`` on every call."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


@pytest.fixture
def table(model: type[Any]) -> Table:
    t = model.__table__
    assert isinstance(t, Table)
    return t


# --------------------------------------------------------------------------- batches


def test_batches_delete_only_expired_rows(
    engine: Engine, table: Table, sql_log: StatementLog
) -> None:
    live = add_rows(engine, table, expired=25, live=7)
    sql_log.clear()
    report = purge_expired_rows(engine, table, batch_size=10)
    assert (report.deleted, report.batches, report.finished) == (25, 3, True)
    assert sql_log.count("DELETE") == 3  # 10 + 10 + 5 (< 10: done)
    assert remaining_ids(engine, table) == live


def test_an_exact_multiple_needs_one_empty_batch(
    engine: Engine, table: Table, sql_log: StatementLog
) -> None:
    add_rows(engine, table, expired=20, live=1)
    sql_log.clear()
    report = purge_expired_rows(engine, table, batch_size=10)
    assert (report.deleted, report.batches) == (20, 3)
    # MySQL/MariaDB read the ids first: the last batch is a SELECT that found none.
    assert sql_log.count("DELETE") == (2 if engine.dialect.name in MYSQL else 3)


def test_statements_never_name_the_blob_column(
    engine: Engine, table: Table, sql_log: StatementLog
) -> None:
    add_rows(engine, table, expired=12, live=3)
    sql_log.clear()
    purge_expired_rows(engine, table, batch_size=5, progress=lambda report: None)
    purge_expired_rows(engine, table, dry_run=True)
    assert sql_log.statements
    for statement in sql_log.statements:
        assert not re.search(r"\bdata\b", statement, re.IGNORECASE), statement


def test_batch_statement_per_dialect(engine: Engine, table: Table) -> None:
    # MySQL/MariaDB purges run id-first batches instead (tests/test_purge_keyed.py); the
    # single statement stays available there.
    sql = str(batch_statement(engine, table, 1000).compile(engine)).upper()
    if engine.dialect.name in ("mysql", "mariadb"):
        assert sql.endswith("LIMIT 1000")
        assert "UTC_TIMESTAMP(6)" in sql and " IN " not in sql
    else:
        assert " IN (SELECT" in sql and "LIMIT" in sql


def test_the_batch_delete_uses_the_expires_at_index(
    engine: Engine, table: Table, db_kind: str
) -> None:
    add_rows(engine, table, expired=40, live=1500)
    sql = str(
        batch_statement(engine, table, 1000).compile(engine, compile_kwargs={"literal_binds": True})
    )
    index = f"ix_{table.name}_expires_at"
    with engine.connect() as conn:
        if db_kind == "mysql":
            conn.exec_driver_sql(f"ANALYZE TABLE {table.name}").all()
            row = conn.exec_driver_sql("EXPLAIN " + sql).mappings().one()
            assert row["key"] == index
            assert row["type"] == "range"
        elif db_kind == "postgres":
            conn.exec_driver_sql(f"ANALYZE {table.name}")
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))
            assert index in plan
        else:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert index in plan
        conn.rollback()
    assert len(remaining_ids(engine, table)) == 1540  # EXPLAIN deleted nothing


def test_nothing_to_purge_is_one_statement(
    engine: Engine, table: Table, sql_log: StatementLog
) -> None:
    live = add_rows(engine, table, live=3)
    sql_log.clear()
    report = purge_expired_rows(engine, table)
    assert (report.deleted, report.batches, report.finished) == (0, 1, True)
    if engine.dialect.name in MYSQL:
        assert [s.split()[0] for s in sql_log.statements[1:-1]] == ["SELECT"]  # ids: none
    else:
        assert sql_log.count("DELETE") == 1
    assert remaining_ids(engine, table) == live


def test_bad_arguments(engine: Engine, table: Table) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        purge_expired_rows(engine, table, batch_size=0)
    with pytest.raises(ValueError, match="max_seconds"):
        purge_expired_rows(engine, table, max_seconds=-1)


# --------------------------------------------------------------------------- budget, pause


def test_time_budget_stops_between_batches(engine: Engine, table: Table) -> None:
    add_rows(engine, table, expired=100, live=2)
    clock = StepClock(10.0)  # start 0, then 10, 20, 30 after each batch
    report = purge_expired_rows(engine, table, batch_size=5, max_seconds=25, clock=clock)
    assert (report.deleted, report.batches) == (15, 3)
    assert report.stopped_by_budget and not report.finished
    assert report.elapsed == 30.0
    assert len(remaining_ids(engine, table)) == 87


def test_zero_budget_runs_exactly_one_batch(engine: Engine, table: Table) -> None:
    add_rows(engine, table, expired=30)
    report = purge_expired_rows(engine, table, batch_size=10, max_seconds=0)
    assert (report.deleted, report.batches, report.stopped_by_budget) == (10, 1, True)


def test_pause_sleeps_between_batches_only(engine: Engine, table: Table) -> None:
    add_rows(engine, table, expired=25)
    sleeps: list[float] = []
    report = purge_expired_rows(engine, table, batch_size=10, pause=0.5, sleep=sleeps.append)
    assert report.batches == 3
    assert sleeps == [0.5, 0.5]


def test_a_locked_database_batch_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy import create_engine

    from sa_sessions.default_model import DefaultSession

    engine = create_engine("sqlite://")
    table = DefaultSession.__table__
    assert isinstance(table, Table)
    table.create(engine)
    failures = [sqlite3.OperationalError("database is locked")]

    def fail_once(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("DELETE") and failures:
            raise failures.pop()

    event.listen(engine, "before_cursor_execute", fail_once)
    sleeps: list[float] = []
    with caplog.at_level("WARNING", logger="sa_sessions.purge"):
        report = purge_expired_rows(engine, table, sleep=sleeps.append)
    assert report.finished and sleeps == [0.05]
    assert "retrying" in caplog.text


# --------------------------------------------------------------------------- dry run


def test_dry_run_counts_and_deletes_nothing(
    engine: Engine, table: Table, sql_log: StatementLog
) -> None:
    add_rows(engine, table, expired=13, live=4)
    sql_log.clear()
    report = purge_expired_rows(engine, table, dry_run=True)
    assert report.dry_run and report.expired_at_start == 13 and report.deleted == 0
    assert sql_log.count("DELETE") == 0
    assert len(remaining_ids(engine, table)) == 17


def test_store_purge_expired_keywords(model: type[Any], engine: Engine, table: Table) -> None:
    store = SessionStore(model, engine, secret_keys=SECRET)
    live = add_rows(engine, table, expired=23, live=5)
    assert store.purge_expired(dry_run=True) == 23
    reports: list[tuple[int, int | None]] = []
    deleted = store.purge_expired(
        10, pause=0.0, max_seconds=60, progress=lambda r: reports.append((r.deleted, r.remaining))
    )
    assert deleted == 23
    assert reports == [(10, 13), (20, 3), (23, 0)]
    assert remaining_ids(engine, table) == live
    assert store.purge_expired(dry_run=True) == 0


# --------------------------------------------------------------------------- lock


@pytest.fixture
def lock_holder(engine: Engine, table: Table, db_kind: str) -> Iterator[None]:
    """Another "cleaner": a thread holding the purge lock on its own connection."""
    assert db_kind != "sqlite", "SQLite has no cleaner lock: parametrize with SERVER_DB_KINDS"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with purge_lock(engine, table):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    yield
    release.set()
    thread.join(10)


@pytest.mark.parametrize("db_kind", SERVER_DB_KINDS, indirect=True)
def test_a_second_cleaner_gives_up_at_once(engine: Engine, table: Table, lock_holder: None) -> None:
    add_rows(engine, table, expired=5)
    started = time.monotonic()
    with pytest.raises(CleanupAlreadyRunning, match="another cleanup"):
        purge_expired_rows(engine, table)
    assert time.monotonic() - started < 2
    assert len(remaining_ids(engine, table)) == 5


@pytest.mark.parametrize("db_kind", SERVER_DB_KINDS, indirect=True)
def test_long_table_names_never_share_a_lock(engine: Engine, db_kind: str) -> None:
    """MySQL caps lock names at 64 characters: a cut name would let two cleaners of
    different tables exclude each other (or, cut the other way, run together)."""
    prefix = "sessions_of_a_rather_long_application_name_kept_apart_"
    first = Table(prefix + "one", MetaData())
    second = Table(prefix + "two", MetaData())
    with purge_lock(engine, first), purge_lock(engine, second):  # both at once
        held_twice = pytest.raises(CleanupAlreadyRunning)
        with held_twice, purge_lock(engine, first):
            pass


def test_the_lock_is_released_after_a_run(engine: Engine, table: Table, db_kind: str) -> None:
    add_rows(engine, table, expired=3)
    assert purge_expired_rows(engine, table).deleted == 3
    with purge_lock(engine, table):  # free again
        pass
    with pytest.raises(RuntimeError), purge_lock(engine, table):
        raise RuntimeError("cleaner crashed")
    with purge_lock(engine, table):  # released by the failure too
        pass


# --------------------------------------------------------------------------- progress


def test_render_bar_text() -> None:
    assert render_bar(37_000, 100_000, 10.0) == (
        "[#########---------------]   37,000/100,000    37%   3,700 rows/s   ETA 0:17"
    )
    assert render_bar(0, 0, 0.0) == (
        "[########################]   0/0   100%   0 rows/s   ETA 0:00"
    )
    assert render_bar(5, None, 2.0) == "5 rows   2 rows/s   0:02 elapsed"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == "--:--"


def test_bar_redraws_in_place_and_throttles() -> None:
    stream = FakeTTY()
    clock = StepClock(0.05)
    bar = ProgressBar(stream, width=4, min_interval=0.1, clock=clock)
    bar.update(1, 4, 1.0)  # drawn (t=0)
    bar.update(2, 4, 2.0)  # skipped (t=0.05)
    bar.update(3, 4, 3.0)  # drawn (t=0.10)
    bar.update(4, 4, 4.0, final=True)
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert [f.split("]")[0] for f in frames] == ["[#---", "[###-", "[####"]
    assert stream.getvalue().endswith("ETA 0:00\n")


def test_progress_bar_on_a_terminal(engine: Engine, table: Table) -> None:
    add_rows(engine, table, expired=25, live=2)
    stream = FakeTTY()
    progress = PurgeProgress(stream)
    purge_expired_rows(engine, table, batch_size=10, progress=progress)
    progress.close()
    last = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("[########################]   25/25   100%")
    assert re.search(r"[\d,]+ rows/s   ETA 0:00$", last.rstrip())


def test_progress_without_a_terminal_logs_every_n_batches(
    engine: Engine, table: Table, caplog: pytest.LogCaptureFixture
) -> None:
    add_rows(engine, table, expired=10)
    stream = io.StringIO()
    with caplog.at_level("INFO", logger="sa_sessions.purge"):
        purge_expired_rows(engine, table, batch_size=2, progress=PurgeProgress(stream, log_every=2))
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "sa_sessions.purge.progress"]
    assert [line.split(" (")[0] for line in lines] == [
        "purge: 4 rows deleted in 2 batches",
        "purge: 8 rows deleted in 4 batches",
        "purge: 10 rows deleted in 6 batches",
    ]
    assert "~6 left, ETA" in lines[0]
    assert any("purged 10 expired sessions in 6 batches" in r.getMessage() for r in caplog.records)


def test_report_estimates() -> None:
    report = PurgeReport(deleted=300, elapsed=2.0, expired_at_start=1000)
    assert report.rate == 150.0 and report.remaining == 700
    assert PurgeReport().rate == 0.0 and PurgeReport().remaining is None


def test_count_stays_exact_on_every_dialect(engine: Engine, table: Table) -> None:
    add_rows(engine, table, expired=7, live=3)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(table)).scalar_one()
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert total == 10
    assert purge_expired_rows(engine, table, dry_run=True).expired_at_start == 7
