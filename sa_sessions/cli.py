"""``sa-sessions``: cleanup, stats and create-table from the command line.

Usage::

    sa-sessions cleanup      --db URL [--model pkg.module:Class] [--batch-size 1000]
                             [--max-seconds S] [--pause S] [--log-every N] [--dry-run] [--quiet]
    sa-sessions stats        --db URL [--model ...] [--days 7] [--json]
    sa-sessions create-table --db URL [--model ...] [--with-referenced-tables]

``--db`` defaults to ``$SA_SESSIONS_DB_URL``; ``--model`` defaults to the
library's own ``sa_sessions`` table (:class:`~sa_sessions.default_model.DefaultSession`).
The work is done by :mod:`sa_sessions.purge` and :mod:`sa_sessions.analytics`;
this module only parses arguments, reports and maps failures to exit codes
(:class:`ExitCode`), without tracebacks.  Every URL and database error it prints
goes through :mod:`sa_sessions._redact`, so no password reaches a terminal or a log.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import stat
import sys
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import Table
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect
from sqlalchemy.engine import URL
from sqlalchemy.engine import make_url

from . import purge
from ._redact import redact_text
from ._redact import redact_url
from .analytics import SessionStats
from .analytics import collect_stats
from .exceptions import CleanupAlreadyRunning
from .exceptions import SessionConfigError
from .model import SessionModel
from .model import session_table
from .purge import PurgeProgress
from .purge import PurgeReport
from .purge import purge_expired_rows

ENV_DB_URL = "SA_SESSIONS_DB_URL"
DEFAULT_MODEL = "sa_sessions.default_model:DefaultSession"
log = logging.getLogger("sa_sessions.cli")

MODEL_HELP = (
    "your SessionModel subclass, e.g. myapp.models:WebSession (default: the library's own "
    "'sa_sessions' table). The module is imported from the installed packages and "
    "$PYTHONPATH first; the current directory is searched last, and never when anyone "
    "may write to it (like /tmp), so a module planted there cannot stand in for yours"
)


class ExitCode(IntEnum):
    """Exit statuses of ``sa-sessions`` (stable: scripts may test them)."""

    OK = 0
    FAILED = 1  #: a database error during the command
    USAGE = 2  #: bad arguments, or no database URL at all
    BAD_URL = 3  #: the URL does not parse, or names an unknown dialect or missing driver
    UNREACHABLE = 4  #: the database did not answer (or refused the login)
    BAD_MODEL = 5  #: --model does not import or is not a mapped SessionModel subclass
    NO_TABLE = 6  #: the session table (or a table its foreign keys need) does not exist
    ALREADY_RUNNING = 7  #: another cleanup of this table holds the lock
    INTERRUPTED = 130  #: Ctrl-C (the batch in flight was rolled back)
    #: stdout was closed early (``sa-sessions stats | head -1``): 128 + SIGPIPE (13),
    #: what the shell reports for a Unix tool ended by that signal; nothing is printed
    BROKEN_PIPE = 141


class CliError(Exception):
    """A failure reported as one line on stderr with a specific exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa-sessions", description="Maintain and inspect an sa_sessions session table."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="URL",
        help=f"SQLAlchemy URL (default: ${ENV_DB_URL}); its password is never printed",
    )
    common.add_argument("--model", metavar="MODULE:CLASS", default=DEFAULT_MODEL, help=MODEL_HELP)
    cleanup = commands.add_parser(
        "cleanup", parents=[common], help="delete expired sessions in short batches"
    )
    cleanup.add_argument("--batch-size", type=count, default=1000, metavar="N")
    cleanup.add_argument(
        "--max-seconds", type=seconds, metavar="S", help="stop after about S seconds"
    )
    cleanup.add_argument(
        "--pause", type=seconds, default=0.0, metavar="S", help="sleep between batches"
    )
    cleanup.add_argument(
        "--log-every",
        type=count,
        default=100,
        metavar="N",
        help="without a terminal, log progress every N batches (default 100)",
    )
    cleanup.add_argument(
        "--dry-run", action="store_true", help="count expired sessions, delete nothing"
    )
    cleanup.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    cleanup.set_defaults(handler=_cleanup)
    stats = commands.add_parser("stats", parents=[common], help="counts, sizes and activity")
    stats.add_argument("--days", type=count, default=7, help="days of creations to show")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(handler=_stats)
    create = commands.add_parser(
        "create-table", parents=[common], help="create the session table if it is missing"
    )
    create.add_argument(
        "--with-referenced-tables",
        action="store_true",
        help="also create the missing tables the session table's foreign keys point to "
        "(e.g. users), as the model's metadata declares them; without it a missing one "
        "is an error (exit 6), since your application's migrations should own them",
    )
    create.set_defaults(handler=_create_table)
    return parser


