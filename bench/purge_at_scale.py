"""Measure the batched purge against one unbatched DELETE, with sessions being saved meanwhile.

Not a test: a measuring script for MariaDB.  For each strategy of
``--strategies`` it fills a fresh table with ``--rows`` expired and ``--rows`` live
sessions (random SHA-256 ids, so expired and live rows are interleaved in the
clustered index as in real life; see :func:`fill`), starts ``--threads`` threads
saving live sessions through :meth:`SessionStore.save` (versioned UPDATEs), and
after ``--warmup`` seconds of baseline runs the purge under that load:

``library``       :func:`sa_sessions.purge.purge_expired_rows`, as ``SessionStore.purge_expired``
                  and ``sa-sessions cleanup`` run it (batches of ``--batch-size``, one short
                  transaction each);
``delete-limit``  the purge before the id-first batches: ``DELETE ... WHERE expires_at <=
                  UTC_TIMESTAMP(6) LIMIT n`` until a batch comes back short (before/after);
``unbatched``     one ``DELETE FROM t WHERE expires_at <= UTC_TIMESTAMP(6)``.

Each save's latency is recorded by its start time; the script prints a Markdown table
with the purge time and rate and the p50/p99/max save latency during each purge (and
the baseline before it).  Every ``--tick`` seconds a line on stderr gives the rate of
the last interval, the saves' p99, InnoDB pages read from disk and written per deleted
row, and the machine's CPU busy and iowait shares.  Run small first::

    python bench/purge_at_scale.py --rows 20000
    python bench/purge_at_scale.py --rows 100000 --strategies library,delete-limit
    python bench/purge_at_scale.py            # 1,000,000 expired + 1,000,000 live

Filling 2,000,000 rows takes about three minutes on a 2-core VM (default MariaDB
configuration, 128 MiB buffer pool), the library's purge of 1,000,000 of them two to
three more.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import insert
from sqlalchemy import text
from sqlalchemy.orm import DeclarativeBase

from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions.analytics import session_table
from sa_sessions.ids import hash_session_id
from sa_sessions.purge import purge_expired_rows
from sa_sessions.store import StoredSession

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sections import write_section

UTC = timezone.utc
SECRET = b"bench-secret-key-0123456789abcdef-0123456789"
CHUNK = 10_000
#: Rows per server-side INSERT ... SELECT of the fill.
FILL_CHUNK = 200_000


class _Base(DeclarativeBase):
    pass


class BenchSession(SessionModel, _Base):
    __tablename__ = "bench_purge_sessions"


TABLE = session_table(BenchSession)


@dataclass
class Savers:
    """Threads saving live sessions continuously; latencies stamped with their start time."""

    store: SessionStore[BenchSession]
    records: list[list[StoredSession]]
    samples: list[tuple[float, float]] = field(default_factory=list)
    failures: list[tuple[float, float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for own in self.records:
            thread = threading.Thread(target=self._run, args=(own,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _run(self, own: list[StoredSession]) -> None:
        rng = random.Random()
        while not self.stop.is_set():
            i = rng.randrange(len(own))
            current = own[i]
            now = datetime.now(UTC)
            data = {"user_id": i, "cart": [rng.randrange(1000) for _ in range(40)]}
            started = time.perf_counter()
            try:
                saved = self.store.save(
                    current.session_id, data, expires_at=now + timedelta(days=7), base=current
                )
            except Exception as exc:  # lock wait timeouts and deadlocks are results here
                waited = time.perf_counter() - started
                self.failures.append((started, waited, str(getattr(exc, "orig", exc))[:60]))
                continue
            ended = time.perf_counter()
            # Stamped with the START time, so a save blocked by the purge counts in its window.
            self.samples.append((started, ended - started))
            if saved is not None:
                own[i] = saved

    def window(self, start: float, end: float) -> list[float]:
        """Latency of every save started in the window; a failed save counts its wait."""
        waits = [lat for t, lat in self.samples if start <= t <= end]
        waits += [lat for t, lat, _ in self.failures if start <= t <= end]
        return sorted(waits)

    def succeeded(self, start: float, end: float) -> int:
        return sum(1 for t, _ in self.samples if start <= t <= end)

    def failed(self, start: float, end: float) -> list[str]:
        return [error for t, _, error in self.failures if start <= t <= end]


def fill(
    engine: Engine, rows: int, blob_bytes: int, keep_per_thread: int, threads: int
) -> list[list[StoredSession]]:
    """``rows`` expired + ``rows`` live rows; returns live records for the saver threads.

    The saved sessions (``keep_per_thread`` per thread, with as many expired ones) go in
    from Python as multi-row INSERTs; the rest is generated on the server in chunks of
    ``FILL_CHUNK`` rows (``INSERT ... SELECT`` from MariaDB's SEQUENCE engine: SHA-256
    ids, half expired and half live, jittered times), each chunk sorted by id so that
    it visits every leaf page of the clustered index once, in key order.  Ids are random,
    so each chunk splits pages all over the table as real inserts do: expired and live
    rows end up interleaved and the pages about as full as on a real table.  (About
    700 bytes of clustered index per 300-byte row: 1.3 GB for 2,000,000 rows.)
    """
    table = TABLE
    with engine.connect() as conn:
        if "mariadb" not in str(conn.execute(text("SELECT VERSION()")).scalar()).lower():
            raise SystemExit("the fill needs MariaDB (its SEQUENCE engine makes the rows)")
    _Base.metadata.drop_all(engine)
    _Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    rng = random.Random(1)
    blob = os.urandom(blob_bytes)
    seed = min(rows, keep_per_thread * threads)
    kept: list[StoredSession] = []
    started = time.perf_counter()
    for offset in range(0, seed, CHUNK // 2):
        batch: list[dict[str, Any]] = []
        for _ in range(min(CHUNK // 2, seed - offset)):
            expires = now - timedelta(seconds=3600 + 30 * 86400 * rng.random())
            raw = secrets.token_urlsafe(32)
            batch.append(_row(raw, blob, expires - timedelta(days=7), expires))
            live_id = secrets.token_urlsafe(32)
            created = now - timedelta(hours=24 * rng.random())
            expires = now + timedelta(days=1 + 6 * rng.random())
            batch.append(_row(live_id, blob, created, expires))
            kept.append(StoredSession(live_id, 1, {}, expires, created))
        with engine.begin() as conn:
            conn.execute(insert(table), batch)  # mysqlclient: one multi-row INSERT
    salt = secrets.token_hex(8)
    done = 2 * seed
    while done < 2 * rows:
        first, last = done + 1, min(done + FILL_CHUNK, 2 * rows)
        # Odd sequence numbers expired (1 h to 30 days ago), even ones live (1 to 7 days).
        _retry(
            engine,
            f"INSERT INTO {table.name} "
            "(id, data, created_at, updated_at, expires_at, version) "
            "SELECT id, :blob, expires_at - INTERVAL 7 DAY, expires_at - INTERVAL 7 DAY, "
            "expires_at, 1 FROM ("
            f"SELECT SHA2(CONCAT(:salt, seq), 256) AS id, IF(seq % 2, "
            "UTC_TIMESTAMP(6) - INTERVAL 3600 + FLOOR(RAND() * 2592000) SECOND, "
            "UTC_TIMESTAMP(6) + INTERVAL 86400 + FLOOR(RAND() * 518400) SECOND) AS expires_at "
            f"FROM seq_{first}_to_{last} ORDER BY id LIMIT {last - first + 1}"
            ") AS generated",
            {"blob": blob, "salt": salt},
        )
        done = last
    with engine.begin() as conn:
        conn.execute(text(f"ANALYZE TABLE {table.name}"))
    print(f"filled {2 * rows:,} rows in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return [kept[i::threads] for i in range(threads)]


def _retry(
    engine: Engine, sql: str, params: dict[str, Any] | None = None, attempts: int = 3
) -> None:
    """Run one fill statement, again if the server lost its temporary file meanwhile."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                conn.execute(text(sql), params or {})
            return
        except sqlalchemy.exc.DBAPIError as exc:
            if attempt == attempts:
                raise
            print(f"fill statement failed ({exc.orig}); retrying", file=sys.stderr)


