"""The purge's id-first batches on MariaDB/MySQL: primary-key walk, index walk, re-checks.

On MySQL/MariaDB each batch reads ids without locking, then deletes them by primary
key with the expiry checked again.  A backlog (the first batch is full and at least
a quarter of a key window is expired) is walked in primary-key order; a sparse table
stays on the ``expires_at`` index.  Ids here are fixed (SHA-256 of a label), so which
rows fall into which window is the same on every run.  The statements are those
actually sent, captured with their parameters; plans come from ``EXPLAIN`` of those
statements, run on another connection just before each one executes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import Table
from sqlalchemy import event
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from sa_sessions.purge import PK_WALK_MIN_DENSITY
from sa_sessions.purge import purge_expired_rows

from .conftest import SERVER_DB_KINDS
from .test_purge import remaining_ids

UTC = timezone.utc
MYSQL_ONLY = [p for p in SERVER_DB_KINDS if p.id == "mysql"]


def fixed_id(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def add_fixed_rows(
    engine: Engine, table: Table, *, expired: int, live: int
) -> tuple[set[str], set[str]]:
    """Rows with fixed ids; ``(expired ids, live ids)``.

    The expired rows expired a minute apart, the larger the id the longer ago.
    """
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    expired_ids = {fixed_id(f"expired-{i}") for i in range(expired)}
    live_ids = {fixed_id(f"live-{i}") for i in range(live)}
    for i, row_id in enumerate(sorted(expired_ids)):
        rows.append(_row(row_id, now - timedelta(hours=1, minutes=i)))
    for row_id in live_ids:
        rows.append(_row(row_id, now + timedelta(days=1)))
    with engine.begin() as conn:
        conn.execute(insert(table), rows)
    return expired_ids, live_ids


def _row(row_id: str, expires: datetime) -> dict[str, Any]:
    return {
        "id": row_id,
        "data": b"\x10" + bytes(40),
        "created_at": expires - timedelta(days=2),
        "updated_at": expires - timedelta(days=2),
        "expires_at": expires,
        "version": 1,
        "user_id": None,
    }


@dataclass
class Sent:
    """The statements an engine ran, with their parameters, classified."""

    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def kind(self, statement: str) -> str:
        flat = " ".join(statement.split()).upper()
        if flat.startswith("DELETE"):
            return "delete"
        if flat.startswith("SELECT") and "ORDER BY" in flat:
            return (
                "key window"
                if flat.split("ORDER BY")[1].strip().endswith(".ID LIMIT %S")
                else "ids"
            )
        return "other"

    def of(self, kind: str) -> list[tuple[str, tuple[Any, ...]]]:
        return [(s, p) for s, p in self.statements if self.kind(s) == kind]

    def kinds(self) -> list[str]:
        return [k for k in (self.kind(s) for s, _ in self.statements) if k != "other"]

    def deleted_ids(self) -> list[list[str]]:
        """The ids of each DELETE, as sent."""
        return [[str(p) for p in params] for _, params in self.of("delete")]


@contextmanager
def sending(
    engine: Engine, before: Callable[[str, tuple[Any, ...]], None] | None = None
) -> Iterator[Sent]:
    sent = Sent()

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        params = tuple(parameters) if isinstance(parameters, (list, tuple)) else ()
        if before is not None:
            before(statement, params)
        sent.statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def table(model: type[Any]) -> Table:
    t = model.__table__
    assert isinstance(t, Table)
    return t


# --------------------------------------------------------------------------- walks


@pytest.mark.parametrize("db_kind", MYSQL_ONLY, indirect=True)
def test_a_backlog_is_deleted_in_primary_key_order(engine: Engine, table: Table) -> None:
    expired, live = add_fixed_rows(engine, table, expired=80, live=20)
    with sending(engine) as sent:
        report = purge_expired_rows(engine, table, batch_size=5)
    assert (report.deleted, report.finished) == (80, True)
    assert remaining_ids(engine, table) == live
    # The oldest batch through the index, the rest walked in windows of 50 keys, then a
    # last batch through the index that finds nothing left.
    kinds = sent.kinds()
    assert kinds[:2] == ["ids", "delete"] and kinds[-1] == "ids"
    assert kinds.count("key window") == 2  # 95 rows left after the first batch
    assert report.batches == 1 + 75 // 5 + 1
    batches = sent.deleted_ids()
    assert all(len(ids) <= 5 for ids in batches)
    walked = [row_id for ids in batches[1:] for row_id in ids]
    assert walked == sorted(walked) and set(walked) | set(batches[0]) == expired
    assert set(batches[0]) == set(sorted(expired)[-5:])  # the oldest: see add_fixed_rows


@pytest.mark.parametrize("db_kind", MYSQL_ONLY, indirect=True)
def test_a_sparse_table_stays_on_the_index(engine: Engine, table: Table) -> None:
    expired, live = add_fixed_rows(engine, table, expired=30, live=400)
    with engine.connect() as conn:
        first_window = list(conn.scalars(select(table.c.id).order_by(table.c.id).limit(50)))
    assert len(expired & set(first_window)) < PK_WALK_MIN_DENSITY * 50  # the fixed ids say so
    with sending(engine) as sent:
        report = purge_expired_rows(engine, table, batch_size=5)
    assert (report.deleted, report.batches, report.finished) == (30, 7, True)
    assert remaining_ids(engine, table) == live
    assert sent.kinds().count("key window") == 1  # one look, then back to the index
    # Through the index from the oldest expiry (again after the look at the keys), then
    # each batch from the expiry where the previous one stopped.
    cursors = [">=" in statement for statement, _ in sent.of("ids")]
    assert cursors == [False, False, True, True, True, True, True]
    assert [len(ids) for ids in sent.deleted_ids()] == [5] * 6


def explainer(engine: Engine, plans: dict[str, list[dict[str, Any]]]) -> Callable[..., None]:
    """A ``sending`` hook: EXPLAIN the first statement of each kind on another connection."""

    def explain(statement: str, params: tuple[Any, ...]) -> None:
        kind = Sent().kind(statement)
        if kind == "other" or kind in plans:
            return
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("EXPLAIN " + statement, params)
            names = [d[0] for d in cursor.description]
            plans[kind] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            raw.close()

    return explain


@pytest.mark.parametrize("db_kind", MYSQL_ONLY, indirect=True)
def test_plans_on_a_sparse_table(engine: Engine, table: Table) -> None:
    add_fixed_rows(engine, table, expired=60, live=1500)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {table.name}").all()
    plans: dict[str, list[dict[str, Any]]] = {}
    with sending(engine, explainer(engine, plans)):
        assert purge_expired_rows(engine, table, batch_size=10).deleted == 60
    (ids,) = plans["ids"]  # covering range scan of the index, in index order
    assert ids["key"] == f"ix_{table.name}_expires_at" and ids["type"] == "range"
    assert "Using index" in ids["Extra"] and "filesort" not in ids["Extra"]
    (delete,) = plans["delete"]  # by primary key: no lock on the expires_at range
    assert delete["key"] == "PRIMARY" and delete["type"] == "range"


@pytest.mark.parametrize("db_kind", MYSQL_ONLY, indirect=True)
def test_plans_on_a_backlog(engine: Engine, table: Table) -> None:
    add_fixed_rows(engine, table, expired=600, live=200)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {table.name}").all()
    plans: dict[str, list[dict[str, Any]]] = {}
    with sending(engine, explainer(engine, plans)) as sent:
        assert purge_expired_rows(engine, table, batch_size=10).deleted == 600
    assert sent.kinds().count("key window") == 8  # 790 rows in windows of 100
    (window,) = plans["key window"]  # the primary key in order, no sort
    assert window["key"] == "PRIMARY" and "filesort" not in (window["Extra"] or "")
    (delete,) = plans["delete"]
    assert delete["key"] == "PRIMARY" and delete["type"] == "range"


# --------------------------------------------------------------------------- re-checks


@pytest.mark.parametrize("db_kind", SERVER_DB_KINDS, indirect=True)
def test_a_session_renewed_before_the_delete_stays(engine: Engine, table: Table) -> None:
    expired, live = add_fixed_rows(engine, table, expired=10, live=2)
    renewed = min(expired)

    def renew(statement: str, params: tuple[Any, ...]) -> None:
        if statement.lstrip().upper().startswith("DELETE") and not done:
            done.append(True)  # another request saves the session just before the DELETE
            with engine.begin() as conn:
                conn.execute(
                    update(table)
                    .where(table.c.id == renewed)
                    .values(expires_at=datetime.now(UTC) + timedelta(days=1))
                )

    done: list[bool] = []
    with sending(engine, renew):
        report = purge_expired_rows(engine, table, batch_size=10)
    assert done and report.deleted == 9 and report.finished
    assert remaining_ids(engine, table) == live | {renewed}


@pytest.mark.parametrize("db_kind", MYSQL_ONLY, indirect=True)
def test_a_renewal_during_the_walk_does_not_end_it(engine: Engine, table: Table) -> None:
    expired, live = add_fixed_rows(engine, table, expired=80, live=20)
    renewed: list[str] = []

    def renew(statement: str, params: tuple[Any, ...]) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)
        if len(deletes) == 3 and not renewed:  # the walk's second batch, ids already read
            renewed.append(str(params[0]))
            with engine.begin() as conn:
                conn.execute(
                    update(table)
                    .where(table.c.id == renewed[0])
                    .values(expires_at=datetime.now(UTC) + timedelta(days=1))
                )

    deletes: list[str] = []
    with sending(engine, renew):
        report = purge_expired_rows(engine, table, batch_size=5)
    assert renewed and renewed[0] in expired
    assert (report.deleted, report.finished) == (79, True)  # a short batch is not the end
    assert remaining_ids(engine, table) == live | set(renewed)


@pytest.mark.parametrize("db_kind", MYSQL_ONLY, indirect=True)
def test_rows_expiring_behind_the_walk_are_deleted_at_the_end(engine: Engine, table: Table) -> None:
    expired, live = add_fixed_rows(engine, table, expired=80, live=20)
    first_live = min(live)
    assert first_live < max(expired)

    def expire(statement: str, params: tuple[Any, ...]) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)
        if len(deletes) == 10 and not done:
            assert min(params) > first_live  # the walk is past it by now
            done.append(True)
            with engine.begin() as conn:
                conn.execute(
                    update(table)
                    .where(table.c.id == first_live)
                    .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )

    deletes: list[str] = []
    done: list[bool] = []
    with sending(engine, expire) as sent:
        report = purge_expired_rows(engine, table, batch_size=5)
    assert done and (report.deleted, report.finished) == (81, True)
    assert remaining_ids(engine, table) == live - {first_live}
    assert first_live in sent.deleted_ids()[-1]  # found by the closing batch through the index
