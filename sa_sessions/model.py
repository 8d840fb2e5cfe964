"""The :class:`SessionModel` declarative mixin: sessions as rows of YOUR table.

Mix it into your own declarative ``Base``; your metadata owns the table, so
Alembic autogenerate sees it like any other model (with the two hooks of
:mod:`sa_sessions.alembic` in ``env.py``: docs/alembic.md), and you can add your
own columns, foreign keys and relationships next to the session's::

    from sqlalchemy import ForeignKey
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
    from sa_sessions import SessionModel

    class Base(DeclarativeBase):
        pass

    class WebSession(SessionModel, Base):
        __tablename__ = "web_sessions"
        user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)

.. rubric:: Columns

``id``
    SHA-256 hex of the session id (the raw id is never stored).
``data``
    The sealed blob (MEDIUMBLOB on MySQL/MariaDB, BYTEA on PostgreSQL, BLOB on
    SQLite); only :class:`~sa_sessions.SessionStore` reads it.
``created_at``, ``updated_at``, ``expires_at``
    Aware UTC datetimes on every dialect (``expires_at`` is indexed).
``version``
    Incremented by every save; saves are ``UPDATE ... WHERE version = ?``.

.. rubric:: Querying

``is_expired`` and ``is_active`` are hybrids: on an instance they compare with
the current UTC time, inside a query they compile to SQL with a UTC "now" that
does not depend on the connection's time zone::

    select(func.count()).select_from(WebSession).where(WebSession.is_active)

renders, per dialect, ``expires_at > UTC_TIMESTAMP(6)`` (MySQL/MariaDB),
``expires_at > CURRENT_TIMESTAMP`` (PostgreSQL ``timestamptz``) and
``expires_at > strftime('%Y-%m-%d %H:%M:%f000', 'now')`` (SQLite, where the
column holds UTC text in the same format).  Override the expression in a
subclass (``@SessionModel.is_expired.overrides.expression``) to add a grace period.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy import Integer
from sqlalchemy import LargeBinary
from sqlalchemy import String
from sqlalchemy import Table
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator
from sqlalchemy.types import TypeEngine

from ._clock import UTC
from ._clock import utcnow
from .exceptions import SessionConfigError

MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})


class UtcDateTime(TypeDecorator[datetime]):
    """An aware-UTC datetime on every dialect; naive values are refused.

    ``DateTime(timezone=True)`` silently drops the offset on MySQL/MariaDB and
    SQLite, so values are converted to UTC before binding and tagged UTC on
    the way back.  MySQL/MariaDB get ``DATETIME(6)`` to keep microseconds.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("UtcDateTime needs an aware datetime (got a naive one)")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SessionBlob(TypeDecorator[bytes]):
    """Binary column big enough for large sessions: never MySQL's 64 KiB ``BLOB``.

    The dialect name is checked at DDL/bind time, so ``mysql://`` and
    ``mariadb://`` URLs both get ``MEDIUMBLOB`` (16 MiB).
    """

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.MEDIUMBLOB())
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.BYTEA())
        return dialect.type_descriptor(LargeBinary())


class utc_now(FunctionElement[datetime]):
    """The database's current time in UTC, whatever the connection's time zone.

    Lower-case because it reads like the SQL function it renders.
    """

    type = UtcDateTime()
    inherit_cache = True
    name = "utc_now"


@compiles(utc_now)
def _utc_now_default(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utc_now, "mysql")
@compiles(utc_now, "mariadb")
def _utc_now_mysql(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    # Same text layout as SQLAlchemy's SQLite DATETIME storage, so text comparison is exact.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


class SessionModel:
    """Declarative mixin holding one session per row; see the module docstring."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(SessionBlob(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @hybrid_property
    def is_expired(self) -> bool:
        """True once ``expires_at`` has passed (also usable inside ``where()``)."""
        return self.expires_at <= utcnow()

    @is_expired.inplace.expression
    @classmethod
    def _is_expired_expression(cls) -> ColumnElement[bool]:
        return cls.expires_at <= utc_now()

    @hybrid_property
    def is_active(self) -> bool:
        """True while ``expires_at`` is in the future (also usable inside ``where()``)."""
        return self.expires_at > utcnow()

    @is_active.inplace.expression
    @classmethod
    def _is_active_expression(cls) -> ColumnElement[bool]:
        return cls.expires_at > utc_now()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self.id[:12]}... version={self.version} "
            f"expires_at={self.expires_at.isoformat() if self.expires_at else None}>"
        )


def session_table(model: object) -> Table:
    """The :class:`~sqlalchemy.Table` of a mapped :class:`SessionModel` subclass.

    The one check behind ``SessionStore``, the CLI and :mod:`sa_sessions.analytics`,
    so a wrong model gets the same clear :class:`~sa_sessions.SessionConfigError`
    everywhere instead of an ``AttributeError`` deep inside a query.
    """
    if not isinstance(model, type):
        raise SessionConfigError(
            f"expected a SessionModel subclass, not an instance of {type(model).__name__}"
        )
    if not issubclass(model, SessionModel):
        raise SessionConfigError(f"{model.__name__} is not a SessionModel subclass")
    table = getattr(model, "__table__", None)
    if not isinstance(table, Table):
        raise SessionConfigError(
            f"{model.__name__} is not mapped to a table: mix SessionModel into a "
            "declarative Base and give the class a __tablename__"
        )
    return table
