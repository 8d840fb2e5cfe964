"""Alembic autogenerate with :mod:`sa_sessions.alembic`, as docs/alembic.md tells it.

Each database test builds a real Alembic project in a temporary directory
(``alembic init``, the README's model, ``env.py`` changed by the two blocks of
docs/alembic.md, read from the file), runs the ``alembic`` command line against
a private database (SQLite file, a MariaDB database, a PostgreSQL schema, each
named per test and dropped afterwards: autogenerate compares the whole database,
so it must never see another test's tables), online and offline.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import create_engine
from sqlalchemy import insert
from sqlalchemy import inspect
from sqlalchemy import select
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import oracle
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.types import TypeEngine

from sa_sessions import SessionModel
from sa_sessions.alembic import process_revision_directives
from sa_sessions.alembic import render_item
from sa_sessions.model import SessionBlob
from sa_sessions.model import UtcDateTime
from sa_sessions.model import session_table

from .conftest import MYSQL_URL
from .conftest import POSTGRES_URL
from .conftest import make_engine

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "alembic.md").read_text(encoding="utf-8")

#: The model of docs/model.md ("Your model, your table"; also in the README's "Your
#: model, on real servers"), as the project's myapp/models.py, to which the recipe of
#: docs/alembic.md ("The recipe") is applied.
MODELS = """\
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from sa_sessions import SessionModel


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)


