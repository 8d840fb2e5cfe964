"""Measure the batched purge against one unbatched DELETE, with sessions being saved meanwhile.

Not a test: a measuring script for MariaDB/MySQL.  It fills a table with ``--rows``
expired and ``--rows`` live sessions (random SHA-256 ids, so expired and live rows
are interleaved in the clustered index as in real life), then

(a) runs :func:`sa_sessions.purge.purge_expired_rows` (``DELETE ... LIMIT`` batches,
    one short transaction each) while ``--threads`` threads keep saving live
    sessions through :meth:`SessionStore.update` (versioned UPDATEs), and
(b) refills and runs one ``DELETE FROM t WHERE expires_at <= UTC_TIMESTAMP(6)``
    under the same load.

Each save's latency is recorded; the script prints a Markdown table with the
purge time and p50/p99/max save latency during each purge (and a baseline
without any purge).  Run small first::

    python bench/purge_at_scale.py --rows 20000
    python bench/purge_at_scale.py            # 1,000,000 expired + 1,000,000 live
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

UTC = timezone.utc
SECRET = b"bench-secret-key-0123456789abcdef-0123456789"
CHUNK = 10_000


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

    A seed of real sessions goes in through ``executemany`` (chunks of 10k); the
    rest is ``INSERT ... SELECT`` doubling on the server, with fresh SHA-256 ids
    (so rows land all over the clustered index) and jittered expiry times.
    """
    table = TABLE
    _Base.metadata.drop_all(engine)
    _Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    rng = random.Random(1)
    blob = os.urandom(blob_bytes)
    seed = min(rows, max(keep_per_thread * threads, CHUNK))
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
            conn.execute(insert(table), batch)
    have, round_no = seed, 0
    while have < rows:
        n, round_no = min(have, rows - have), round_no + 1
        for side, sign in (("<=", "-"), (">", "+")):
            _retry(
                engine,
                f"INSERT INTO {table.name} "
                "(id, data, created_at, updated_at, expires_at, version) "
                "SELECT * FROM ("
                f"SELECT SHA2(CONCAT(id, 'r{round_no}'), 256) AS nid, data, created_at, "
                f"updated_at, expires_at {sign} INTERVAL FLOOR(RAND() * 3000) SECOND, 1 "
                f"FROM {table.name} WHERE expires_at {side} UTC_TIMESTAMP(6) LIMIT {n}"
                ") AS copy ORDER BY nid",  # in key order: each leaf page visited once
            )
        have += n
    with engine.begin() as conn:
        conn.execute(text(f"ANALYZE TABLE {table.name}"))
    print(f"filled {2 * rows:,} rows in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return [kept[i::threads] for i in range(threads)]


def _retry(engine: Engine, sql: str, attempts: int = 3) -> None:
    """Run one fill statement, again if the server lost its temporary file meanwhile."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                conn.execute(text(sql))
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


def under_load(
    engine: Engine, args: argparse.Namespace, purge: Callable[[], int]
) -> dict[str, Any]:
    records = fill(engine, args.rows, args.blob_bytes, args.keep, args.threads)
    store = SessionStore(BenchSession, engine, secret_keys=SECRET)
    savers = Savers(store, records)
    savers.start()
    time.sleep(args.warmup)
    base_end = time.perf_counter()
    baseline = savers.window(base_end - args.warmup, base_end)
    baseline_ok = savers.succeeded(base_end - args.warmup, base_end)
    started = time.perf_counter()
    deleted = purge()
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


def batched(engine: Engine, batch_size: int) -> Callable[[], int]:
    def run() -> int:
        report = purge_expired_rows(engine, TABLE, batch_size=batch_size)
        return report.deleted

    return run


def unbatched(engine: Engine) -> Callable[[], int]:
    def run() -> int:
        with engine.begin() as conn:
            result = conn.execute(
                text(
                    f"DELETE FROM {BenchSession.__tablename__} WHERE expires_at <= UTC_TIMESTAMP(6)"
                )
            )
            return int(result.rowcount)

    return run


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
        f"| {name} | {r['deleted']:,} | {r['seconds']:.1f} s | {len(during):,} | "
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
        "--keep-table", action="store_true", help="do not drop the table at the end"
    )
    args = parser.parse_args(argv)
    engine = create_engine(args.url, pool_size=args.threads + 4, pool_pre_ping=True)
    env = environment(engine)
    print(f"environment: {env}", file=sys.stderr)
    results: dict[str, dict[str, Any]] = {}
    for name, purge in (
        (f"batched, {args.batch_size:,} per batch", batched(engine, args.batch_size)),
        ("one unbatched DELETE", unbatched(engine)),
    ):
        results[name] = under_load(engine, args, purge)
        print(f"{name}: {table_row(name, results[name])}", file=sys.stderr, flush=True)
    if not args.keep_table:
        _Base.metadata.drop_all(engine)
    engine.dispose()
    print(
        f"\n{args.rows:,} expired + {args.rows:,} live rows, {args.blob_bytes}-byte blobs, "
        f"{args.threads} saving threads; {env}\n"
    )
    print(
        "| purge | rows deleted | purge time | saves started during it | saves/s done "
        "| save p50 | save p99 | save max | failed saves | before the purge: saves/s, p50 / p99 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(table_row(name, r))
    for name, r in results.items():
        if r["failed"]:
            print(f"\n{name}: failed saves: {sorted(set(r['failed']))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