def count(value: str) -> int:
    """A whole number of 1 or more (argparse shows the name below in its errors)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value!r}")
    return number


def seconds(value: str) -> float:
    """A finite number of seconds, zero or more."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not (math.isfinite(number) and number >= 0):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds, zero or more, got {value!r}"
        )
    return number


# argparse names the type function in some of its own messages: make that readable.
count.__name__ = "whole number"
seconds.__name__ = "number of seconds"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run ``sa-sessions``; returns the exit status (see :class:`ExitCode`)."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Engine, type[SessionModel]], int] = args.handler
    url: str | None = args.db or os.environ.get(ENV_DB_URL)
    secrets_in: list[str | URL] = [url] if url else []
    with _log_to_stderr(secrets_in):
        try:
            model = load_model(args.model)
            engine = open_engine(url)
            secrets_in.append(engine.url)
            try:
                check_connection(engine)
                code = handler(args, engine, model)
                sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
                return code
            except sa_exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise _unreachable(engine, exc) from exc
                log.debug("database error", exc_info=True)
                raise CliError(ExitCode.FAILED, f"database error: {_first_line(exc)}") from exc
            except sa_exc.SQLAlchemyError as exc:
                log.debug("database error", exc_info=True)
                raise CliError(ExitCode.FAILED, f"database error: {_first_line(exc)}") from exc
            finally:
                engine.dispose()
        except CliError as exc:
            print(f"sa-sessions: error: {redact_text(str(exc), *secrets_in)}", file=sys.stderr)
            return int(exc.code)
        except BrokenPipeError:
            _discard_stdout()
            return int(ExitCode.BROKEN_PIPE)
        except KeyboardInterrupt:
            print("sa-sessions: interrupted", file=sys.stderr)
            return int(ExitCode.INTERRUPTED)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (captured output): nothing to flush
        pass


class _RedactingFormatter(logging.Formatter):
    """Masks the URLs' secrets in every line the CLI logs (library warnings included)."""

    def __init__(self, secrets_in: list[str | URL]) -> None:
        super().__init__("%(asctime)s %(message)s")
        self.secrets_in = secrets_in

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), *self.secrets_in)