class WebSession(SessionModel, Base):
    __tablename__ = "web_sessions"
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
"""


class _Base(DeclarativeBase):
    pass


class _User(_Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)


class _WebSession(SessionModel, _Base):
    """The same model in this process, to write and read rows of the migrated table."""

    __tablename__ = "web_sessions"
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)


SESSIONS = session_table(_WebSession)


def doc_block(marker: str) -> str:
    match = re.search(rf"<!-- {marker}:[^>]*-->\s*```python\n(.*?)```", DOC, re.S)
    assert match is not None, f"docs/alembic.md has no code block after the {marker} marker"
    return match.group(1)


# --------------------------------------------------------------------------- render_item


def _autogen_context() -> AutogenContext:
    migration = MigrationContext.configure(
        dialect_name="sqlite", opts={"sqlalchemy_module_prefix": "sa."}
    )
    return AutogenContext(migration, autogenerate=False)


DIALECTS: list[Dialect] = [
    sqlite.dialect(),
    mysql.dialect(),  # type: ignore[no-untyped-call]
    make_url("mariadb://").get_dialect()(),
    postgresql.dialect(),  # type: ignore[no-untyped-call]
    oracle.dialect(),  # type: ignore[no-untyped-call]
]


@pytest.mark.parametrize("library_type", [SessionBlob(), UtcDateTime()], ids=type)
@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_rendered_type_is_the_library_types_ddl(
    library_type: TypeEngine[Any], dialect: Dialect
) -> None:
    """The text in the migration makes the very column the library type makes."""
    context = _autogen_context()
    rendered = render_item("type", library_type, context)
    assert isinstance(rendered, str) and "sa_sessions" not in rendered
    assert context.imports == {
        "from sqlalchemy.dialects import mysql",
        "from sqlalchemy.dialects import postgresql",
    }
    namespace = {"sa": sqlalchemy, "mysql": mysql, "postgresql": postgresql}
    frozen = eval(rendered, namespace)  # what the migration evaluates
    assert frozen.compile(dialect=dialect) == library_type.compile(dialect=dialect)


def test_render_item_leaves_everything_else_to_alembic() -> None:
    context = _autogen_context()

    class LongerBlob(SessionBlob):  # a subclass may render other DDL
        cache_ok = True

    assert render_item("type", sqlalchemy.Integer(), context) is False
    assert render_item("type", LongerBlob(), context) is False
    assert render_item("column", SESSIONS.c.data, context) is False
    assert render_item("index", Index("ix", "expires_at"), context) is False
    assert context.imports == set()


def test_render_item_uses_the_configured_prefix() -> None:
    migration = MigrationContext.configure(
        dialect_name="sqlite", opts={"sqlalchemy_module_prefix": "sqlalchemy."}
    )
    rendered = render_item("type", UtcDateTime(), AutogenContext(migration, autogenerate=False))
    assert isinstance(rendered, str) and rendered.startswith("sqlalchemy.DateTime().with_variant(")


# --------------------------------------------------------------------------- revision directives


def _script(upgrade: list[ops.MigrateOperation], downgrade: list[ops.MigrateOperation]) -> Any:
    return ops.MigrationScript("rev", ops.UpgradeOps(upgrade), ops.DowngradeOps(downgrade))


def test_index_drops_go_with_their_table() -> None:
    downgrade: list[ops.MigrateOperation] = [
        ops.ModifyTableOps(
            "web_sessions",
            [
                ops.DropIndexOp("ix_user_id", "web_sessions"),
                ops.DropIndexOp("ix_exp", "web_sessions"),
            ],
        ),
        ops.DropTableOp("web_sessions"),
        ops.ModifyTableOps("other", [ops.DropIndexOp("ix_other", "other")]),
        ops.DropIndexOp("ix_top", "web_sessions"),
        ops.ModifyTableOps(
            "web_sessions",
            [ops.DropIndexOp("ix_s", "web_sessions", schema="s")],
            schema="s",
        ),
    ]
    upgrade: list[ops.MigrateOperation] = [
        ops.ModifyTableOps("web_sessions", [ops.DropIndexOp("ix_user_id", "web_sessions")]),
        ops.DropTableOp("web_sessions"),
    ]
    script = _script(upgrade, downgrade)
    process_revision_directives(MigrationContext.configure(dialect_name="mysql"), "rev", [script])
    assert [type(op).__name__ for op in script.upgrade_ops.ops] == ["DropTableOp"]
    kept = script.downgrade_ops.ops
    assert [type(op).__name__ for op in kept] == ["DropTableOp", "ModifyTableOps", "ModifyTableOps"]
    # Another table, and a table of the same name in another schema, keep theirs.
    assert [(op.table_name, op.schema) for op in kept[1:]] == [
        ("other", None),
        ("web_sessions", "s"),
    ]


def test_index_drops_without_a_table_drop_stay() -> None:
    only_index = ops.ModifyTableOps("web_sessions", [ops.DropIndexOp("ix", "web_sessions")])
    script = _script([only_index], [])
    process_revision_directives(MigrationContext.configure(dialect_name="mysql"), "rev", [script])
    assert script.upgrade_ops.ops == [only_index] and len(only_index.ops) == 1


# --------------------------------------------------------------------------- a real project


@pytest.fixture
def private_url(db_kind: str, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of this test alone, dropped afterwards."""
    name = f"sa_alembic_{os.getpid()}_{secrets.token_hex(4)}"
    if db_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    admin = make_engine(db_kind)
    if db_kind == "mysql":
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name}"
        url = make_url(MYSQL_URL).set(database=name)
    else:
        create, drop = f"CREATE SCHEMA {name}", f"DROP SCHEMA IF EXISTS {name} CASCADE"
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
    with admin.begin() as conn:
        conn.exec_driver_sql(create)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(drop)
        admin.dispose()