def _row(raw_id: str, blob: bytes, created: datetime, expires: datetime) -> dict[str, Any]:
    return {
        "id": hash_session_id(raw_id),
        "data": blob,
        "created_at": created,
        "updated_at": created,
        "expires_at": expires,
        "version": 1,
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(p * len(values)) - 1))]


#: A purge under test: runs to the end, calling back with the rows deleted so far.
Purge = Callable[[Callable[[int], None]], int]


def under_load(engine: Engine, args: argparse.Namespace, purge: Purge) -> dict[str, Any]:
    records = fill(engine, args.rows, args.blob_bytes, args.keep, args.threads)
    store = SessionStore(BenchSession, engine, secret_keys=SECRET)
    savers = Savers(store, records)
    savers.start()
    time.sleep(args.warmup)
    base_end = time.perf_counter()
    baseline = savers.window(base_end - args.warmup, base_end)
    baseline_ok = savers.succeeded(base_end - args.warmup, base_end)
    started = time.perf_counter()
    ticks = Ticker(engine, savers, started, args.tick)
    deleted = purge(ticks)
    ended = time.perf_counter()
    time.sleep(0.2)
    savers.join()
    during = savers.window(started, ended)
    return {
        "deleted": deleted,
        "seconds": ended - started,
        "baseline": baseline,
        "baseline_rate": baseline_ok / args.warmup,
        "during": during,
        "rate": savers.succeeded(started, ended) / (ended - started),
        "failed": savers.failed(started, ended),
    }


