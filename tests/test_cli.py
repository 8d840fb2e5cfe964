"""``sa-sessions`` through ``main([...])``, ``python -m sa_sessions`` and the console script.

Every subcommand on SQLite (a file), MariaDB and PostgreSQL; every error case
with its exit code and a one-line message, never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
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
from sa_sessions.analytics import session_table
from sa_sessions.cli import ExitCode
from sa_sessions.cli import main
from sa_sessions.default_model import DefaultSession
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


class _Base(DeclarativeBase):
    pass


class CliSession(SessionModel, _Base):
    """A user's model, with a user column (the CLI imports it by --model)."""

    __tablename__ = "sa_cli_test_sessions"
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
    assert code == 0 and out.startswith("created table sa_cli_test_sessions")
    assert "Alembic" in out
    engine.dispose()  # SQLite: a pooled connection may keep the old schema
    names = {ix["name"] for ix in inspect(engine).get_indexes("sa_cli_test_sessions")}
    assert "ix_sa_cli_test_sessions_expires_at" in names
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
    assert out.startswith("deleted 25 expired sessions from sa_cli_test_sessions in ")
    assert out.rstrip().endswith("(3 batches)")
    assert len(remaining_ids(engine, CLI_TABLE)) == 5


def test_cleanup_dry_run(filled: tuple[str, Engine], capsys: pytest.CaptureFixture[str]) -> None:
    url, engine = filled
    code, out, _ = run(capsys, "cleanup", "--db", url, "--model", MODEL, "--dry-run")
    assert code == 0
    assert out.strip() == (
        "dry run: 25 expired sessions would be deleted from sa_cli_test_sessions (nothing deleted)"
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
    assert "another cleanup of sa_cli_test_sessions is running; nothing done" in err
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
    assert (stats["table"], stats["active"], stats["expired"]) == ("sa_cli_test_sessions", 5, 25)
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
    assert out.startswith("sessions in sa_cli_test_sessions at ")
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
    assert "table 'sa_cli_test_sessions' does not exist" in err
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


# --------------------------------------------------------------------------- as a program


def cli_process(
    *argv: str, executable: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SA_SESSIONS_DB_URL"}
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