@contextmanager
def _log_to_stderr(secrets_in: list[str | URL]) -> Iterator[None]:
    """For one command: progress lines and the library's warnings go to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(secrets_in))
    handler.setLevel(logging.WARNING)
    progress = logging.StreamHandler(sys.stderr)
    progress.setFormatter(_RedactingFormatter(secrets_in))
    library, progress_logger = logging.getLogger("sa_sessions"), purge.progress_log
    previous = progress_logger.level
    library.addHandler(handler)
    progress_logger.addHandler(progress)
    progress_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        library.removeHandler(handler)
        progress_logger.removeHandler(progress)
        progress_logger.setLevel(previous)


def load_model(spec: str) -> type[SessionModel]:
    """Import ``package.module:Class`` by the search rule of ``--help`` (see ``MODEL_HELP``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(ExitCode.BAD_MODEL, f"--model {spec!r}: expected package.module:ClassName")
    cwd = os.getcwd()
    with _cwd_searched_last(cwd) as searched:
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            hint = "" if searched else f" (not searched: {cwd} is writable by everyone)"
            raise CliError(
                ExitCode.BAD_MODEL, f"--model {spec!r}: cannot import: {exc}{hint}"
            ) from exc
        except Exception as exc:  # the user's module failed while importing
            raise CliError(
                ExitCode.BAD_MODEL,
                f"--model {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}",
            ) from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CliError(ExitCode.BAD_MODEL, f"--model {spec!r}: {module_name} has no {part!r}")
        target = getattr(target, part)
    try:
        session_table(target)
    except SessionConfigError as exc:
        raise CliError(ExitCode.BAD_MODEL, f"--model {spec!r}: {exc}") from exc
    model: type[SessionModel] = target
    return model


@contextmanager
def _cwd_searched_last(cwd: str) -> Iterator[bool]:
    """While importing the model: the current directory after every other entry of sys.path.

    ``python -m`` puts it first, and a shared directory may hold a planted
    ``myapp/``; installed packages and ``$PYTHONPATH`` must win.  A directory
    anyone may write to is left out.  Yields whether the directory is searched.
    """
    saved = list(sys.path)
    here = os.path.realpath(cwd)
    searched = not _writable_by_everyone(cwd)
    sys.path[:] = [p for p in saved if os.path.realpath(p or os.curdir) != here]
    if searched:
        sys.path.append(cwd)
    try:
        yield searched
    finally:
        sys.path[:] = saved


def _writable_by_everyone(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IWOTH)
    except OSError:
        return True


def open_engine(url: str | None) -> Engine:
    """An engine for ``url``; nothing is connected yet."""
    if not url:
        raise CliError(ExitCode.USAGE, f"no database URL: pass --db URL or set {ENV_DB_URL}")
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise CliError(ExitCode.BAD_URL, f"bad database URL {redact_url(url)!r}: {exc}") from exc
    except ValueError as exc:  # SQLAlchemy parses the port with int()
        raise CliError(
            ExitCode.BAD_URL, f"bad database URL {redact_url(url)!r}: the port must be a number"
        ) from exc
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except sa_exc.NoSuchModuleError as exc:
        raise CliError(ExitCode.BAD_URL, f"unknown database dialect: {exc}") from exc
    except sa_exc.ArgumentError as exc:
        raise CliError(ExitCode.BAD_URL, f"bad database URL: {exc}") from exc
    except ImportError as exc:
        raise CliError(ExitCode.BAD_URL, f"database driver not installed: {exc}") from exc


def check_connection(engine: Engine) -> None:
    """Connect once, so a wrong host, port, database or password gets its own exit code."""
    try:
        with engine.connect():
            pass
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise _unreachable(engine, exc) from exc
    except TypeError as exc:  # the driver refused a keyword from the URL's query string
        raise CliError(
            ExitCode.BAD_URL, f"bad database URL {redact_url(engine.url)!r}: {exc}"
        ) from exc


def _unreachable(engine: Engine, exc: sa_exc.DBAPIError) -> CliError:
    return CliError(
        ExitCode.UNREACHABLE,
        f"cannot reach the database {redact_url(engine.url)}: {_first_line(exc)}",
    )


def _first_line(exc: sa_exc.SQLAlchemyError) -> str:
    """The driver's own message, first line only (main() masks any secret in it)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_table(engine: Engine, table: Table) -> None:
    """Refuse to run on a table that does not exist (instead of a raw SQL error)."""
    if not inspect(engine).has_table(table.name, schema=table.schema):
        raise CliError(
            ExitCode.NO_TABLE,
            f"table {table.fullname!r} does not exist in {engine.url.database or 'the database'}; "
            "create it with your migrations (or `sa-sessions create-table`)",
        )


# --------------------------------------------------------------------------- commands


def _cleanup(args: argparse.Namespace, engine: Engine, model: type[SessionModel]) -> int:
    table = session_table(model)
    require_table(engine, table)
    progress = (
        None if args.quiet or args.dry_run else PurgeProgress(sys.stderr, log_every=args.log_every)
    )
    try:
        report = purge_expired_rows(
            engine,
            table,
            batch_size=args.batch_size,
            max_seconds=args.max_seconds,
            pause=args.pause,
            progress=progress,
            dry_run=args.dry_run,
        )
    except CleanupAlreadyRunning as exc:
        raise CliError(ExitCode.ALREADY_RUNNING, f"{exc}; nothing done") from exc
    finally:
        if progress is not None:
            progress.close()
    print(summary(report, table.fullname, args.max_seconds))
    return int(ExitCode.OK)


def summary(report: PurgeReport, table: str, max_seconds: float | None) -> str:
    """The closing line of ``cleanup``."""
    if report.dry_run:
        return (
            f"dry run: {report.expired_at_start or 0:,} expired sessions would be deleted "
            f"from {table} (nothing deleted)"
        )
    line = (
        f"deleted {report.deleted:,} expired sessions from {table} in {report.elapsed:.2f}s "
        f"({report.batches:,} {'batch' if report.batches == 1 else 'batches'})"
    )
    if report.stopped_by_budget:
        left = f", about {report.remaining:,} left" if report.remaining is not None else ""
        line += f"; stopped by the time budget ({max_seconds:g}s){left}"
    return line


def _stats(args: argparse.Namespace, engine: Engine, model: type[SessionModel]) -> int:
    require_table(engine, session_table(model))
    stats = collect_stats(engine, model, days=args.days)
    if args.json:
        print(json.dumps(stats.as_dict(), indent=2, default=str))
    else:
        print(format_stats(stats))
    return int(ExitCode.OK)


def format_stats(stats: SessionStats) -> str:
    """A readable report for a terminal."""
    sizes = stats.blob_bytes
    oldest = stats.oldest_active_created_at
    lines = [
        f"sessions in {stats.table} at {stats.generated_at:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"  {'active':<26}{stats.active:>12,}",
        f"  {'expired (not yet purged)':<26}{stats.expired:>12,}",
        f"  {'oldest active created':<26}{oldest:%Y-%m-%d %H:%M:%S} UTC"
        if oldest is not None
        else f"  {'oldest active created':<26}{'-':>12}",
        "",
        f"  blob bytes over {sizes.sessions:,} active sessions",
        "    "
        + "   ".join(
            f"{name} {_bytes(value)}"
            for name, value in (
                ("p50", sizes.p50),
                ("p90", sizes.p90),
                ("p99", sizes.p99),
                ("max", sizes.max),
                ("avg", sizes.average),
            )
        ),
        "",
        "  created per day (UTC)",
    ]
    peak = max((n for _, n in stats.created_per_day), default=0)
    for day, created in stats.created_per_day:
        bar = "#" * (round(30 * created / peak) if peak else 0)
        lines.append(f"    {day.isoformat()}  {created:>10,}  {bar}".rstrip())
    if stats.top_users is not None:
        lines += ["", "  top users (active sessions)", f"    {'user_id':<20}{'sessions':>10}"]
        lines += [f"    {user!s:<20}{n:>10,}" for user, n in stats.top_users]
        if not stats.top_users:
            lines.append("    (none)")
    return "\n".join(lines)


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:,.0f} B"


def _create_table(args: argparse.Namespace, engine: Engine, model: type[SessionModel]) -> int:
    table = session_table(model)
    where = redact_url(engine.url)
    inspector = inspect(engine)
    if inspector.has_table(table.name, schema=table.schema):
        print(f"table {table.fullname} already exists in {where}; nothing done")
        return int(ExitCode.OK)
    missing = [
        name
        for name, schema in referenced_names(table)
        if not inspector.has_table(name, schema=schema)
    ]
    created = [table]
    if missing:
        if not args.with_referenced_tables:
            raise CliError(
                ExitCode.NO_TABLE,
                f"{table.fullname} has foreign keys to {', '.join(missing)}, missing in "
                f"{where}: create your application's tables first (your migrations, or "
                "Base.metadata.create_all), or pass --with-referenced-tables to create them "
                "from the model's metadata",
            )
        created = [
            t for t in referenced_tables(table) if not inspector.has_table(t.name, schema=t.schema)
        ] + created
    table.metadata.create_all(engine, tables=created, checkfirst=True)
    print(
        f"created {'table' if len(created) == 1 else 'tables'} "
        f"{', '.join(t.fullname for t in created)} in {where} "
        "(for production, manage it with your migrations, e.g. Alembic autogenerate)"
    )
    return int(ExitCode.OK)


def referenced_names(table: Table) -> list[tuple[str, str | None]]:
    """``(name, schema)`` of each other table ``table``'s foreign keys point to.

    Read from the key's target, so a table outside the model's metadata counts.
    """
    names: list[tuple[str, str | None]] = []
    for key in table.foreign_keys:
        *schema, name, _column = key.target_fullname.split(".")
        target = (name, ".".join(schema) or None)
        if target != (table.name, table.schema) and target not in names:
            names.append(target)
    return names


def referenced_tables(table: Table) -> list[Table]:
    """Every other table that ``table``'s foreign keys lead to, directly or not.

    Each must be in the model's metadata to be created from it; otherwise
    :class:`CliError` (exit 6) names the one that is not.
    """
    found: list[Table] = []
    pending = [table]
    while pending:
        current = pending.pop(0)
        for key in current.foreign_keys:
            try:
                target = key.column.table
            except (sa_exc.NoReferencedTableError, sa_exc.NoReferencedColumnError) as exc:
                raise CliError(
                    ExitCode.NO_TABLE,
                    f"cannot create {key.target_fullname.rpartition('.')[0]}: it is not in "
                    f"the model's metadata ({exc})",
                ) from exc
            if isinstance(target, Table) and target is not table and target not in found:
                found.append(target)
                pending.append(target)
    return found