#: InnoDB counters shown per interval (pages read from disk, pages written).
COUNTERS = ("Innodb_buffer_pool_reads", "Innodb_pages_written")


def cpu_times() -> tuple[float, float, float]:
    """Busy, iowait and total jiffies of the machine (``/proc/stat``; zeros elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [float(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0, 0.0
    idle, iowait = fields[3], fields[4]
    total = sum(fields[:8])
    return total - idle - iowait, iowait, total


class Ticker:
    """Progress callback: every ``every`` seconds, one line on stderr about the last interval:
    rows/s, saves/s and their p99, disk pages read and written per deleted row, and the
    machine's CPU busy and iowait shares."""

    def __init__(self, engine: Engine, savers: Savers, started: float, every: float) -> None:
        self.engine, self.savers, self.every = engine, savers, every
        self.last_time, self.last_deleted = started, 0
        self.started = started
        self.last_counters = self.counters()
        self.last_cpu = cpu_times()

    def counters(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SHOW GLOBAL STATUS WHERE Variable_name IN :names"), {"names": COUNTERS}
            )
            return {str(name): int(value) for name, value in rows}

    def __call__(self, deleted: int) -> None:
        now = time.perf_counter()
        if self.every <= 0 or now - self.last_time < self.every:
            return
        waits = self.savers.window(self.last_time, now)
        counters, cpu = self.counters(), cpu_times()
        rows = max(deleted - self.last_deleted, 1)
        per_row = "/".join(
            f"{(counters[k] - self.last_counters.get(k, 0)) / rows:.2f}" for k in COUNTERS
        )
        total = (cpu[2] - self.last_cpu[2]) or 1.0
        busy, iowait = (cpu[0] - self.last_cpu[0]) / total, (cpu[1] - self.last_cpu[1]) / total
        print(
            f"  {now - self.started:6.0f} s: {deleted:,} deleted, "
            f"{(deleted - self.last_deleted) / (now - self.last_time):,.0f} rows/s; saves "
            f"{len(waits) / (now - self.last_time):,.0f}/s, p99 {ms(pct(waits, 0.99))}; "
            f"pages read/written per row {per_row}; CPU busy {busy:.0%}, iowait {iowait:.0%}",
            file=sys.stderr,
            flush=True,
        )
        self.last_time, self.last_deleted = now, deleted
        self.last_counters, self.last_cpu = counters, cpu


def batched(engine: Engine, batch_size: int) -> Purge:
    """The library's purge, as ``SessionStore.purge_expired`` and the CLI run it."""

    def run(tick: Callable[[int], None]) -> int:
        report = purge_expired_rows(
            engine, TABLE, batch_size=batch_size, progress=lambda r: tick(r.deleted)
        )
        return report.deleted

    return run


def delete_limit(engine: Engine, batch_size: int) -> Purge:
    """The purge before 0.x: ``DELETE ... WHERE expires_at <= now LIMIT n`` until short."""

    def run(tick: Callable[[int], None]) -> int:
        deleted = 0
        statement = text(
            f"DELETE FROM {TABLE.name} WHERE expires_at <= UTC_TIMESTAMP(6) LIMIT {batch_size}"
        )
        while True:
            with engine.begin() as conn:
                n = int(conn.execute(statement).rowcount)
            deleted += n
            tick(deleted)
            if n < batch_size:
                return deleted

    return run


def unbatched(engine: Engine) -> Purge:
    def run(tick: Callable[[int], None]) -> int:
        with engine.begin() as conn:
            result = conn.execute(
                text(f"DELETE FROM {TABLE.name} WHERE expires_at <= UTC_TIMESTAMP(6)")
            )
            return int(result.rowcount)

    return run


