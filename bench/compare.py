"""Per-request cost of sa_sessions against Beaker and Django, in one process.

The same tiny Bottle app is wrapped by each session layer (see ``bench/peers.py``) and
called directly through WSGI (no HTTP), against the same MariaDB and one private
memcached.  For every scenario it reports:

* the per-request overhead in microseconds: the median over rounds of the mean time per
  request, minus the same figure for the bare app (no sessions);
* the ratio of each peer's overhead to sa_sessions';
* exact SQL statements, database round trips and memcached round trips per request;
* the read and write floors (raw pymemcache + HMAC + decode; raw UPDATE + COMMIT + set);
* PASS/FAIL for the targets of issue 6.

It writes a Markdown report (``benchmarks.md``) and a bar chart (``benchmark.png``) to
``--out-dir`` (default: ``docs/``), keeping any HTTP section that
``bench/http_throughput.py`` appended.  ``--quick`` runs a few requests per case
(the smoke test uses it; its timings are not meaningful).

    python bench/compare.py                 # full run, about three minutes
    python bench/compare.py --quick --out-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import json
import os
import pickle
import platform
import statistics
import struct
import subprocess
import sys
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers

ROOT = Path(__file__).resolve().parent.parent
HTTP_START = "<!-- http-throughput:start -->"
HTTP_END = "<!-- http-throughput:end -->"
README_START = "<!-- benchmark-summary:start -->"
README_END = "<!-- benchmark-summary:end -->"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    path: str
    setup: str | None  # "small" / "large" session created first, or None (no cookie)
    evict: bool = False  # delete the cached copy before every measured request
    expect: bytes | None = None  # body every measured request must return


SCENARIOS = (
    Scenario("untouched", "untouched session", "/untouched", "small", expect=b"ok"),
    Scenario("small_read", "small read (2 keys)", "/read", "small", expect=b"user 4242"),
    Scenario("small_write", "small write", "/write", "small", expect=b"ok"),
    Scenario("large_read", "large read, cache hit", "/read", "large", expect=b"user 4242"),
    Scenario("large_write", "large write", "/write", "large", expect=b"ok"),
    Scenario(
        "large_read_miss",
        "large read, cache miss",
        "/read",
        "large",
        evict=True,
        expect=b"user 4242",
    ),
    Scenario("login", "login (create + regenerate id)", "/login", None, expect=b"ok"),
)
SCENARIO_BY_KEY = {s.key: s for s in SCENARIOS}
PEERS = ("beaker_db", "beaker_memcached", "beaker_cookie", "django_cached_db")


@dataclass
class Settings:
    rounds: int = 7
    batch_seconds: float = 0.25  # measured time per (round, layer) batch
    min_requests: int = 40
    max_requests: int = 3000
    warmup: int = 30
    count_requests: int = 20
    passes: int = 10  # interleaving slices per round
    breakdown_requests: int = 100  # per write scenario (reads run 4x as many)

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            rounds=2,
            batch_seconds=0.01,
            min_requests=4,
            max_requests=40,
            warmup=3,
            count_requests=3,
            passes=2,
            breakdown_requests=3,
        )


@dataclass
class Case:
    """One measured thing in one scenario: a layer (or a floor), its state and timings."""

    name: str
    scenario: Scenario
    layer: peers.Layer | None = None  # None for the floors
    op: Callable[[], Any] | None = None  # one measured request/operation
    hook: Callable[[], None] | None = None  # untimed, before every op (cache eviction)
    cookie: str | None = None
    sid: str | None = None
    na: str | None = None
    note: str | None = None
    requests: int = 0  # per round
    round_means: list[float] = field(default_factory=list)  # wall µs per request
    cpu_round_means: list[float] = field(default_factory=list)  # CPU µs per request
    samples: list[float] = field(default_factory=list)  # wall µs, every request
    counts: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, list[float]] = field(default_factory=dict)  # floor parts, µs/round
    part_ns: Counter[str] = field(default_factory=Counter)
    _wall: int = 0
    _cpu: int = 0
    _n: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.round_means)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_round_means)

    def part(self, name: str) -> float:
        return statistics.median(self.parts[name]) if self.parts.get(name) else float("nan")

    def end_round(self) -> None:
        if self._n:
            self.round_means.append(self._wall / self._n / 1000)
            self.cpu_round_means.append(self._cpu / self._n / 1000)
            for name, ns in self.part_ns.items():
                self.parts.setdefault(name, []).append(ns / self._n / 1000)
        self._wall = self._cpu = self._n = 0
        self.part_ns.clear()


# --------------------------------------------------------------------------- running


def prepare(case: Case) -> None:
    """Create the session this scenario starts from; record why a layer cannot."""
    scenario, layer = case.scenario, case.layer
    assert layer is not None
    if scenario.key in layer.unsupported:
        case.na = layer.unsupported[scenario.key]
        return
    case.note = layer.note.get(scenario.key)
    if scenario.setup is not None and layer.name != "bare":
        try:
            response = peers.call(layer.wsgi, f"/setup/{scenario.setup}")
        except Exception as exc:  # e.g. Beaker's cookie refusing 20 KB
            case.na = f"{type(exc).__name__}: {exc}"
            return
        cookies = response.set_cookies()
        if response.status != "200 OK" or not cookies:
            case.na = f"setup failed ({response.status})"
            return
        case.cookie = peers.cookie_pair(cookies[0])
        case.sid = response.body.decode() or case.cookie.split("=", 1)[1]
    if scenario.evict and layer.evict is not None:
        evict, sid, cookie = layer.evict, case.sid or "", case.cookie or ""
        case.hook = lambda: evict(sid, cookie)
    app, path, cookie = layer.wsgi, scenario.path, case.cookie
    call = peers.call

    def op() -> None:
        if call(app, path, cookie).status != "200 OK":
            raise RuntimeError(f"{layer.name}/{scenario.key}: request failed")

    case.op = op


def check(case: Case) -> None:
    """One request, fully checked (status and body): the session really was used."""
    assert case.layer is not None
    if case.hook is not None:
        case.hook()
    response = peers.call(case.layer.wsgi, case.scenario.path, case.cookie)
    expect = case.scenario.expect
    if response.status != "200 OK" or (expect is not None and response.body != expect):
        raise RuntimeError(
            f"{case.name}/{case.scenario.key}: got {response.status} {response.body[:80]!r}"
        )


def run_chunk(case: Case, n: int, keep_samples: bool = True) -> None:
    """``n`` operations, each timed alone (the hook runs outside the clock)."""
    op, hook = case.op, case.hook
    assert op is not None
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    wall_total = cpu_total = 0
    samples = case.samples if keep_samples else None
    for _ in range(n):
        if hook is not None:
            hook()
        c0 = cpu()
        t0 = clock()
        op()
        t1 = clock()
        cpu_total += cpu() - c0
        wall_total += t1 - t0
        if samples is not None:
            samples.append((t1 - t0) / 1000)
    case._wall += wall_total
    case._cpu += cpu_total
    case._n += n


def warm_up(case: Case, settings: Settings) -> float:
    """Check and run a few operations; return the median wall µs per operation."""
    if case.layer is not None:
        for _ in range(3):
            check(case)
    run_chunk(case, settings.warmup)
    median = statistics.median(case.samples)
    case.samples.clear()
    case._wall = case._cpu = case._n = 0
    case.part_ns.clear()
    return median


def count(case: Case, settings: Settings, memcached: str) -> None:
    """Exact per-request SQL statements, DB round trips and memcached round trips."""
    driver, cache = peers.DriverCounter(), peers.CacheCounter()
    sql = peers.SqlCounter(case.layer) if case.layer is not None else None
    op, hook = case.op, case.hook
    assert op is not None
    per_request: list[tuple[int, tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]] = []
    server_before = peers.memcached_stats(memcached)
    driver.install()
    cache.install()
    if sql is not None:
        sql.install()
    try:
        for _ in range(settings.count_requests):
            if hook is not None:
                hook()
            s0 = sql.snapshot() if sql is not None else 0
            d0, c0 = Counter(driver.counts), Counter(cache.counts)
            op()
            d1, c1 = Counter(driver.counts), Counter(cache.counts)
            d1.subtract(d0)
            c1.subtract(c0)
            statements = sql.snapshot() - s0 if sql is not None else d1["query"]
            per_request.append(
                (
                    statements,
                    tuple(sorted((k, v) for k, v in d1.items() if v)),
                    tuple(sorted((k, v) for k, v in c1.items() if v)),
                )
            )
    finally:
        if sql is not None:
            sql.uninstall()
        cache.uninstall()
        driver.uninstall()
    server = peers.server_ops(server_before, peers.memcached_stats(memcached))
    client = {op_: cache.counts.get(op_, 0) for op_ in ("get", "set", "delete")}
    distinct = set(per_request)
    sql_n, db_ops, cache_ops = per_request[-1]
    db, mc = dict(db_ops), dict(cache_ops)
    case.counts = {
        "sql": sql_n,
        "db_round_trips": sum(db.values()),
        "db": db,
        "cache": mc,
        "cache_round_trips": sum(mc.values()),
        "exact": len(distinct) == 1,
        "server_check": server == client,
        "server_ops": server,
        "client_ops": client,
    }
    if len(distinct) > 1:  # report means when requests differ (they should not)
        n = len(per_request)
        case.counts["sql"] = sum(p[0] for p in per_request) / n
        case.counts["db_round_trips"] = sum(sum(dict(p[1]).values()) for p in per_request) / n
        case.counts["cache_round_trips"] = sum(sum(dict(p[2]).values()) for p in per_request) / n


def request_budget(mean_us: float, settings: Settings) -> int:
    n = int(settings.batch_seconds * 1e6 / max(mean_us, 1.0))
    return max(settings.min_requests, min(settings.max_requests, n))


def run_scenarios(
    layers: dict[str, peers.Layer],
    floors: FloorKit | None,
    scenarios: tuple[Scenario, ...],
    settings: Settings,
    memcached: str,
    log: Callable[[str], None],
) -> dict[str, dict[str, Case]]:
    """Every scenario: prepare, check, count, then interleaved timed rounds.

    A round is ``settings.passes`` passes over all cases, each pass running a slice of
    every case's requests, the order rotated; so slow drifts of a shared machine hit
    all layers alike.
    """
    results: dict[str, dict[str, Case]] = {}
    for scenario in scenarios:
        cases: dict[str, Case] = {}
        for name, layer in layers.items():
            case = Case(name, scenario, layer)
            prepare(case)
            cases[name] = case
        if floors is not None:
            cases.update(floors.cases(scenario))
        live = [c for c in cases.values() if c.na is None]
        for case in live:
            case.requests = request_budget(warm_up(case, settings), settings)
        for case in live:
            count(case, settings, memcached)
        passes = settings.passes
        for round_index in range(settings.rounds):
            gc.collect()
            for p in range(passes):
                shift = (round_index * passes + p) % len(live)
                for case in live[shift:] + live[:shift]:
                    share = case.requests // passes + (1 if p < case.requests % passes else 0)
                    run_chunk(case, share)
            for case in live:
                case.end_round()
        results[scenario.key] = cases
        summary = "  ".join(
            f"{n}={c.median:.0f}" if c.na is None else f"{n}=n/a" for n, c in cases.items()
        )
        log(f"  {scenario.title:32s} {summary}")
    return results


# --------------------------------------------------------------------------- breakdown

#: (module, attribute path, label, depth): sa_sessions internals timed in the breakdown
#: pass (inclusive; names that no longer exist are skipped).
BREAKDOWN = (
    ("sa_sessions.wsgi", "SessionMiddleware.__call__", "whole request in SessionMiddleware", 0),
    ("sa_sessions.cookies", "CookieCodec.decode", "read cookie: verify HMAC + parse", 1),
    ("sa_sessions.store", "SessionStore.load", "SessionStore.load", 1),
    ("sa_sessions.cache.guard", "SessionCache.read", "cache read (entry tag checked)", 2),
    ("pymemcache.client.base", "Client._fetch_cmd", "pymemcache round trip + parsing", 3),
    ("sa_sessions.codec.blob", "BlobCodec.open_lazy", "BlobCodec.open_lazy (MAC, key index)", 2),
    ("sa_sessions.codec.inflate", "inflate", "inflate", 3),
    ("sa_sessions.codec.blob", "BlobCodec._unpickle", "restricted unpickle", 3),
    ("sa_sessions.codec.blob", "Packed.value", "unpickle a value the app reads", 1),
    ("sa_sessions.saving", "Saver.save", "save at start_response", 1),
    ("sa_sessions.saving", "Saver._data_cookie", "try the whole session as a cookie", 2),
    ("sa_sessions.cookies", "CookieCodec.encode", "CookieCodec.encode (JSON, deflate, sign)", 3),
    ("sa_sessions.store", "SessionStore.save", "SessionStore.save", 2),
    ("sa_sessions.codec.blob", "BlobCodec.seal", "BlobCodec.seal", 3),
    ("zlib", "compress", "zlib.compress", 4),
    ("sqlalchemy.engine.base", "Connection.execute", "SQLAlchemy execute (UPDATE)", 3),
    ("MySQLdb.connections", "Connection.commit", "COMMIT", 3),
    ("MySQLdb.connections", "Connection.rollback", "ROLLBACK (pool reset on return)", 3),
    ("sa_sessions.cache.guard", "SessionCache.publish", "cache publish (compare-and-swap)", 3),
)
BREAKDOWN_SCENARIOS = ("small_read", "small_write", "large_read", "large_write")


def _resolve(module: str, path: str) -> tuple[Any, str] | None:
    import importlib

    try:
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        getattr(owner, name)
    except (ImportError, AttributeError):
        return None
    return owner, name


def breakdown(
    layer: peers.Layer, settings: Settings
) -> dict[str, list[tuple[str, int, float, float, float]]]:
    """Inclusive CPU/wall µs per request spent in named sa_sessions internals."""
    report: dict[str, list[tuple[str, int, float, float, float]]] = {}
    for key in BREAKDOWN_SCENARIOS:
        scenario = SCENARIO_BY_KEY[key]
        case = Case(layer.name, scenario, layer)
        prepare(case)
        assert case.op is not None
        for _ in range(settings.warmup):
            case.op()
        totals: dict[str, list[int]] = {}
        patched: list[tuple[Any, str, Any, bool]] = []
        for module, path, label, _depth in BREAKDOWN:
            found = _resolve(module, path)
            if found is None:
                continue
            owner, name = found
            original = getattr(owner, name)
            own = name in getattr(owner, "__dict__", {})
            acc = totals.setdefault(label, [0, 0, 0])

            def timed(*args: Any, _f: Any = original, _acc: list[int] = acc, **kw: Any) -> Any:
                c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                try:
                    return _f(*args, **kw)
                finally:
                    _acc[0] += time.thread_time_ns() - c0
                    _acc[1] += time.perf_counter_ns() - t0
                    _acc[2] += 1

            setattr(owner, name, timed)
            patched.append((owner, name, original if own else None, own))
        n = settings.breakdown_requests * (1 if "write" in key else 4)
        try:
            for _ in range(n):
                case.op()
        finally:
            for owner, name, original, own in reversed(patched):
                if own:
                    setattr(owner, name, original)
                else:
                    delattr(owner, name)
        rows = []
        for _module, _path, label, depth in BREAKDOWN:
            if label in totals and totals[label][2]:
                cpu_ns, wall_ns, calls = totals[label]
                rows.append((label, depth, calls / n, cpu_ns / n / 1000, wall_ns / n / 1000))
        report[key] = rows
    return report


# --------------------------------------------------------------------------- floors


def minimal_middleware(app: Callable[..., Any]) -> Callable[..., Any]:
    """A WSGI middleware that only adds an environ entry and wraps start_response."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["bench.session"] = None

        def wrapped(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            return start_response(status, headers, exc_info)

        return app(environ, wrapped)

    return middleware


class FloorKit:
    """Raw operations on a large sa_sessions session: the cost no layer can beat.

    read floor:  raw pymemcache ``Client.get`` of the stored entry + one HMAC-SHA256
                 check + ``zlib.decompress`` (when compressed) + ``pickle.loads`` of the
                 whole session (the keyed payload and every value in it); variants decode
                 with ``BlobCodec.open``, or only the one key the request reads;
    write floor: raw ``UPDATE ... SET data=%s WHERE id=%s`` + ``COMMIT`` on the engine's
                 own MySQLdb connection + raw pymemcache ``set`` of the same value.
    """

    def __init__(self, layer: peers.Layer, sa: Any, memcached: str) -> None:
        from pymemcache.client.base import Client

        from sa_sessions.cache.entry import HEADER_SIZE
        from sa_sessions.codec.blob import BlobMeta
        from sa_sessions.ids import hash_session_id
        from sa_sessions.signing import derive_key

        response = peers.call(layer.wsgi, "/setup/large")
        self.sid = response.body.decode()
        self.hashed = hash_session_id(self.sid)
        self.key = sa.store.cache.key(self.hashed)
        host, port = memcached.rsplit(":", 1)
        self.client = Client((host, int(port)), default_noreply=False)
        stored = self.client.get(self.key)
        assert isinstance(stored, bytes), "the large session is not in memcached"
        cut = self.header_size = HEADER_SIZE  # kind, version, stamp, tag; then the blob
        self.version = struct.unpack(">q", stored[1:9])[0]
        self.blob = stored[cut:]
        self.codec = sa.store.codec
        self.mac_key = derive_key(peers.BLOB_KEY, "sa_sessions.blob-mac")
        self.prefix = (
            b"sa_sessions.blob.v1\x00"
            + self.hashed.encode()
            + self.version.to_bytes(8, "big", signed=True)
        )
        assert (
            self._primitive_decode(stored)
            == self.codec.open(self.hashed, self.version, self.blob)[1]
        )
        self.cached_bytes = len(stored)
        self.pickle_bytes = len(pickle.dumps(peers.large_session(), protocol=5))
        # Write floor: its own row, alternating two different sealed blobs so every
        # UPDATE really changes the row (InnoDB skips identical rows and their redo).
        floor_sid = "floor-row-" + "x" * 33
        self.floor_hashed = hash_session_id(floor_sid)
        meta = BlobMeta(datetime(2100, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
        data = peers.large_session()
        self.blobs = []
        for hits in (1, 2):
            data["hits"] = hits
            self.blobs.append(self.codec.seal(self.floor_hashed, 1, meta, data))
        self.values = [stored[:cut] + b for b in self.blobs]
        self.floor_key = sa.store.cache.key(self.floor_hashed)
        self.raw = sa.engine.raw_connection()
        self.conn = self.raw.driver_connection
        self.cursor = self.conn.cursor()
        self.table = peers.SA_TABLE
        self.cursor.execute(
            f"INSERT INTO {self.table} (id, data, created_at, updated_at, expires_at, version) "
            "VALUES (%s, %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 1)",
            (self.floor_hashed, self.blobs[0]),
        )
        self.conn.commit()
        self.update = f"UPDATE {self.table} SET data=%s WHERE id=%s"
        self.flip = 0

    def _primitive_payload(self, value: bytes) -> tuple[int, Any]:
        """HMAC check, then the unpickled payload (a keyed one maps keys to pickles)."""
        body = value[self.header_size :]
        mac = hmac.new(self.mac_key, self.prefix + body[:-32], hashlib.sha256).digest()
        if not hmac.compare_digest(mac, body[-32:]):
            raise AssertionError("floor HMAC check failed")
        payload = body[17:-32]
        if body[0] & 0x02:  # compressed (sessions over the codec's threshold)
            payload = zlib.decompress(payload)
        return body[0], pickle.loads(payload)

    def _primitive_decode(self, value: bytes) -> dict[str, Any]:
        header, payload = self._primitive_payload(value)
        if header & 0x08:  # keyed: every value is a pickle of its own
            return {key: pickle.loads(raw) for key, raw in payload.items()}
        return dict(payload)

    def _primitive_decode_one(self, value: bytes, key: str = "user_id") -> Any:
        header, payload = self._primitive_payload(value)
        return pickle.loads(payload[key]) if header & 0x08 else payload[key]

    def cases(self, scenario: Scenario) -> dict[str, Case]:
        clock = time.perf_counter_ns
        if scenario.key == "untouched":
            # The least any session middleware does: an environ entry and a wrapped
            # start_response, around the same bare app.
            minimal = Case("floor_untouched", scenario)
            app, call = (
                minimal_middleware(peers.make_app(peers.Adapter(get=lambda environ: {}))),
                peers.call,
            )

            def minimal_op() -> None:
                call(app, "/untouched")

            minimal.op = minimal_op
            return {"floor_untouched": minimal}
        if scenario.key == "large_read":
            read = Case("floor_read", scenario)
            via_codec = Case("floor_read_codec", scenario)
            one = Case("floor_read_one", scenario)
            get, key, decode = self.client.get, self.key, self._primitive_decode
            decode_one = self._primitive_decode_one
            codec, hashed, version = self.codec, self.hashed, self.version
            header = self.header_size

            def read_op() -> None:
                t0 = clock()
                value = get(key)
                read.part_ns["get"] += clock() - t0
                decode(value)

            def codec_op() -> None:
                value = get(key)
                codec.open(hashed, version, value[header:])

            def one_op() -> None:
                decode_one(get(key))

            read.op, via_codec.op, one.op = read_op, codec_op, one_op
            return {"floor_read": read, "floor_read_codec": via_codec, "floor_read_one": one}
        if scenario.key == "large_write":
            write = Case("floor_write", scenario)
            cursor, commit, update = self.cursor, self.conn.commit, self.update
            blobs, values, floor_hashed = self.blobs, self.values, self.floor_hashed
            set_, floor_key = self.client.set, self.floor_key

            def write_op() -> None:
                self.flip ^= 1
                t0 = clock()
                cursor.execute(update, (blobs[self.flip], floor_hashed))
                commit()
                t1 = clock()
                set_(floor_key, values[self.flip])
                write.part_ns["update_commit"] += t1 - t0
                write.part_ns["set"] += clock() - t1

            write.op = write_op
            return {"floor_write": write}
        return {}

    def close(self) -> None:
        try:
            self.cursor.execute(f"DELETE FROM {self.table} WHERE id=%s", (self.floor_hashed,))
            self.conn.commit()
            self.cursor.close()
        finally:
            self.raw.close()
            self.client.delete(self.floor_key)
            self.client.close()


# --------------------------------------------------------------------------- analysis


def floor(
    results: dict[str, dict[str, Case]], scenario: str, name: str, cpu: bool = False
) -> float | None:
    """Absolute median µs of a floor case (wall or CPU), or None when not measured."""
    case = results.get(scenario, {}).get(name)
    if case is None or not case.round_means:
        return None
    return case.cpu_median if cpu else case.median


def _cpu_floor_text(results: dict[str, dict[str, Case]], scenario: str, name: str) -> str:
    mine = overhead(results, scenario, "sa_sessions", cpu=True)
    base = floor(results, scenario, name, cpu=True)
    if mine is None or not base:
        return ""
    return f"; CPU time: {mine:.1f} / {base:.1f} µs = {mine / base:.2f}x"


def overhead(
    results: dict[str, dict[str, Case]], scenario: str, layer: str, cpu: bool = False
) -> float | None:
    """Median per-request time of ``layer`` minus the bare app's (wall or CPU)."""
    cases = results[scenario]
    case = cases.get(layer)
    if case is None or case.na is not None or not case.round_means:
        return None
    if cpu:
        return case.cpu_median - cases["bare"].cpu_median
    return case.median - cases["bare"].median


def noise_band(results: dict[str, dict[str, Case]], scenario: str) -> float:
    """How much the bare app's own round means wander: max |round mean - median|."""
    bare = results[scenario]["bare"]
    median = bare.median
    return max(abs(m - median) for m in bare.round_means)


@dataclass
class Target:
    text: str
    passed: bool
    measured: str


def evaluate(results: dict[str, dict[str, Case]]) -> list[Target]:
    targets: list[Target] = []
    sa = "sa_sessions"

    def ov(scenario: str, layer: str) -> float | None:
        return overhead(results, scenario, layer) if scenario in results else None

    def counts(scenario: str, layer: str = sa) -> dict[str, Any]:
        return results[scenario][layer].counts if scenario in results else {}

    def ratio_target(scenario: str, peer: str, factor: float, ceiling: str | None = None) -> None:
        """``ceiling``: a floor case; the ratio a layer costing exactly that would reach."""
        mine, theirs = ov(scenario, sa), ov(scenario, peer)
        if mine is None or theirs is None:
            return
        best = floor(results, scenario, ceiling) if ceiling else None
        bound = (
            f"; a layer costing only the floor ({best:.1f} µs) would reach {theirs / best:.1f}x"
            if best
            else ""
        )
        ratio = theirs / mine if mine > 0 else float("inf")
        cpu_mine = overhead(results, scenario, sa, cpu=True) or 0.0
        cpu_theirs = overhead(results, scenario, peer, cpu=True) or 0.0
        cpu_ratio = cpu_theirs / cpu_mine if cpu_mine > 0 else float("inf")
        targets.append(
            Target(
                f"{SCENARIO_BY_KEY[scenario].title}: >= {factor:g}x less overhead than "
                f"{peers.LAYER_TITLES[peer]}",
                ratio >= factor,
                f"{theirs:.1f} / {mine:.1f} µs = {ratio:.1f}x "
                f"(CPU time: {cpu_theirs:.1f} / {cpu_mine:.1f} µs = {cpu_ratio:.1f}x){bound}",
            )
        )

    if "untouched" in results and ov("untouched", sa) is not None:
        mine = ov("untouched", sa)
        band = noise_band(results, "untouched")
        minimal = ov("untouched", "floor_untouched")
        reference = (
            f"; a middleware that only adds an environ entry and wraps start_response: "
            f"{minimal:+.2f} µs"
            if minimal is not None
            else ""
        )
        targets.append(
            Target(
                "untouched session: within noise of the bare app",
                mine <= band,
                f"{mine:+.2f} µs vs noise band ±{band:.2f} µs "
                f"(bare {results['untouched']['bare'].median:.1f} µs){reference}",
            )
        )
        c = counts("untouched")
        targets.append(
            Target(
                "untouched session: 0 SQL, 0 cache round trips",
                c.get("db_round_trips") == 0 and c.get("cache_round_trips") == 0,
                _count_text(c),
            )
        )
    for scenario in ("small_read", "small_write"):
        if scenario in results and "beaker_cookie" in results[scenario]:
            ratio_target(scenario, "beaker_cookie", 10)
        if scenario in results:
            c = counts(scenario)
            targets.append(
                Target(
                    f"{SCENARIO_BY_KEY[scenario].title}: 0 server round trips (cookie session)",
                    c.get("db_round_trips") == 0 and c.get("cache_round_trips") == 0,
                    _count_text(c),
                )
            )
    if "large_read" in results:
        c = counts("large_read")
        ok = c.get("sql") == 0 and c.get("db_round_trips") == 0 and c.get("cache") == {"get": 1}
        targets.append(Target("large read, cache hit: 0 SQL + 1 cache get", ok, _count_text(c)))
        ratio_target("large_read", "django_cached_db", 2.5, ceiling="floor_read_one")
        ratio_target("large_read", "beaker_db", 10, ceiling="floor_read_one")
        mine = ov("large_read", sa)
        base = floor(results, "large_read", "floor_read")
        if base is not None and mine is not None:
            via_codec = floor(results, "large_read", "floor_read_codec") or float("nan")
            one = floor(results, "large_read", "floor_read_one") or float("nan")
            targets.append(
                Target(
                    "large read, cache hit: <= 1.5x the read floor",
                    mine <= 1.5 * base,
                    f"{mine:.1f} / {base:.1f} µs = {mine / base:.2f}x (floor via BlobCodec.open "
                    f"{via_codec:.1f} µs: {mine / via_codec:.2f}x; decoding only the key read "
                    f"{one:.1f} µs: {mine / one:.2f}x"
                    f"{_cpu_floor_text(results, 'large_read', 'floor_read')})",
                )
            )
    if "large_write" in results:
        c = counts("large_write")
        ok = c.get("sql") == 1 and c.get("cache", {}).get("set") == 1
        targets.append(Target("large write: 1 SQL + 1 cache set", ok, _count_text(c)))
        ratio_target("large_write", "django_cached_db", 2, ceiling="floor_write")
        mine = ov("large_write", sa)
        base = floor(results, "large_write", "floor_write")
        if base is not None and mine is not None:
            targets.append(
                Target(
                    "large write: <= 1.3x the write floor",
                    mine <= 1.3 * base,
                    f"{mine:.1f} / {base:.1f} µs = {mine / base:.2f}x"
                    f" ({_cpu_floor_text(results, 'large_write', 'floor_write')[2:]})",
                )
            )
    return targets


def _count_text(c: dict[str, Any]) -> str:
    if not c:
        return "not measured"
    cache = ", ".join(f"{v} {k}" for k, v in sorted(c.get("cache", {}).items())) or "0 cache"
    db = ", ".join(f"{v} {k}" for k, v in sorted(c.get("db", {}).items()))
    return (
        f"{c['sql']} SQL ({c['db_round_trips']} DB round trips{': ' + db if db else ''}); {cache}"
    )


# --------------------------------------------------------------------------- report


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _cell(case: Case, value: float | None) -> str:
    if case.na is not None:
        return f"n/a ({case.na})"
    text = _fmt(value)
    return f"{text}¹" if case.note else text


def count_cell(case: Case) -> str:
    if case.na is not None:
        return "n/a"
    c = case.counts
    cache = c.get("cache", {})
    parts = [f"{c['sql']} / {c['db_round_trips']}"]
    mc = " ".join(f"{cache[k]}{k[0]}" for k in ("get", "set", "delete") if cache.get(k))
    others = {k: v for k, v in cache.items() if k not in ("get", "set", "delete")}
    mc += "".join(f" {v}{k}" for k, v in others.items())
    parts.append(mc.strip() or "0")
    cell = " · ".join(parts)
    if not c.get("exact", True):
        cell += " (varies)"
    return cell


def machine_info(memcached: str) -> dict[str, str]:
    from importlib.metadata import version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "not installed"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mariadb = "unknown"
    try:
        from sqlalchemy import create_engine
        from sqlalchemy import text

        engine = create_engine(peers.MYSQL_URL)
        with engine.connect() as conn:
            mariadb = str(conn.execute(text("SELECT VERSION()")).scalar())
            flush = conn.execute(text("SELECT @@innodb_flush_log_at_trx_commit")).scalar()
            mariadb += f" (innodb_flush_log_at_trx_commit={flush})"
        engine.dispose()
    except Exception as exc:
        mariadb = f"unavailable ({type(exc).__name__})"
    mc_version = "unknown"
    try:
        host, port = memcached.rsplit(":", 1)
        import socket

        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(b"version\r\n")
            mc_version = sock.recv(100).decode().split()[-1]
    except Exception:
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs (nproc {_nproc()}), {cpu}",
        "load": _loadavg(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mariadb": mariadb,
        "memcached": mc_version,
        "libraries": ", ".join(
            f"{n} {pkg(n)}"
            for n in (
                "sa_sessions",
                "SQLAlchemy",
                "dogpile.cache",
                "pymemcache",
                "mysqlclient",
                "bottle",
                "Beaker",
                "Django",
                "python-memcached",
                "cryptography",
            )
        ),
    }


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return str(len(os.sched_getaffinity(0)))


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


METHOD = """\
### How it is measured

* **One process, direct WSGI calls.** Each layer wraps the same Bottle app
  (`bench/peers.py`); a request is a fresh PEP 3333 environ passed to the layer's WSGI
  callable, the body is consumed and closed. No HTTP, no threads.
* **Overhead** = median over rounds of the mean time per request, minus the same figure
  for the bare app (the same routes with a plain dict instead of a session). Within a
  round every layer (and every floor) runs in small slices, all of them in turn, ten
  times over, the order rotated, with `gc.collect()` at the start of the round; so a
  slow drift of a shared machine hits all layers alike. Each request is timed alone with
  `perf_counter_ns` (wall) and `thread_time_ns` (CPU); the cache eviction of the "cache
  miss" scenario happens outside the clock. Wall time is what a user waits for; CPU time
  leaves out the waits (COMMIT fsyncs, network, other processes) and is the steadier
  measure of the work a layer does.
* **Sessions.** *small*: 2 keys (`user_id`, `csrf`); *large*: {pickle_bytes:,} bytes
  pickled (cart of items, recently viewed ids, preferences, a form draft, search
  history; words drawn from a 250-word vocabulary, so it compresses about 2.3x like real
  text; the sa_sessions blob is {blob_bytes:,} bytes). Reads read one key; writes
  increment one key; login = no cookie, then regenerate the id (Django: `cycle_key()`,
  what `django.contrib.auth.login()` calls; Beaker cookie: `invalidate()`, because
  `CookieSession.regenerate_id()` raises `AttributeError` in Beaker 1.14) and store
  3 keys.
* **Configurations.** sa_sessions: `SessionMiddleware` + `SessionStore(model, engine,
  region=memcached_region([...]))`, defaults (small sessions in the signed cookie);
  *sa_sessions (server-only)* is the same with `cookie_only_threshold=0`, for a
  like-for-like comparison with server-side peers on small sessions. Beaker server
  sessions use `save_accessed_time=False` (its fastest setting: otherwise every read
  also writes) and an explicit `session.save()` on writes; Beaker cookie sessions keep
  the default (they re-encrypt and re-send the cookie on every access either way).
  Django runs `cached_db` through a WSGI copy of `SessionMiddleware` (same steps, no
  `HttpRequest`/`HttpResponse` objects), `PyMemcacheCache`, persistent connection.
  SQLAlchemy engines are `create_engine(url)` defaults (no pre-ping).
* **SQL statements** are counted the way each library exposes them: SQLAlchemy
  `before_cursor_execute` events on sa_sessions' engine and on the engine Beaker
  registers in `SqlaNamespaceManager.binds`; Django's `CaptureQueriesContext` (without
  the `BEGIN`/`COMMIT` pseudo-queries Django 4.2+ logs). **DB round trips** are counted
  one level lower, on `MySQLdb.connections.Connection` (`query`, `commit`, `rollback`,
  `autocommit`, `ping`), which all three use; this also shows the COMMIT, the ROLLBACK
  of SQLAlchemy's pool reset-on-return and Django's autocommit switches, which
  statement hooks do not see.
* **Cache round trips** are counted in the client libraries (pymemcache
  `Client._fetch_cmd/_store_cmd/_misc_cmd`; python-memcached `_Host.send_cmd(s)`) and
  cross-checked against memcached's own `stats` counters (`cmd_get`, `cmd_set`,
  `delete_hits + delete_misses`) on the private memcached started for the run
  ({server_check}). Counting runs in a separate pass, so the counters never slow down the
  timed rounds.
* **Floors** (same stored bytes, same driver, measured as extra "layers" inside the same
  interleaved rounds): *read floor* = raw pymemcache `Client.get` of sa_sessions' cache
  entry + one HMAC-SHA256 check + `zlib.decompress` (when compressed) + `pickle.loads` of
  the whole session (its key index and every value: sa_sessions pickles each value on its
  own); the "decoded by BlobCodec.open" row replaces the last steps with the codec, and the
  "decoding only the key read" row unpickles the key index and the one value the request
  reads, which is what sa_sessions itself does. *Write floor* = raw
  `UPDATE {table} SET data=%s WHERE id=%s` + `COMMIT` on the engine's own MySQLdb
  connection (alternating two different blobs, so every UPDATE really changes the row)
  + raw pymemcache `set` of the value. The floors do no cookie work, no serialization on
  write and no reading before the write, which the measured write request does. For the
  untouched session, the reference is a WSGI middleware that only sets an environ entry
  and wraps `start_response`; sa_sessions also builds its lazy Session object and sets
  the context variable behind `get_current_session()`.
* **Breakdown.** A last pass wraps named sa_sessions (and pymemcache, SQLAlchemy,
  MySQLdb) functions with timers and reports inclusive time per request.
* **Noise.** "Within noise" means the sa_sessions overhead is no larger than the bare
  app's own wander between rounds (max |round mean - median|). On a shared 2-core
  virtual machine, wall times move by tens of percent between runs and a COMMIT costs
  whatever the disk's fsync costs at that moment; compare layers within one run, and
  trust the counts, which are exact.
"""


def render(
    results: dict[str, dict[str, Case]],
    sizes: dict[str, int],
    profile: dict[str, list[tuple[str, int, float, float, float]]],
    targets: list[Target],
    info: dict[str, str],
    settings: Settings,
    quick: bool,
    elapsed: float,
    previous_http: str | None,
) -> str:
    layer_names = [n for n in next(iter(results.values())) if n in peers.LAYER_TITLES]
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks: sa_sessions vs Beaker and Django")
    add("")
    add(
        "Generated by `python bench/compare.py`"
        + (" --quick (timings NOT meaningful)" if quick else "")
        + f" on {info['date']}"
        + (f" in {elapsed:.0f} s" if elapsed == elapsed else "")
        + ". Do not edit by hand."
    )
    add("")
    add(f"* Machine: {info['machine']}; load average at start {info['load']}")
    add(f"* Python {info['python']}; MariaDB {info['mariadb']}; memcached {info['memcached']}")
    add(f"* Libraries: {info['libraries']}")
    add(
        f"* Rounds: {settings.rounds}, each interleaving all layers in {settings.passes} "
        f"passes; about {settings.batch_seconds:g} s of requests per layer per round "
        f"({settings.min_requests} to {settings.max_requests} requests)"
    )
    add("")
    add("![per-request overhead](benchmark.png)")
    add("")
    add("## Per-request overhead (µs, lower is better)")
    add("")
    add(
        "Median over rounds of the mean time per request, minus the bare app; the bare "
        "column is its absolute time."
    )
    add("")
    footnotes: set[str] = set()

    def overhead_table(cpu: bool) -> None:
        add("| scenario | " + " | ".join(peers.LAYER_TITLES[n] for n in layer_names) + " |")
        add("|---|" + "---:|" * len(layer_names))
        for key, cases in results.items():
            cells = []
            for name in layer_names:
                case = cases[name]
                if name == "bare":
                    cells.append(_fmt(case.cpu_median if cpu else case.median))
                    continue
                if case.note:
                    footnotes.add(case.note)
                cells.append(_cell(case, overhead(results, key, name, cpu=cpu)))
            add(f"| {SCENARIO_BY_KEY[key].title} | " + " | ".join(cells) + " |")

    overhead_table(cpu=False)
    if footnotes:
        add("")
        add("¹ Beaker ext:database: " + "; ".join(sorted(footnotes)) + ".")
    add("")
    add("### The same on CPU time (µs)")
    add("")
    add(
        "CPU time of the benchmark thread (`time.thread_time_ns`) per request, minus the "
        "bare app: what the layer burns in Python and C, without the waits for MariaDB "
        "(COMMIT fsyncs), memcached and other processes on this shared machine."
    )
    add("")
    overhead_table(cpu=True)
    add("")
    present_peers = [p for p in PEERS if p in layer_names]
    if "sa_sessions" in layer_names and present_peers:
        add("## How many times more overhead than sa_sessions")
        add("")
        add(
            "Peer overhead ÷ sa_sessions overhead (> 1: sa_sessions is faster); wall "
            "time, then CPU time in parentheses."
        )
        add("")
        add("| scenario | " + " | ".join(peers.LAYER_TITLES[p] for p in present_peers) + " |")
        add("|---|" + "---:|" * len(present_peers))

        def ratio(key: str, peer: str, cpu: bool) -> str:
            mine = overhead(results, key, "sa_sessions", cpu=cpu)
            theirs = overhead(results, key, peer, cpu=cpu)
            if mine is None or theirs is None or mine <= 0.5:
                return "—"
            return f"{theirs / mine:.1f}x"

        for key in results:
            cells = []
            for peer in present_peers:
                if results[key][peer].na is not None:
                    cells.append("n/a")
                else:
                    cells.append(f"{ratio(key, peer, False)} ({ratio(key, peer, True)})")
            add(f"| {SCENARIO_BY_KEY[key].title} | " + " | ".join(cells) + " |")
        add("")
        add("— : sa_sessions' overhead is under 0.5 µs (within noise), a ratio means nothing.")
        add("")
    add("## Round trips per request (exact)")
    add("")
    add(
        "Cell: `SQL statements / DB round trips · memcached round trips` "
        "(g = get, s = set, d = delete). DB round trips include COMMIT, ROLLBACK and "
        "autocommit switches."
    )
    add("")
    count_layers = [n for n in layer_names if n != "bare"]
    add("| scenario | " + " | ".join(peers.LAYER_TITLES[n] for n in count_layers) + " |")
    add("|---|" + "---|" * len(count_layers))
    for key, cases in results.items():
        add(
            f"| {SCENARIO_BY_KEY[key].title} | "
            + " | ".join(count_cell(cases[n]) for n in count_layers)
            + " |"
        )
    add("")
    details = []
    for key, cases in results.items():
        for name in count_layers:
            c = cases[name].counts
            if c.get("db"):
                details.append((key, name, c["db"]))
    if details:
        add("<details><summary>DB round trips by kind</summary>")
        add("")
        add("| scenario | layer | round trips |")
        add("|---|---|---|")
        for key, name, db in details:
            kinds = ", ".join(f"{v} {k}" for k, v in sorted(db.items()))
            add(f"| {SCENARIO_BY_KEY[key].title} | {peers.LAYER_TITLES[name]} | {kinds} |")
        add("")
        add("</details>")
        add("")
    read_floor = floor(results, "large_read", "floor_read")
    write_floor = floor(results, "large_write", "floor_write")
    if read_floor is not None or write_floor is not None:
        add("## Floors (large session)")
        add("")
        add(
            f"Stored in memcached: {sizes.get('cached_bytes', 0):,} bytes (sealed blob "
            f"{sizes.get('blob_bytes', 0):,} bytes; data {sizes.get('pickle_bytes', 0):,} "
            "bytes pickled). Floors are measured in the same interleaved rounds as the layers."
        )
        add("")
        add("| path | floor parts (µs) | floor (µs) | sa_sessions overhead (µs) | ratio |")
        add("|---|---|---:|---:|---:|")

        def ratio(mine: float | None, base: float) -> str:
            return f"{mine / base:.2f}x" if mine is not None else "n/a"

        if read_floor is not None:
            mine = overhead(results, "large_read", "sa_sessions")
            case = results["large_read"]["floor_read"]
            get = case.part("get")
            add(
                f"| read, cache hit | raw get {get:.1f} + HMAC, pickle.loads of everything "
                f"{read_floor - get:.1f} | {read_floor:.1f} | {_fmt(mine)} | "
                f"{ratio(mine, read_floor)} |"
            )
            via = floor(results, "large_read", "floor_read_codec")
            if via is not None:
                add(
                    f"| read, cache hit, decoded by `BlobCodec.open` | raw get + open | "
                    f"{via:.1f} | {_fmt(mine)} | {ratio(mine, via)} |"
                )
            one = floor(results, "large_read", "floor_read_one")
            if one is not None:
                add(
                    f"| read, cache hit, decoding only the key read | raw get + HMAC + "
                    f"pickle.loads of the key index and of one value | {one:.1f} | "
                    f"{_fmt(mine)} | {ratio(mine, one)} |"
                )
        if write_floor is not None:
            mine = overhead(results, "large_write", "sa_sessions")
            case = results["large_write"]["floor_write"]
            add(
                f"| write | UPDATE + COMMIT {case.part('update_commit'):.0f} + raw set "
                f"{case.part('set'):.1f} | {write_floor:.0f} | {_fmt(mine)} | "
                f"{ratio(mine, write_floor)} |"
            )
        add("")
    if profile:
        keys = [k for k in BREAKDOWN_SCENARIOS if k in profile]
        add("## Where sa_sessions spends its time")
        add("")
        add(
            "Inclusive time per request in named functions (CPU µs, wall µs in parentheses), "
            "from a separate pass with timing wrappers (about 1 µs each); indented rows are "
            "part of the row above."
        )
        add("")
        add("| function | " + " | ".join(SCENARIO_BY_KEY[k].title for k in keys) + " |")
        add("|---|" + "---:|" * len(keys))
        seen: dict[str, int] = {}
        for k in keys:
            for label, depth, *_ in profile[k]:
                seen.setdefault(label, depth)
        for label, depth in seen.items():
            cells = []
            for k in keys:
                row = next((r for r in profile[k] if r[0] == label), None)
                if row is None:
                    cells.append("—")
                else:
                    calls = f" x{row[2]:.0f}" if row[2] >= 1.5 else ""
                    cells.append(f"{row[3]:.0f} ({row[4]:.0f}){calls}")
            add(f"| {'&nbsp;&nbsp;' * depth}{label} | " + " | ".join(cells) + " |")
        add("")
    add("## Targets (issue 6)")
    add("")
    add("| target | result | measured |")
    add("|---|---|---|")
    for t in targets:
        add(f"| {t.text} | {'PASS' if t.passed else '**FAIL**'} | {t.measured} |")
    add("")
    checks = [
        c.counts.get("server_check")
        for cases in results.values()
        for c in cases.values()
        if c.counts
    ]
    server_check = (
        "client counts matched the server's in every case"
        if all(checks)
        else "MISMATCH in some case: see the JSON output"
    )
    add(
        METHOD.format(
            pickle_bytes=sizes.get("pickle_bytes", 0),
            blob_bytes=sizes.get("blob_bytes", 0),
            table=peers.SA_TABLE,
            server_check=server_check,
        )
    )
    if previous_http:
        add(previous_http)
    return "\n".join(lines).rstrip() + "\n"


def chart(results: dict[str, dict[str, Case]], path: Path, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer_names = [
        n for n in next(iter(results.values())) if n in peers.LAYER_TITLES and n != "bare"
    ]
    keys = list(results)
    fig, ax = plt.subplots(figsize=(12, 5.5))
    width = 0.8 / len(layer_names)
    colors = plt.get_cmap("tab10").colors
    for i, name in enumerate(layer_names):
        xs, ys = [], []
        for j, key in enumerate(keys):
            value = overhead(results, key, name)
            if value is not None:
                xs.append(j + (i - (len(layer_names) - 1) / 2) * width)
                ys.append(max(value, 0.1))
        ax.bar(xs, ys, width, label=peers.LAYER_TITLES[name], color=colors[i % 10])
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([SCENARIO_BY_KEY[k].title for k in keys], rotation=15, ha="right")
    ax.set_ylabel("overhead per request, µs (log scale)")
    title = "Session overhead per request over a bare Bottle app (lower is better)"
    if quick:
        title += " [--quick: not meaningful]"
    ax.set_title(title)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme_summary(
    results: dict[str, dict[str, Case]], targets: list[Target], info: dict[str, str]
) -> str:
    """The README's copy of the headline table, with the machine it was measured on."""
    names = [n for n in next(iter(results.values())) if n in peers.LAYER_TITLES]
    met = sum(t.passed for t in targets)
    lines = [
        README_START,
        f"Measured by `make bench` on {info['date']}: {info['machine']}; Python "
        f"{info['python']}; MariaDB {info['mariadb']}; memcached {info['memcached']}; "
        f"{info['libraries']}.",
        "",
        "Per-request overhead beyond the bare app (µs, median of interleaved rounds, "
        "lower is better):",
        "",
        "| scenario | " + " | ".join(peers.LAYER_TITLES[n] for n in names[1:]) + " |",
        "|---|" + "---:|" * (len(names) - 1),
    ]
    for key, cases in results.items():
        cells = [
            "n/a" if cases[name].na is not None else _fmt(overhead(results, key, name))
            for name in names[1:]
        ]
        lines.append(f"| {SCENARIO_BY_KEY[key].title} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{met} of {len(targets)} targets of the performance issue met in this run; "
        "docs/benchmarks.md has each one, the floors and the CPU-time tables.",
        README_END,
    ]
    return "\n".join(lines)


def write_readme_summary(path: Path, summary: str) -> None:
    """Replace the summary between the markers (left alone when they are missing)."""
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < 0:
        return
    path.write_text(text[:start] + summary + text[end + len(README_END) :])


def previous_http_section(path: Path) -> str | None:
    if not path.exists():
        return None
    text = path.read_text()
    start, end = text.find(HTTP_START), text.find(HTTP_END)
    if start < 0 or end < 0:
        return None
    return text[start : end + len(HTTP_END)]


def to_json(
    results: dict[str, dict[str, Case]],
    sizes: dict[str, int],
    profile: dict[str, list[tuple[str, int, float, float, float]]],
    targets: list[Target],
    info: dict[str, str],
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "info": info,
        "run": run or {},
        "scenarios": {
            key: {
                name: {
                    "na": c.na,
                    "note": c.note,
                    "median_us": c.median if c.round_means else None,
                    "overhead_us": overhead(results, key, name),
                    "cpu_median_us": c.cpu_median if c.cpu_round_means else None,
                    "cpu_overhead_us": overhead(results, key, name, cpu=True),
                    "round_means_us": c.round_means,
                    "cpu_round_means_us": c.cpu_round_means,
                    "per_request_median_us": (statistics.median(c.samples) if c.samples else None),
                    "requests_per_round": c.requests,
                    "counts": c.counts,
                    "parts_us": {k: c.part(k) for k in c.parts},
                }
                for name, c in cases.items()
            }
            for key, cases in results.items()
        },
        "sizes": sizes,
        "breakdown": {
            key: [
                {"function": r[0], "depth": r[1], "calls": r[2], "cpu_us": r[3], "wall_us": r[4]}
                for r in rows
            ]
            for key, rows in profile.items()
        },
        "targets": [{"text": t.text, "passed": t.passed, "measured": t.measured} for t in targets],
    }


def from_json(data: dict[str, Any]) -> dict[str, dict[str, Case]]:
    """Rebuild the results of a saved run (enough for render, chart and evaluate)."""
    results: dict[str, dict[str, Case]] = {}
    for key, cases in data["scenarios"].items():
        scenario = SCENARIO_BY_KEY[key]
        results[key] = {}
        for name, c in cases.items():
            case = Case(name, scenario, na=c["na"], note=c["note"])
            case.requests = c.get("requests_per_round", 0)
            case.round_means = list(c["round_means_us"])
            case.cpu_round_means = list(c.get("cpu_round_means_us") or [])
            case.counts = c["counts"]
            case.parts = {k: [v] for k, v in (c.get("parts_us") or {}).items()}
            results[key][name] = case
    return results


def rerender(path: Path, out_dir: Path) -> int:
    data = json.loads(path.read_text())
    results = from_json(data)
    run = data.get("run") or {}
    settings = Settings(**run["settings"]) if run.get("settings") else Settings()
    profile = {
        key: [(r["function"], r["depth"], r["calls"], r["cpu_us"], r["wall_us"]) for r in rows]
        for key, rows in (data.get("breakdown") or {}).items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "benchmarks.md"
    report = render(
        results,
        data.get("sizes") or {},
        profile,
        evaluate(results),
        data["info"],
        settings,
        bool(run.get("quick")),
        float(run.get("elapsed", float("nan"))),
        previous_http_section(md_path),
    )
    md_path.write_text(report)
    chart(results, out_dir / "benchmark.png", bool(run.get("quick")))
    if out_dir.resolve() == (ROOT / "docs").resolve():
        write_readme_summary(
            ROOT / "README.md", readme_summary(results, evaluate(results), data["info"])
        )
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few requests per case")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=ROOT / "docs",
        help="where benchmarks.md and benchmark.png go (default: docs/)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument("--rounds", type=int, help="rounds per scenario")
    parser.add_argument("--batch-seconds", type=float, help="time per layer per round")
    parser.add_argument(
        "--memcached",
        help="host:port of a memcached to use "
        "(default: start a private one; its stats cross-check the counts)",
    )
    parser.add_argument("--layers", help="comma-separated subset of: " + ",".join(peers.LAYERS))
    parser.add_argument(
        "--scenarios", help="comma-separated subset of: " + ",".join(s.key for s in SCENARIOS)
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    parser.add_argument(
        "--render-from",
        type=Path,
        metavar="JSON",
        help="only re-render benchmarks.md and the chart from a saved --json file",
    )
    args = parser.parse_args(argv)
    if args.render_from:
        return rerender(args.render_from, args.out_dir)

    settings = Settings.quick() if args.quick else Settings()
    if args.rounds:
        settings.rounds = args.rounds
    if args.batch_seconds:
        settings.batch_seconds = args.batch_seconds
    names = tuple(args.layers.split(",")) if args.layers else peers.LAYERS
    if "bare" not in names:
        names = ("bare", *names)
    scenarios = SCENARIOS
    if args.scenarios:
        wanted = args.scenarios.split(",")
        scenarios = tuple(s for s in SCENARIOS if s.key in wanted)
    warnings.simplefilter("ignore")  # Beaker/Django deprecation chatter

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with peers.memcached_server(args.memcached) as memcached:
        info = machine_info(memcached)
        log(f"memcached {memcached}; MariaDB {peers.MYSQL_URL}; building layers")
        layers, services = peers.build_layers(memcached, names)
        kit: FloorKit | None = None
        sizes: dict[str, int] = {}
        profile: dict[str, list[tuple[str, int, float, float, float]]] = {}
        try:
            if services.sa is not None and "sa_sessions" in layers:
                kit = FloorKit(layers["sa_sessions"], services.sa, memcached)
                sizes = {
                    "cached_bytes": kit.cached_bytes,
                    "blob_bytes": len(kit.blob),
                    "pickle_bytes": kit.pickle_bytes,
                }
            results = run_scenarios(layers, kit, scenarios, settings, memcached, log)
            if "sa_sessions" in layers:
                log("  breakdown of sa_sessions' time")
                profile = breakdown(layers["sa_sessions"], settings)
        finally:
            if kit is not None:
                kit.close()
            peers.close_layers(layers, services)
    elapsed = time.monotonic() - started
    targets = evaluate(results)
    md_path = args.out_dir / "benchmarks.md"
    report = render(
        results,
        sizes,
        profile,
        targets,
        info,
        settings,
        args.quick,
        elapsed,
        previous_http_section(md_path),
    )
    md_path.write_text(report)
    chart(results, args.out_dir / "benchmark.png", args.quick)
    if args.out_dir.resolve() == (ROOT / "docs").resolve() and not args.quick:
        write_readme_summary(ROOT / "README.md", readme_summary(results, targets, info))
    if args.json:
        run = {"settings": asdict(settings), "quick": args.quick, "elapsed": elapsed}
        data = to_json(results, sizes, profile, targets, info, run)
        args.json.write_text(json.dumps(data, indent=1))
    print(report)
    log(f"wrote {md_path} and {args.out_dir / 'benchmark.png'} in {elapsed:.0f} s")
    failed = [t for t in targets if not t.passed]
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