@dataclass
class Project:
    """An ``alembic init`` project with the README's model and the documented env.py."""

    path: Path
    url: str

    def alembic(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, f"alembic {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        return proc

    def autogenerate(self, message: str) -> Path:
        before = set(self.versions.glob("*.py"))
        self.alembic("revision", "--autogenerate", "-m", message)
        [created] = set(self.versions.glob("*.py")) - before
        return created

    @property
    def versions(self) -> Path:
        return self.path / "migrations" / "versions"

    def engine(self) -> Engine:
        return create_engine(self.url)


@pytest.fixture
def project(private_url: str, tmp_path: Path) -> Project:
    path = tmp_path / "project"
    path.mkdir()
    command.init(Config(str(path / "alembic.ini")), str(path / "migrations"))
    ini = path / "alembic.ini"
    text, replaced = re.subn(
        r"^sqlalchemy\.url = .*$",
        lambda _: "sqlalchemy.url = " + private_url.replace("%", "%%"),
        ini.read_text(),
        flags=re.M,
    )
    assert replaced == 1
    ini.write_text(text)
    (path / "myapp").mkdir()
    (path / "myapp" / "__init__.py").write_text("")
    (path / "myapp" / "models.py").write_text(MODELS)
    env_py = path / "migrations" / "env.py"
    env = env_py.read_text()
    # The recipe of docs/alembic.md, as it is written there.
    assert env.count("target_metadata = None") == 1 and env.count("context.configure(") == 2
    env = env.replace("target_metadata = None", doc_block("alembic-env-imports").strip())
    env = env.replace(
        "context.configure(", "context.configure(\n" + doc_block("alembic-env-configure")
    )
    env_py.write_text(env)
    return Project(path, private_url)


def _body(source: str, function: str) -> list[str]:
    """The statements of a function of a migration, docstring left out."""
    tree = ast.parse(source)
    [node] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    statements = node.body[1:] if ast.get_docstring(node) else node.body
    return [ast.unparse(statement) for statement in statements]


def _check_migration(text: str) -> None:
    """Importable without sa_sessions, with the dialect types, and a clean downgrade."""
    assert "sa_sessions" not in text
    assert "from sqlalchemy.dialects import mysql" in text
    assert "from sqlalchemy.dialects import postgresql" in text
    assert "mysql.MEDIUMBLOB()" in text and "postgresql.BYTEA()" in text
    assert "mysql.DATETIME(fsp=6)" in text and "postgresql.TIMESTAMP(timezone=True)" in text
    compile(text, "migration", "exec")
    downgrade = _body(text, "downgrade")
    assert not any("drop_index" in line for line in downgrade), downgrade
    assert downgrade == ["op.drop_table('web_sessions')", "op.drop_table('users')"]


def _check_schema(engine: Engine) -> None:
    """The migrated table has the library's column types and holds a large session."""
    engine.dispose()
    inspector = inspect(engine)
    assert {"users", "web_sessions"} <= set(inspector.get_table_names())
    columns = {c["name"]: c["type"] for c in inspector.get_columns("web_sessions")}
    for name in ("data", "created_at", "updated_at", "expires_at"):
        expected = SESSIONS.c[name].type.compile(dialect=engine.dialect)
        assert columns[name].compile(dialect=engine.dialect) == expected, name
    indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("web_sessions")}
    assert indexes["ix_web_sessions_expires_at"] == ["expires_at"]
    assert indexes["ix_web_sessions_user_id"] == ["user_id"]
    [key] = inspector.get_foreign_keys("web_sessions")
    assert (key["referred_table"], key["constrained_columns"]) == ("users", ["user_id"])
    moment = datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=timezone.utc)
    blob = secrets.token_bytes(100_000)  # over MySQL's 64 KiB BLOB
    with engine.begin() as conn:
        conn.execute(insert(_User.__table__).values(id=7))
        conn.execute(
            insert(SESSIONS).values(
                id="a" * 64,
                data=blob,
                created_at=moment,
                updated_at=moment,
                expires_at=moment,
                version=1,
                user_id=7,
            )
        )
        row = conn.execute(select(SESSIONS)).one()
        assert (row.data, row.expires_at, row.user_id) == (blob, moment, 7)
        conn.execute(SESSIONS.delete())
        conn.execute(_User.__table__.delete())
    engine.dispose()


def _only_alembic_version(engine: Engine) -> bool:
    engine.dispose()
    return set(inspect(engine).get_table_names()) == {"alembic_version"}


