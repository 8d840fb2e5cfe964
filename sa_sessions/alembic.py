"""Alembic autogenerate hooks for tables built on :class:`~sa_sessions.SessionModel`.

In ``env.py``, pass both hooks to each ``context.configure(...)`` call (online and
offline), as docs/alembic.md shows::

    from sa_sessions.alembic import process_revision_directives
    from sa_sessions.alembic import render_item

    context.configure(..., render_item=render_item,
                      process_revision_directives=process_revision_directives)

:func:`render_item` writes the mixin's column types as the plain SQLAlchemy and
dialect types they stand for, e.g.::

    sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), 'mysql', 'mariadb')
                    .with_variant(postgresql.BYTEA(), 'postgresql')

and not as ``sa_sessions.model.SessionBlob()``.  Why the dialect types rather
than the library's own (with their import added):

* A migration is a record of DDL that must mean the same thing every time it
  runs.  The library types carry Python-side behaviour (UTC conversion,
  dialect choice) that may change, move or be renamed in a later sa_sessions;
  a migration that imports them would then change its DDL, or stop importing,
  long after it was applied.  The frozen types keep today's DDL in the file.
* The migration needs only SQLAlchemy and Alembic, not the application's
  dependencies, the same as every other table's migration.
* Nothing is lost: a migration only creates and alters columns; the conversions
  of the TypeDecorators matter to the application, which uses the model.
* A second autogenerate stays empty: Alembic compares the reflected columns with
  the model's types compiled for the live dialect, which are these variants.

:func:`process_revision_directives` drops the ``op.drop_index(...)`` calls that
autogenerate writes before an ``op.drop_table(...)`` of the same table.  Dropping
a table drops its indexes on every database anyway, and on MySQL/MariaDB the
separate ``DROP INDEX`` fails (error 1553) when the index is the one a foreign
key of the table uses, as with the ``user_id`` column of the README's model:
the downgrade of the migration that created the table could never run.
"""

from __future__ import annotations

from typing import Any
from typing import Literal

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import DropIndexOp
from alembic.operations.ops import DropTableOp
from alembic.operations.ops import MigrateOperation
from alembic.operations.ops import MigrationScript
from alembic.operations.ops import ModifyTableOps
from alembic.operations.ops import OpContainer
from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime
from sqlalchemy import LargeBinary
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from .model import MYSQL_DIALECTS
from .model import SessionBlob
from .model import UtcDateTime

__all__ = ["process_revision_directives", "render_item"]

_Variants = list[tuple[TypeEngine[Any], str]]


def _variants(mysql_type: TypeEngine[Any], postgresql_type: TypeEngine[Any]) -> _Variants:
    return [
        *((mysql_type, name) for name in sorted(MYSQL_DIALECTS)),
        (postgresql_type, "postgresql"),
    ]


#: What each library type is in DDL: a portable base type, then each dialect type
#: with a dialect that uses it.  tests/test_alembic.py checks that the rendered text
#: compiles exactly as the library type does on each dialect.
_DDL: dict[type[TypeEngine[Any]], tuple[TypeEngine[Any], _Variants]] = {
    SessionBlob: (LargeBinary(), _variants(mysql.MEDIUMBLOB(), postgresql.BYTEA())),
    UtcDateTime: (
        DateTime(),
        _variants(mysql.DATETIME(fsp=6), postgresql.TIMESTAMP(timezone=True)),
    ),
}


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render sa_sessions' column types as dialect types; ``False`` (Alembic's own) otherwise."""
    if type_ != "type":
        return False
    ddl = _DDL.get(type(obj))  # the exact class: a subclass may well render other DDL
    if ddl is None:
        return False
    base, variants = ddl
    prefix = autogen_context.opts.get("sqlalchemy_module_prefix") or ""
    # One with_variant() per distinct dialect type, naming every dialect that uses it.
    dialects_of: dict[str, list[str]] = {}
    for variant, dialect in variants:
        dialects_of.setdefault(_dialect_type(variant, autogen_context), []).append(dialect)
    return f"{prefix}{base!r}" + "".join(
        f".with_variant({rendered}, {', '.join(map(repr, names))})"
        for rendered, names in dialects_of.items()
    )


def _dialect_type(type_: TypeEngine[Any], autogen_context: AutogenContext) -> str:
    """``mysql.MEDIUMBLOB()``, with ``from sqlalchemy.dialects import mysql`` added."""
    package = type(type_).__module__.split(".")[2]  # sqlalchemy.dialects.<package>.types
    autogen_context.imports.add(f"from sqlalchemy.dialects import {package}")
    return f"{package}.{type_!r}"


def process_revision_directives(
    context: MigrationContext, revision: object, directives: list[MigrationScript]
) -> None:
    """Remove ``drop_index`` calls on tables the same migration drops (both directions)."""
    for script in directives:
        for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
            _drop_indexes_with_their_tables(container)


def _drop_indexes_with_their_tables(container: OpContainer) -> None:
    dropped = {(op.schema, op.table_name) for op in container.ops if isinstance(op, DropTableOp)}
    if not dropped:
        return
    kept: list[MigrateOperation] = []
    for op in container.ops:
        if isinstance(op, ModifyTableOps) and (op.schema, op.table_name) in dropped:
            op.ops = [inner for inner in op.ops if not isinstance(inner, DropIndexOp)]
            if op.is_empty():
                continue
        elif isinstance(op, DropIndexOp) and (op.schema, op.table_name) in dropped:
            continue
        kept.append(op)
    container.ops = kept
