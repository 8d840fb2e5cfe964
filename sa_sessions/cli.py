"""``sa-sessions``: cleanup, stats and create-table from the command line.

Usage::

    sa-sessions cleanup      --db URL [--model pkg.module:Class] [--batch-size 1000]
                             [--max-seconds S] [--pause S] [--log-every N] [--dry-run] [--quiet]
    sa-sessions stats        --db URL [--model ...] [--days 7] [--json]
    sa-sessions create-table --db URL [--model ...]

``--db`` defaults to ``$SA_SESSIONS_DB_URL``; ``--model`` defaults to the
library's own ``sa_sessions`` table (:class:`~sa_sessions.default_model.DefaultSession`).
The work is done by :mod:`sa_sessions.purge` and :mod:`sa_sessions.analytics`;
this module only parses arguments, reports and maps failures to exit codes
(:class:`ExitCode`), without tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
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

from . import purge
from .analytics import SessionStats
from .analytics import collect_stats
from .analytics import session_table
from .exceptions import CleanupAlreadyRunning
from .model import SessionModel
from .purge import PurgeProgress
from .purge import PurgeReport
from .purge import purge_expired_rows

ENV_DB_URL = "SA_SESSIONS_DB_URL"
DEFAULT_MODEL = "sa_sessions.default_model:DefaultSession"
log = logging.getLogger("sa_sessions.cli")


class ExitCode(IntEnum):
    """Exit statuses of ``sa-sessions`` (stable: scripts may test them)."""

    OK = 0
    FAILED = 1  #: a database error during the command
    USAGE = 2  #: bad arguments, or no database URL at all
    BAD_URL = 3  #: the URL does not parse, or names an unknown dialect or missing driver
    UNREACHABLE = 4  #: the database did not answer (or refused the login)
    BAD_MODEL = 5  #: --model does not import or is not a mapped SessionModel subclass
    NO_TABLE = 6  #: the session table does not exist
    ALREADY_RUNNING = 7  #: another cleanup of this table holds the lock
    INTERRUPTED = 130  #: Ctrl-C (the batch in flight was rolled back)


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
    common.add_argument("--db", metavar="URL", help=f"SQLAlchemy URL (default: ${ENV_DB_URL})")
    common.add_argument(
        "--model",
        metavar="MODULE:CLASS",
        default=DEFAULT_MODEL,
        help="your SessionModel subclass, e.g. myapp.models:WebSession "
        "(default: the library's own 'sa_sessions' table)",
    )
    cleanup = commands.add_parser(
        "cleanup", parents=[common], help="delete expired sessions in short batches"
    )
    cleanup.add_argument("--batch-size", type=_positive_int, default=1000, metavar="N")
    cleanup.add_argument(
        "--max-seconds", type=_non_negative_float, metavar="S", help="stop after about S seconds"
    )
    cleanup.add_argument(
        "--pause", type=_non_negative_float, default=0.0, metavar="S", help="sleep between batches"
    )
    cleanup.add_argument(
        "--log-every",
        type=_positive_int,
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
    stats.add_argument("--days", type=_positive_int, default=7, help="days of creations to show")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(handler=_stats)
    create = commands.add_parser(
        "create-table", parents=[common], help="create the session table if it is missing"
    )
    create.set_defaults(handler=_create_table)
    return parser


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return number


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run ``sa-sessions``; returns the exit status (see :class:`ExitCode`)."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Engine, type[SessionModel]], int] = args.handler
    with _log_to_stderr():
        try:
            model = load_model(args.model)
            engine = open_engine(args.db or os.environ.get(ENV_DB_URL))
            try:
                check_connection(engine)
                return handler(args, engine, model)
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
            print(f"sa-sessions: error: {exc}", file=sys.stderr)
            return int(exc.code)
        except KeyboardInterrupt:
            print("sa-sessions: interrupted", file=sys.stderr)
            return int(ExitCode.INTERRUPTED)


@contextmanager
def _log_to_stderr() -> Iterator[None]:
    """For one command: progress lines and the library's warnings go to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.setLevel(logging.WARNING)
    progress = logging.StreamHandler(sys.stderr)
    progress.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
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
    """Import ``package.module:Class`` (the current directory is importable)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(ExitCode.BAD_MODEL, f"--model {spec!r}: expected package.module:ClassName")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(ExitCode.BAD_MODEL, f"--model {spec!r}: cannot import: {exc}") from exc
    except Exception as exc:  # the user's module failed while importing
        raise CliError(
            ExitCode.BAD_MODEL,
            f"--model {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}",
        ) from exc
    finally:
        if added:
            sys.path.remove(os.getcwd())
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CliError(ExitCode.BAD_MODEL, f"--model {spec!r}: {module_name} has no {part!r}")
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, SessionModel)):
        raise CliError(ExitCode.BAD_MODEL, f"--model {spec!r} is not a SessionModel subclass")
    if not isinstance(getattr(target, "__table__", None), Table):
        raise CliError(ExitCode.BAD_MODEL, f"--model {spec!r} is not mapped to a table")
    return target


def open_engine(url: str | None) -> Engine:
    """An engine for ``url``; nothing is connected yet."""
    if not url:
        raise CliError(ExitCode.USAGE, f"no database URL: pass --db URL or set {ENV_DB_URL}")
    try:
        return create_engine(url, pool_pre_ping=True)
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


def _unreachable(engine: Engine, exc: sa_exc.DBAPIError) -> CliError:
    where = engine.url.render_as_string(hide_password=True)
    return CliError(ExitCode.UNREACHABLE, f"cannot reach the database {where}: {_first_line(exc)}")


def _first_line(exc: sa_exc.SQLAlchemyError) -> str:
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
    where = engine.url.render_as_string(hide_password=True)
    if inspect(engine).has_table(table.name, schema=table.schema):
        print(f"table {table.fullname} already exists in {where}; nothing done")
        return int(ExitCode.OK)
    table.create(engine, checkfirst=True)
    print(
        f"created table {table.fullname} in {where} "
        "(for production, manage it with your migrations, e.g. Alembic autogenerate)"
    )
    return int(ExitCode.OK)