def test_autogenerate_upgrade_again_and_downgrade(project: Project) -> None:
    migration = project.autogenerate("sessions")
    _check_migration(migration.read_text())
    project.alembic("upgrade", "head")
    engine = project.engine()
    _check_schema(engine)
    again = project.autogenerate("nothing")
    source = again.read_text()
    assert _body(source, "upgrade") == ["pass"], source  # no type or index diffs
    assert _body(source, "downgrade") == ["pass"], source
    again.unlink()
    project.alembic("downgrade", "base")
    assert _only_alembic_version(engine)
    project.alembic("upgrade", "head")  # and back up: the downgrade left nothing behind
    _check_schema(engine)
    project.alembic("downgrade", "base")
    assert _only_alembic_version(engine)
    engine.dispose()


#: DDL that the offline SQL must hold, per database.
OFFLINE_DDL = {
    "sqlite": ["data BLOB NOT NULL", "expires_at DATETIME NOT NULL"],
    "mysql": ["data MEDIUMBLOB NOT NULL", "expires_at DATETIME(6) NOT NULL"],
    "postgres": ["data BYTEA NOT NULL", "expires_at TIMESTAMP WITH TIME ZONE NOT NULL"],
}


def _run_script(engine: Engine, script: str) -> None:
    """Run SQL that ``alembic ... --sql`` printed, statement by statement."""
    statements = [
        "\n".join(line for line in chunk.splitlines() if not line.startswith("--")).strip()
        for chunk in re.split(r";\s*$", script, flags=re.M)
    ]
    with engine.begin() as conn:
        for statement in statements:
            if statement and statement.upper() not in {"BEGIN", "BEGIN TRANSACTION", "COMMIT"}:
                conn.exec_driver_sql(statement)
    engine.dispose()


def test_offline_sql_upgrades_and_downgrades(project: Project, db_kind: str) -> None:
    project.autogenerate("sessions")
    engine = project.engine()
    with engine.begin() as conn:  # autogenerate made it; the SQL below makes it again
        conn.exec_driver_sql("DROP TABLE alembic_version")
    upgrade = project.alembic("upgrade", "head", "--sql").stdout
    for ddl in OFFLINE_DDL[db_kind]:
        assert ddl in upgrade
    assert "CREATE INDEX ix_web_sessions_user_id ON web_sessions (user_id)" in upgrade
    _run_script(engine, upgrade)
    _check_schema(engine)
    check = project.alembic("check")  # the offline DDL is the model's: nothing to do
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    downgrade = project.alembic("downgrade", "head:base", "--sql").stdout
    assert "DROP INDEX" not in downgrade.upper()
    _run_script(engine, downgrade)
    assert _only_alembic_version(engine)
    engine.dispose()


@pytest.mark.mysql
def test_mariadb_refuses_to_drop_an_index_its_foreign_key_uses(tmp_path: Path) -> None:
    """Why process_revision_directives exists (docs/alembic.md): error 1553."""
    admin = make_engine("mysql")
    name = f"sa_alembic_{os.getpid()}_{secrets.token_hex(4)}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine = create_engine(make_url(MYSQL_URL).set(database=name))
    try:
        _Base.metadata.create_all(engine)  # CREATE TABLE with the key, then CREATE INDEX
        with engine.connect() as conn:
            keys = {row[2] for row in conn.exec_driver_sql("SHOW INDEX FROM web_sessions")}
            assert keys == {"PRIMARY", "ix_web_sessions_expires_at", "ix_web_sessions_user_id"}
            with pytest.raises(OperationalError) as refused:
                conn.exec_driver_sql("DROP INDEX ix_web_sessions_user_id ON web_sessions")
            assert refused.value.orig.args[0] == 1553  # type: ignore[union-attr]
            conn.exec_driver_sql("DROP TABLE web_sessions")  # takes its indexes along
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()
