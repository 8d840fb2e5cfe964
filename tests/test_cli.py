"""``sa-sessions`` through ``main([...])``, ``python -m sa_sessions`` and the console script.

Every subcommand on SQLite (a file), MariaDB and PostgreSQL; every error case
with its exit code and a one-line message, never a traceback.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import ForeignKey
from sqlalchemy import Integer
from sqlalchemy import Table
from sqlalchemy import create_engine
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from sa_sessions import SessionModel
from sa_sessions.cli import ExitCode
from sa_sessions.cli import build_parser
from sa_sessions.cli import main
from sa_sessions.default_model import DefaultSession
from sa_sessions.model import session_table
from sa_sessions.purge import PurgeReport
from sa_sessions.purge import purge_lock

from .conftest import MYSQL_URL
from .conftest import POSTGRES_URL
from .conftest import SERVER_DB_KINDS
from .conftest import make_engine
from .test_purge import FakeTTY
from .test_purge import add_rows
from .test_purge import remaining_ids

ROOT = Path(__file__).resolve().parent.parent
MODEL = "tests.test_cli:CliSession"
#: Per test run, so two runs sharing a database never touch each other's tables.  The
#: CLI processes a test starts import this module too: they get the name from here.
_TABLE_ENV = "SA_SESSIONS_CLI_TEST_TABLE"
TABLE = os.environ.get(_TABLE_ENV) or f"sa_cli_{os.getpid()}_{secrets.token_hex(3)}"


class _Base(DeclarativeBase):
    pass


class CliSession(SessionModel, _Base):
    """A user's model, with a user column (the CLI imports it by --model)."""

    __tablename__ = TABLE
    user_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)


class NotAModel:
    pass


CLI_TABLE = session_table(CliSession)