STRATEGIES: dict[str, tuple[str, Callable[[Engine, int], Purge]]] = {
    "library": ("batched (purge_expired_rows), {n:,} per batch", batched),
    "delete-limit": ("DELETE ... LIMIT {n:,} loop (the old purge)", delete_limit),
    "unbatched": ("one unbatched DELETE", lambda engine, n: unbatched(engine)),
}


def ms(value: float) -> str:
    return f"{value * 1000:,.1f} ms"


def environment(engine: Engine) -> str:
    with engine.connect() as conn:
        version = conn.execute(text("SELECT VERSION()")).scalar()
        pool = conn.execute(text("SELECT @@innodb_buffer_pool_size")).scalar()
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {version}, "
        f"innodb_buffer_pool_size {int(pool or 0) // 2**20} MiB, Python "
        f"{platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}"
    )


def table_row(name: str, r: dict[str, Any]) -> str:
    during, base = r["during"], r["baseline"]
    return (
        f"| {name} | {r['deleted']:,} | {r['seconds']:.1f} s | "
        f"{r['deleted'] / r['seconds']:,.0f} | {len(during):,} | "
        f"{r['rate']:,.0f} | {ms(pct(during, 0.5))} | {ms(pct(during, 0.99))} | "
        f"{ms(during[-1] if during else float('nan'))} | {len(r['failed'])} | "
        f"{r['baseline_rate']:,.0f}, {ms(statistics.median(base) if base else float('nan'))}"
        f" / {ms(pct(base, 0.99))} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="mysql+mysqldb://root@localhost/test")
    parser.add_argument("--rows", type=int, default=1_000_000, help="expired rows (and live rows)")
    parser.add_argument("--threads", type=int, default=4, help="concurrent saving threads")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--blob-bytes", type=int, default=300)
    parser.add_argument("--keep", type=int, default=5000, help="live sessions saved per thread")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of baseline saves")
    parser.add_argument(
        "--strategies",
        default="library,unbatched",
        help=f"comma-separated, each on a fresh fill: {', '.join(STRATEGIES)}",
    )
    parser.add_argument(
        "--tick", type=float, default=30.0, help="seconds between progress lines (0: none)"
    )
    parser.add_argument(
        "--keep-table", action="store_true", help="do not drop the table at the end"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="also write the table into OUT_DIR/benchmarks.md (e.g. docs), between the "
        "purge-at-scale markers that bench/compare.py keeps",
    )
    args = parser.parse_args(argv)
    engine = create_engine(args.url, pool_size=args.threads + 4, pool_pre_ping=True)
    env = environment(engine)
    print(f"environment: {env}", file=sys.stderr)
    results: dict[str, dict[str, Any]] = {}
    for key in args.strategies.split(","):
        title, make = STRATEGIES[key]
        name = title.format(n=args.batch_size)
        results[name] = under_load(engine, args, make(engine, args.batch_size))
        print(f"{name}: {table_row(name, results[name])}", file=sys.stderr, flush=True)
    if not args.keep_table:
        _Base.metadata.drop_all(engine)
    engine.dispose()
    lines = [
        f"{args.rows:,} expired + {args.rows:,} live rows, {args.blob_bytes}-byte blobs, "
        f"{args.threads} saving threads, batches of {args.batch_size:,}; {env}",
        "",
        "| purge | rows deleted | purge time | rows/s | saves started during it | saves/s done "
        "| save p50 | save p99 | save max | failed saves | before the purge: saves/s, p50 / p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(table_row(name, r) for name, r in results.items()),
    ]
    for name, r in results.items():
        if r["failed"]:
            lines += ["", f"{name}: failed saves: {sorted(set(r['failed']))}"]
    print("\n" + "\n".join(lines))
    if args.out_dir is not None:
        started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        body = [
            "## Purge at scale (bench/purge_at_scale.py)",
            "",
            f"Generated on {started} by `python bench/purge_at_scale.py --out-dir "
            f"{args.out_dir}` (MariaDB only): the table is filled with expired and live "
            "sessions (random ids, so both kinds are interleaved in the clustered index), "
            f"{args.threads} threads keep saving live sessions, and each strategy purges on a "
            "fresh fill; docs/cleanup.md explains the strategies and the figures.",
            "",
            *lines,
        ]
        write_section(args.out_dir / "benchmarks.md", "purge-at-scale", "\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
