"""The session table as the store uses it: prepared statements in short transactions.

Everything here speaks SQL and nothing else: which statements run, in which
transaction, and how a driver's failure reaches the store.  A broken connection
becomes :class:`~sa_sessions.SessionBackendUnavailable`; a constraint the row breaks
becomes :class:`~sa_sessions.SessionIntegrityError` (or
:class:`~sa_sessions.SessionIdTaken` when it is the primary key).  The store
(:mod:`sa_sessions.store`) decides what to read and write and talks to the cache.

Rows are only INSERTed (new sessions) or UPDATEd with ``WHERE id = ? AND version = ?``:
never upserted, so a slow request cannot bring back a row another one deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import Table
from sqlalchemy import bindparam
from sqlalchemy import delete
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.sql.elements import ColumnElement

from .exceptions import SessionBackendUnavailable
from .exceptions import SessionIdTaken
from .exceptions import SessionIntegrityError
from .ids import log_id

#: Parameter names of the write statements; derived columns add ``x_<name>``.
Params = dict[str, Any]


@contextmanager
def _typed_errors() -> Iterator[None]:
    """Driver failures as the library's own errors (no values from the row quoted)."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise SessionBackendUnavailable(
            f"session database unavailable ({type(exc.orig).__name__})", exc
        ) from exc
    except sa_exc.IntegrityError as exc:
        raise SessionIntegrityError(
            f"the database refused the session row ({type(exc.orig).__name__}); "
            "check the values your derived columns compute",
            exc,
        ) from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise SessionBackendUnavailable("session database connection lost", exc) from exc
        raise


class Locked:
    """One transaction holding a session row's lock: read it, then update it."""

    def __init__(self, rows: SessionRows, conn: Connection) -> None:
        self._rows = rows
        self._conn = conn

    def read(self, hashed: str) -> tuple[bytes, int] | None:
        """The row's ``(blob, version)``, locked until the transaction ends."""
        row = self._conn.execute(self._rows.select_for_update, {"h": hashed}).first()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def update(self, params: Params) -> bool:
        """The versioned UPDATE; False when the version moved (no row locks: SQLite)."""
        return bool(self._conn.execute(self._rows.update, params).rowcount == 1)


class SessionRows:
    """The statements of one session table, and the transactions they run in."""

    def __init__(self, engine: Engine, table: Table, derived: Iterable[str]) -> None:
        self.engine = engine
        self.table = table
        # A COMMIT leaves the pool a ROLLBACK to send on return, so reads end in that
        # ROLLBACK instead: one round trip less.  Not on PostgreSQL, whose drivers skip
        # the pool's ROLLBACK outside a transaction (nothing to save) and where psycopg
        # drops its prepared statements on every ROLLBACK.
        self._reads_commit = engine.dialect.name == "postgresql"
        c = table.c
        by_id = c.id == bindparam("h")
        extra: dict[str, Any] = {name: bindparam(f"x_{name}") for name in derived}
        self.select = select(c.data, c.version).where(by_id)
        self.select_for_update = self.select.with_for_update()
        self.select_version = select(c.version).where(by_id)
        self.insert = insert(table).values(
            id=bindparam("h"),
            data=bindparam("b_data"),
            version=bindparam("b_version"),
            created_at=bindparam("b_now"),
            updated_at=bindparam("b_now"),
            expires_at=bindparam("b_expires"),
            **extra,
        )
        self.update = (
            update(table)
            .where(by_id, c.version == bindparam("b_old_version"))
            .values(
                data=bindparam("b_data"),
                version=bindparam("b_version"),
                updated_at=bindparam("b_now"),
                expires_at=bindparam("b_expires"),
                **extra,
            )
        )
        self.delete = delete(table).where(by_id)
        self.delete_version = delete(table).where(by_id, c.version == bindparam("v"))

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with _typed_errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A read whose transaction ends in a COMMIT on PostgreSQL, else in the pool's
        ROLLBACK when the connection goes back."""
        with _typed_errors():
            opened = self.engine.begin() if self._reads_commit else self.engine.connect()
            with opened as conn:
                yield conn

    # ------------------------------------------------------------------ reads

    def read(self, hashed: str) -> tuple[bytes, int] | None:
        """The row's ``(blob, version)``, or None."""
        with self._reading() as conn:
            row = conn.execute(self.select, {"h": hashed}).first()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def version(self, hashed: str) -> int | None:
        """The row's version by primary key (no blob), or None when there is no row."""
        with self._reading() as conn:
            version = conn.scalar(self.select_version, {"h": hashed})
        return None if version is None else int(version)

    # ------------------------------------------------------------------ writes

    def insert_row(self, params: Params) -> None:
        """INSERT a new row.

        :raises SessionIdTaken: a row with that id exists (it is never merged into).
        :raises SessionIntegrityError: another constraint refused the row.
        """
        try:
            with self._writing() as conn:
                conn.execute(self.insert, params)
        except SessionIntegrityError:
            if self.version(params["h"]) is not None:
                raise SessionIdTaken(
                    f"session {log_id(params['h'])} already has a row; store it under a fresh id"
                ) from None
            raise

    def update_row(self, params: Params) -> bool:
        """The versioned UPDATE; False when another writer moved the version (or the row
        is gone)."""
        with self._writing() as conn:
            return bool(conn.execute(self.update, params).rowcount == 1)

    @contextmanager
    def locked(self) -> Iterator[Locked]:
        """A transaction for a merge: the row read under its lock, then updated."""
        with self._writing() as conn:
            yield Locked(self, conn)

    def delete_row(self, hashed: str, version: int | None = None) -> bool:
        """DELETE the row (only that version, if given); True when a row went."""
        with self._writing() as conn:
            if version is None:
                return bool(conn.execute(self.delete, {"h": hashed}).rowcount)
            return bool(conn.execute(self.delete_version, {"h": hashed, "v": version}).rowcount)

    def delete_matching(self, criteria: Iterable[ColumnElement[bool]], limit: int) -> list[str]:
        """DELETE up to ``limit`` rows matching ``criteria``; their ids."""
        c = self.table.c
        with self._writing() as conn:
            ids = list(conn.scalars(select(c.id).where(*criteria).limit(limit)))
            if ids:
                conn.execute(delete(self.table).where(c.id.in_(ids)))
        return ids

    def select_matching(
        self,
        criteria: Iterable[ColumnElement[bool]],
        columns: Iterable[Any],
        order_by: Any = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching ``criteria``, as dicts of the given columns (never ``data``)."""
        query = select(*columns).where(*criteria)
        if order_by is not None:
            query = query.order_by(order_by)
        if limit is not None:
            query = query.limit(limit)
        with self._reading() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