@pytest.fixture
def db(db_kind: str, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A database URL and an engine on it, with the CLI test table absent."""
    if db_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
        engine = create_engine(url)
    else:
        url = {"mysql": MYSQL_URL, "postgres": POSTGRES_URL}[db_kind]
        engine = make_engine(db_kind)
    _Base.metadata.drop_all(engine)
    yield url, engine
    _Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def filled(db: tuple[str, Engine]) -> tuple[str, Engine]:
    """The CLI table with 25 expired and 5 live rows (3 of user 42)."""
    url, engine = db
    _Base.metadata.create_all(engine)
    add_rows(engine, CLI_TABLE, expired=25, live=2)
    add_rows(engine, CLI_TABLE, live=3, user_id=42)
    return url, engine


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# --------------------------------------------------------------------------- create-table


def test_create_table_then_again(
    db: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = db
    code, out, _ = run(capsys, "create-table", "--db", url, "--model", MODEL)
    assert code == 0 and out.startswith(f"created table {TABLE} in ")
    assert "Alembic" in out
    engine.dispose()  # SQLite: a pooled connection may keep the old schema
    names = {ix["name"] for ix in inspect(engine).get_indexes(TABLE)}
    assert f"ix_{TABLE}_expires_at" in names
    code, out, _ = run(capsys, "create-table", "--db", url, "--model", MODEL)
    assert code == 0 and "already exists" in out


def test_default_model_is_the_sa_sessions_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'default.db'}"
    assert run(capsys, "create-table", "--db", url)[0] == 0
    engine = create_engine(url)
    assert inspect(engine).get_table_names() == ["sa_sessions"]
    table = DefaultSession.__table__
    assert isinstance(table, Table)
    add_rows_default(engine, table)
    code, out, _ = run(capsys, "cleanup", "--db", url)
    assert code == 0 and "deleted 4 expired sessions from sa_sessions" in out
    code, out, _ = run(capsys, "stats", "--db", url, "--json")
    assert json.loads(out)["active"] == 1 and json.loads(out)["top_users"] is None
    engine.dispose()


def add_rows_default(engine: Engine, table: Table) -> None:
    from datetime import datetime
    from datetime import timedelta
    from datetime import timezone

    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        for i, delta in enumerate([-1, -2, -3, -4, 5]):
            conn.execute(
                table.insert().values(
                    id=f"{i:064x}",
                    data=b"x" * 10,
                    created_at=now,
                    updated_at=now,
                    expires_at=now + timedelta(hours=delta),
                    version=1,
                )
            )


# --------------------------------------------------------------------------- cleanup


def test_cleanup_in_batches(filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]) -> None:
    url, engine = filled
    code, out, _ = run(capsys, "cleanup", "--db", url, "--model", MODEL, "--batch-size", "10")
    assert code == 0
    assert out.startswith(f"deleted 25 expired sessions from {TABLE} in ")
    assert out.rstrip().endswith("(3 batches)")
    assert len(remaining_ids(engine, CLI_TABLE)) == 5


def test_cleanup_dry_run(filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]) -> None:
    url, engine = filled
    code, out, _ = run(capsys, "cleanup", "--db", url, "--model", MODEL, "--dry-run")
    assert code == 0
    assert out.strip() == (
        f"dry run: 25 expired sessions would be deleted from {TABLE} (nothing deleted)"
    )
    assert len(remaining_ids(engine, CLI_TABLE)) == 30


def test_cleanup_time_budget(
    filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = filled
    argv = ["cleanup", "--db", url, "--model", MODEL, "--batch-size", "10", "--max-seconds", "0"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "deleted 10 expired sessions" in out
    assert "stopped by the time budget (0s), about 15 left" in out


def test_cleanup_logs_progress_without_a_terminal(
    filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = filled
    argv = ["cleanup", "--db", url, "--model", MODEL, "--batch-size", "5", "--log-every", "2"]
    code, _, err = run(capsys, *argv)
    assert code == 0
    progress = [line for line in err.splitlines() if "purge:" in line]
    assert [line.split(" purge: ")[1].split(" (")[0] for line in progress] == [
        "10 rows deleted in 2 batches",
        "20 rows deleted in 4 batches",
        "25 rows deleted in 6 batches",
    ]


def test_cleanup_draws_a_bar_on_a_terminal(
    filled: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = filled
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    code = main(["cleanup", "--db", url, "--model", MODEL, "--batch-size", "10"])
    assert code == 0
    bar = tty.getvalue().rstrip("\n").split("\r")[-1]
    assert bar.startswith("[########################]   25/25   100%")
    assert "deleted 25" in capsys.readouterr().out


def test_cleanup_quiet(filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = filled
    code, out, err = run(capsys, "cleanup", "--db", url, "--model", MODEL, "-q", "--log-every", "1")
    assert code == 0 and err == "" and "deleted 25" in out


@pytest.fixture
def lock_held(filled: tuple[str, Engine], db_kind: str) -> Iterator[str]:
    """Another cleaner (a thread) holds the lock on the filled table."""
    assert db_kind != "sqlite", "SQLite has no cleaner lock: parametrize with SERVER_DB_KINDS"
    url, engine = filled
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with purge_lock(engine, CLI_TABLE):
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    yield url
    release.set()
    thread.join(10)


@pytest.mark.parametrize("db_kind", SERVER_DB_KINDS, indirect=True)
def test_second_cleaner_exits_at_once(
    lock_held: str, filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "cleanup", "--db", lock_held, "--model", MODEL)
    assert code == ExitCode.ALREADY_RUNNING
    assert out == ""
    assert f"another cleanup of {TABLE} is running; nothing done" in err
    assert len(remaining_ids(filled[1], CLI_TABLE)) == 30


@pytest.mark.parametrize("db_kind", SERVER_DB_KINDS, indirect=True)
def test_second_cleaner_process_exits_at_once(lock_held: str) -> None:
    proc = cli_process("cleanup", "--db", lock_held, "--model", MODEL)
    assert proc.returncode == 7, proc.stderr
    assert "another cleanup" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- stats


def test_stats_json(filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = filled
    code, out, _ = run(capsys, "stats", "--db", url, "--model", MODEL, "--json", "--days", "3")
    assert code == 0
    stats = json.loads(out)
    assert list(stats) == [
        "table",
        "generated_at",
        "active",
        "expired",
        "created_per_day",
        "blob_bytes",
        "oldest_active_created_at",
        "top_users",
    ]
    assert (stats["table"], stats["active"], stats["expired"]) == (TABLE, 5, 25)
    assert [d["created"] for d in stats["created_per_day"]] == [30, 0, 0]  # made 2 days ago
    assert stats["blob_bytes"] == {
        "sessions": 5,
        "p50": 41,
        "p90": 41,
        "p99": 41,
        "max": 41,
        "average": 41.0,
    }
    assert stats["top_users"] == [{"user_id": 42, "sessions": 3}]
    assert stats["oldest_active_created_at"].endswith("+00:00")


def test_stats_table(filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = filled
    code, out, _ = run(capsys, "stats", "--db", url, "--model", MODEL)
    assert code == 0
    assert out.startswith(f"sessions in {TABLE} at ")
    assert "active                               5" in out
    assert "expired (not yet purged)            25" in out
    assert "p50 41 B   p90 41 B   p99 41 B   max 41 B   avg 41 B" in out
    assert len([line for line in out.splitlines() if line.startswith("    20")]) == 7
    assert "    42                           3" in out


def test_database_url_from_the_environment(
    filled: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SA_SESSIONS_DB_URL", filled[0])
    code, out, _ = run(capsys, "cleanup", "--model", MODEL, "--dry-run")
    assert code == 0 and "25 expired sessions would be deleted" in out


# --------------------------------------------------------------------------- errors


def test_exit_codes_are_stable() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "BAD_URL": 3,
        "UNREACHABLE": 4,
        "BAD_MODEL": 5,
        "NO_TABLE": 6,
        "ALREADY_RUNNING": 7,
        "INTERRUPTED": 130,
        "BROKEN_PIPE": 141,
    }


@pytest.mark.parametrize("command", ["cleanup", "stats", "create-table"])
def test_no_database_url(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SA_SESSIONS_DB_URL", raising=False)
    code, _, err = run(capsys, command)
    assert code == ExitCode.USAGE
    assert err == ("sa-sessions: error: no database URL: pass --db URL or set SA_SESSIONS_DB_URL\n")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "bad database URL"),
        ("nosuchdb://localhost/x", "unknown database dialect"),
        ("postgresql+nosuchdriver://localhost/x", "unknown database dialect"),
    ],
)
def test_bad_url(url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "stats", "--db", url)
    assert code == ExitCode.BAD_URL
    assert err.startswith(f"sa-sessions: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-dir/sessions.db",
        pytest.param("postgresql+psycopg://127.0.0.1:1/x", marks=pytest.mark.postgres),
        pytest.param("mysql+mysqldb://root:secret@127.0.0.1:1/x", marks=pytest.mark.mysql),
    ],
)
@pytest.mark.parametrize("command", ["cleanup", "stats", "create-table"])
def test_unreachable_database(command: str, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, command, "--db", url)
    assert code == ExitCode.UNREACHABLE
    assert err.startswith("sa-sessions: error: cannot reach the database ")
    assert "secret" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected package.module:ClassName"),
        ("no_such_module_xyz:Model", "cannot import: No module named 'no_such_module_xyz'"),
        ("tests.test_cli:Missing", "tests.test_cli has no 'Missing'"),
        ("tests.test_cli:NotAModel", "is not a SessionModel subclass"),
        ("sa_sessions.model:SessionModel", "is not mapped to a table"),
        ("broken_models_for_cli:Model", "importing broken_models_for_cli failed: RuntimeError"),
    ],
)
def test_bad_model(
    spec: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "broken_models_for_cli.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    code, _, err = run(capsys, "stats", "--db", "sqlite://", "--model", spec)
    assert code == ExitCode.BAD_MODEL
    assert message in err and err.count("\n") == 1


def test_model_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "myapp_models_for_cli.py").write_text(
        "from sqlalchemy.orm import DeclarativeBase\n"
        "from sa_sessions import SessionModel\n"
        "class Base(DeclarativeBase):\n    pass\n"
        "class WebSession(SessionModel, Base):\n    __tablename__ = 'web_sessions'\n"
    )
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    code, out, _ = run(
        capsys, "create-table", "--db", url, "--model", "myapp_models_for_cli:WebSession"
    )
    assert code == 0 and "created table web_sessions" in out
    assert str(tmp_path) not in sys.path


@pytest.mark.parametrize("command", ["cleanup", "stats"])
def test_missing_table(
    command: str, db: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, command, "--db", db[0], "--model", MODEL)
    assert code == ExitCode.NO_TABLE
    assert f"table {TABLE!r} does not exist" in err
    assert "sa-sessions create-table" in err


def test_argument_errors_are_argparse_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["cleanup", "--batch-size", "0"], ["stats", "--days", "x"], []):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "usage: sa-sessions" in capsys.readouterr().err


@pytest.mark.parametrize("error", [ProgrammingError, OperationalError])
def test_failure_during_a_command_is_reported(
    error: type[DBAPIError],
    filled: tuple[str, Engine],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failing statement (not a lost connection) is exit 1, even as an OperationalError."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise error("DELETE ...", {}, Exception("lock wait timeout exceeded"))

    monkeypatch.setattr("sa_sessions.cli.purge_expired_rows", broken)
    code, _, err = run(capsys, "cleanup", "--db", filled[0], "--model", MODEL)
    assert code == ExitCode.FAILED
    assert err == "sa-sessions: error: database error: lock wait timeout exceeded\n"


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(
            "mysql+mysqldb://root@127.0.0.1:1/x?password=Qs3cr3tQ&charset=utf8mb4",
            marks=pytest.mark.mysql,
        ),
        pytest.param(
            "mysql+mysqldb://root:Qs3cr3tQ@127.0.0.1:1/x?passwd=Qs3cr3tQ",
            marks=pytest.mark.mysql,
        ),
        pytest.param(
            "postgresql+psycopg://u@127.0.0.1:1/x?password=Qs3cr3tQ&sslpassword=Qs3cr3tQ",
            marks=pytest.mark.postgres,
        ),
    ],
)
def test_query_string_password_is_never_printed(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "stats", "--db", url)
    assert code == ExitCode.UNREACHABLE, err
    assert "Qs3cr3tQ" not in out + err
    assert "password=***" in err or ":***@" in err


def test_password_in_a_database_error_is_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A driver that quotes the URL or the bare password in its message shows neither."""
    url = "postgresql+psycopg://app:Qs3cr3tQ@db.invalid/app?sslpassword=Qs3cr3tK"

    def fails(engine: Engine) -> None:
        message = f"password Qs3cr3tQ refused by {url}; key Qs3cr3tK; conninfo password=Qs3cr3tZ"
        raise ProgrammingError("SELECT 1", {}, Exception(message))

    monkeypatch.setattr("sa_sessions.cli.check_connection", fails)
    code, _, err = run(capsys, "stats", "--db", url)
    assert code == ExitCode.FAILED
    assert "Qs3cr3t" not in err
    assert err == (
        "sa-sessions: error: database error: password *** refused by "
        "postgresql+psycopg://app:***@db.invalid/app?sslpassword=***; key ***; "
        "conninfo password=***\n"
    )


def test_library_warnings_are_masked_too(
    filled: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def warns(*args: Any, **kwargs: Any) -> Any:
        logging.getLogger("sa_sessions.purge").warning(
            "retrying on mysql://app:Qs3cr3tQ@db/app?sslpassword=Qs3cr3tQ"
        )
        return PurgeReport()

    monkeypatch.setattr("sa_sessions.cli.purge_expired_rows", warns)
    code, _, err = run(capsys, "cleanup", "--db", filled[0], "--model", MODEL, "-q")
    assert code == 0
    assert "retrying on mysql://app:***@db/app?sslpassword=***" in err
    assert "Qs3cr3tQ" not in err


@pytest.mark.parametrize(
    "url",
    [
        "mysql+mysqldb://u@h:abc/db",
        "mysql+mysqldb://u:Qs3cr3tQ@h:abc/db?password=Qs3cr3tQ",
        "postgresql+psycopg://u@h:99999999999999999999x/db",
    ],
)
def test_non_numeric_port_is_a_bad_url(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "stats", "--db", url)
    assert code == ExitCode.BAD_URL
    assert err.startswith("sa-sessions: error: bad database URL ")
    assert "the port must be a number" in err and err.count("\n") == 1
    assert "Qs3cr3tQ" not in err


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(
            "mysql+mysqldb://u@127.0.0.1:1/x?sslkey_password=Qs3cr3tQ", marks=pytest.mark.mysql
        ),
    ],
)
def test_unknown_driver_option_is_a_bad_url(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The driver refuses a keyword from the query string (a TypeError): one line, exit 3."""
    code, _, err = run(capsys, "stats", "--db", url)
    assert code == ExitCode.BAD_URL, err
    assert err.startswith("sa-sessions: error: bad database URL ") and err.count("\n") == 1
    assert "Qs3cr3tQ" not in err and "password=***" in err


def test_non_numeric_port_as_a_program() -> None:
    proc = cli_process("stats", "--db", "mysql+mysqldb://u:Qs3cr3tQ@h:abc/db")
    assert proc.returncode == ExitCode.BAD_URL
    assert "Traceback" not in proc.stderr and "Qs3cr3tQ" not in proc.stderr
    assert "bad database URL 'mysql+mysqldb://u:***@h:abc/db'" in proc.stderr


# --------------------------------------------------------------------------- --model search


def _write_model_package(root: Path, package: str, table: str) -> None:
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "models.py").write_text(
        "from sqlalchemy.orm import DeclarativeBase\n"
        "from sa_sessions import SessionModel\n"
        "class Base(DeclarativeBase):\n    pass\n"
        f"class WebSession(SessionModel, Base):\n    __tablename__ = {table!r}\n"
    )


def _write_planted_package(root: Path, package: str, marker: Path) -> None:
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').write('planted code ran')\n"
    )
    (root / package / "models.py").write_text("raise SystemExit('planted')\n")


@pytest.fixture
def planted(tmp_path: Path) -> tuple[str, Path, Path, Path]:
    """A package installed in site/, and a planted one of the same name in shared/."""
    package = f"myapp_{os.getpid()}_{secrets.token_hex(3)}"
    site, shared, marker = tmp_path / "site", tmp_path / "shared", tmp_path / "planted-ran"
    _write_model_package(site, package, "web_sessions")
    _write_planted_package(shared, package, marker)
    return package, site, shared, marker


def test_installed_package_wins_over_the_current_directory(
    planted: tuple[str, Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    package, site, shared, marker = planted
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(shared))  # first, as ``python -m`` puts the cwd
    monkeypatch.chdir(shared)
    for name in (package, f"{package}.models"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    url = f"sqlite:///{site / 'app.db'}"
    code, out, err = run(
        capsys, "create-table", "--db", url, "--model", f"{package}.models:WebSession"
    )
    assert (code, err) == (0, "")
    assert "created table web_sessions" in out
    assert not marker.exists()
    assert sys.path[0] == str(shared)  # the caller's sys.path is left as it was


@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_planted_package_never_runs_in_a_cli_process(
    how: str, planted: tuple[str, Path, Path, Path]
) -> None:
    package, site, shared, marker = planted
    if how == "python -m":
        command = [sys.executable, "-m", "sa_sessions"]
    else:
        script = Path(sys.executable).parent / "sa-sessions"
        if not script.exists():
            pytest.skip("the sa-sessions console script is not installed yet")
        command = [str(script)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    url = f"sqlite:///{site / 'app.db'}"
    argv = ["create-table", "--db", url, "--model", f"{package}.models:WebSession"]
    proc = subprocess.run(
        [*command, *argv], cwd=shared, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "created table web_sessions" in proc.stdout
    assert not marker.exists()


def test_current_directory_is_searched_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module only the current directory has is found (after everything else)."""
    package = f"myapp_{os.getpid()}_{secrets.token_hex(3)}"
    _write_model_package(tmp_path, package, "web_sessions")
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    code, out, _ = run(
        capsys, "create-table", "--db", url, "--model", f"{package}.models:WebSession"
    )
    assert code == 0 and "created table web_sessions" in out
    assert str(tmp_path) not in sys.path
    monkeypatch.delitem(sys.modules, package)
    monkeypatch.delitem(sys.modules, f"{package}.models")


def test_world_writable_current_directory_is_not_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = f"myapp_{os.getpid()}_{secrets.token_hex(3)}"
    shared = tmp_path / "shared"
    _write_model_package(shared, package, "web_sessions")
    shared.chmod(0o1777)  # like /tmp
    monkeypatch.chdir(shared)
    code, _, err = run(capsys, "stats", "--db", "sqlite://", "--model", f"{package}.models:X")
    assert code == ExitCode.BAD_MODEL
    assert f"No module named '{package}'" in err
    assert f"(not searched: {shared} is writable by everyone)" in err
    assert package not in sys.modules


def test_help_states_the_model_search_rule() -> None:
    proc = cli_process("stats", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "installed packages and $PYTHONPATH first" in text
    assert "the current directory is searched last, and never when anyone may write to it" in text


# --------------------------------------------------------------------------- output and arguments


class _ClosedPipe(io.StringIO):
    """A stdout whose reader went away, as under ``sa-sessions stats | head -1``."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_stdout_ends_quietly(
    filled: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    code = main(["stats", "--db", filled[0], "--model", MODEL, "--json"])
    assert code == ExitCode.BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""


def test_closed_stdout_ends_quietly_as_a_program(filled: tuple[str, Engine]) -> None:
    """The reader is gone before the first byte is written: no BrokenPipeError traceback."""
    env = {k: v for k, v in os.environ.items() if k != "SA_SESSIONS_DB_URL"}
    env[_TABLE_ENV] = TABLE
    argv = ["stats", "--db", filled[0], "--model", MODEL, "--json"]
    with subprocess.Popen(
        [sys.executable, "-m", "sa_sessions", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == ExitCode.BROKEN_PIPE
    assert err == ""


def test_piped_into_head_prints_the_first_line_only(filled: tuple[str, Engine]) -> None:
    command = (
        f"{sys.executable} -m sa_sessions stats --db '{filled[0]}' --model {MODEL} --json | head -1"
    )
    env = {k: v for k, v in os.environ.items() if k != "SA_SESSIONS_DB_URL"}
    env[_TABLE_ENV] = TABLE
    proc = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout == "{\n"
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["cleanup", "--max-seconds", "abc"],
            "argument --max-seconds: expected a number of seconds, got 'abc'",
        ),
        (
            ["cleanup", "--pause", "-1"],
            "argument --pause: must be a number of seconds, zero or more, got '-1'",
        ),
        (
            ["cleanup", "--pause", "nan"],
            "argument --pause: must be a number of seconds, zero or more",
        ),
        (
            ["cleanup", "--batch-size", "1.5"],
            "argument --batch-size: expected a whole number, got '1.5'",
        ),
        (["cleanup", "--log-every", "0"], "argument --log-every: must be at least 1, got '0'"),
        (["stats", "--days", "x"], "argument --days: expected a whole number, got 'x'"),
    ],
)
def test_argument_errors_are_readable(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "_non_negative_float" not in err and "_positive_int" not in err


def test_converters_have_readable_names() -> None:
    """argparse names the type function when it raises TypeError or ValueError itself."""
    parser = build_parser()
    types = {
        action.type
        for group in parser._subparsers._group_actions  # type: ignore[union-attr]
        for sub in group.choices.values()  # type: ignore[union-attr]
        for action in sub._actions
        if callable(action.type)
    }
    assert {t.__name__ for t in types} == {"whole number", "number of seconds"}


# --------------------------------------------------------------------------- foreign keys


class _FkBase(DeclarativeBase):
    pass


USERS_TABLE = f"{TABLE}_users"


class FkUser(_FkBase):
    __tablename__ = USERS_TABLE
    id: Mapped[int] = mapped_column(primary_key=True)


class FkSession(SessionModel, _FkBase):
    """The README's model: a user_id foreign key to the users table, indexed."""

    __tablename__ = f"{TABLE}_fk"
    user_id: Mapped[int | None] = mapped_column(ForeignKey(f"{USERS_TABLE}.id"), index=True)


FK_MODEL = "tests.test_cli:FkSession"


@pytest.fixture
def fk_db(db: tuple[str, Engine]) -> Iterator[tuple[str, Engine]]:
    _FkBase.metadata.drop_all(db[1])
    yield db
    db[1].dispose()
    _FkBase.metadata.drop_all(db[1])


def test_create_table_refuses_a_missing_referenced_table(
    fk_db: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = fk_db
    code, out, err = run(capsys, "create-table", "--db", url, "--model", FK_MODEL)
    assert code == ExitCode.NO_TABLE and out == ""
    assert f"{TABLE}_fk has foreign keys to {USERS_TABLE}, missing in " in err
    assert "create your application's tables first" in err
    assert "--with-referenced-tables" in err and err.count("\n") == 1
    engine.dispose()
    assert not inspect(engine).has_table(f"{TABLE}_fk")


def test_create_table_with_referenced_tables(
    fk_db: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = fk_db
    argv = ["create-table", "--db", url, "--model", FK_MODEL, "--with-referenced-tables"]
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.startswith(f"created tables {USERS_TABLE}, {TABLE}_fk in ")
    engine.dispose()
    keys = inspect(engine).get_foreign_keys(f"{TABLE}_fk")
    assert [(k["referred_table"], k["constrained_columns"]) for k in keys] == [
        (USERS_TABLE, ["user_id"])
    ]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "already exists" in out


def test_create_table_when_the_referenced_table_exists(
    fk_db: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = fk_db
    _FkBase.metadata.create_all(engine, tables=[_FkBase.metadata.tables[USERS_TABLE]])
    code, out, err = run(capsys, "create-table", "--db", url, "--model", FK_MODEL)
    assert (code, err) == (0, "")
    assert out.startswith(f"created table {TABLE}_fk in ")


# --------------------------------------------------------------------------- as a program


def cli_process(
    *argv: str, executable: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SA_SESSIONS_DB_URL"}
    env[_TABLE_ENV] = TABLE
    return subprocess.run(
        [*(executable or [sys.executable, "-m", "sa_sessions"]), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_python_dash_m_runs_every_subcommand(filled: tuple[str, Engine]) -> None:
    url, engine = filled
    proc = cli_process("create-table", "--db", url, "--model", MODEL)
    assert proc.returncode == 0 and "already exists" in proc.stdout
    proc = cli_process("stats", "--db", url, "--model", MODEL, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["expired"] == 25
    proc = cli_process("cleanup", "--db", url, "--model", MODEL, "--batch-size", "10")
    assert proc.returncode == 0, proc.stderr
    assert "deleted 25 expired sessions" in proc.stdout
    assert len(remaining_ids(engine, CLI_TABLE)) == 5


def test_python_dash_m_exit_codes(tmp_path: Path) -> None:
    cases = [
        (["stats"], 2),
        (["stats", "--db", "not a url"], 3),
        (["stats", "--db", "sqlite:////nonexistent-dir/x.db"], 4),
        (["stats", "--db", "sqlite://", "--model", "tests.test_cli:NotAModel"], 5),
        (["stats", "--db", f"sqlite:///{tmp_path / 'empty.db'}"], 6),
        (["cleanup", "--batch-size", "-1"], 2),
    ]
    for argv, expected in cases:
        proc = cli_process(*argv)
        assert proc.returncode == expected, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip(), argv


def test_help_lists_the_subcommands() -> None:
    proc = cli_process("--help")
    assert proc.returncode == 0
    for command in ("cleanup", "stats", "create-table"):
        assert command in proc.stdout


def test_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "sa-sessions"
    if not script.exists():
        pytest.skip("the sa-sessions console script is not installed yet")
    url = f"sqlite:///{tmp_path / 'script.db'}"
    proc = cli_process("create-table", "--db", url, executable=[str(script)])
    assert proc.returncode == 0 and "created table sa_sessions" in proc.stdout
    proc = cli_process("cleanup", "--db", url, "--dry-run", executable=[str(script)])
    assert proc.returncode == 0 and "0 expired sessions would be deleted" in proc.stdout
    proc = cli_process("stats", executable=[str(script)])
    assert proc.returncode == 2 and "no database URL" in proc.stderr


def test_main_reads_sys_argv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["sa-sessions", "stats", "--db", "not a url"])
    assert main() == 3
    assert "bad database URL" in capsys.readouterr().err


def test_stderr_is_a_plain_stream_by_default() -> None:
    assert not io.StringIO().isatty()
