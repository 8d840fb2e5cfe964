"""The measuring engine: scenarios, cases, exact counts and interleaved timed rounds.

A *case* is one thing measured in one scenario: a session layer (a request through
its WSGI app) or a floor (raw operations, ``bench/floors.py``).  Every case of a
scenario is prepared, checked, counted, then timed in the same rounds: a round is
``Settings.passes`` passes over all cases, each pass running a slice of every case's
requests, the order rotated, so slow drifts of a shared machine hit all cases alike.
Each request is timed alone, on the wall clock (``perf_counter_ns``) and on the
thread's CPU clock (``thread_time_ns``); an untimed hook (the cache eviction of a
"cache miss" scenario) runs outside both.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import counters
import peers
import shapes

# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    #: "untouched", "read", "write", "read_miss" or "login"
    op: str
    path: str
    #: the session shape created first (bench/shapes.py), or None (no cookie)
    shape: str | None
    #: delete the cached copy before every measured request (outside the clock)
    evict: bool = False
    #: the body every checked request must return
    expect: bytes | None = None


_READ_BODY = f"user {shapes.USER_ID}".encode()


def shape_scenarios(shape: str) -> tuple[Scenario, Scenario, Scenario]:
    """Read on a cache hit, write, read on a cache miss, on a server-side ``shape``."""
    title = shapes.SHAPES[shape].title if shape in shapes.SHAPES else shape
    return (
        Scenario(f"{shape}_read", f"{title}: read, cache hit", "read", "/read", shape,
                 expect=_READ_BODY),
        Scenario(f"{shape}_write", f"{title}: write", "write", "/write", shape, expect=b"ok"),
        Scenario(f"{shape}_read_miss", f"{title}: read, cache miss", "read_miss", "/read", shape,
                 evict=True, expect=_READ_BODY),
    )  # fmt: skip


def all_scenarios() -> tuple[Scenario, ...]:
    out = [
        Scenario(
            "untouched", "untouched session", "untouched", "/untouched", "small", expect=b"ok"
        ),
        Scenario("small_read", "small read (cookie)", "read", "/read", "small", expect=_READ_BODY),
        Scenario("small_write", "small write (cookie)", "write", "/write", "small", expect=b"ok"),
    ]
    for shape in shapes.SERVER_SHAPES:
        out += shape_scenarios(shape)
    out.append(Scenario("login", "login (create + regenerate id)", "login", "/login", None,
                        expect=b"ok"))  # fmt: skip
    return tuple(out)


SCENARIOS = all_scenarios()
SCENARIO_BY_KEY = {s.key: s for s in SCENARIOS}


def scenario_for(key: str) -> Scenario:
    """A scenario by key: a main one, or a curve point (``curve_<shape>``)."""
    if key in SCENARIO_BY_KEY:
        return SCENARIO_BY_KEY[key]
    if key.startswith("curve_"):
        shape = key.removeprefix("curve_")
        return Scenario(key, shape, "read", "/read", shape, expect=_READ_BODY)
    raise KeyError(key)


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    rounds: int = 7
    batch_seconds: float = 0.12  # measured time per (round, case) batch
    min_requests: int = 8  # per round, even for a case slower than batch_seconds
    max_requests: int = 2000
    warmup: int = 20  # requests, or warmup_seconds, whichever comes first (at least 3)
    warmup_seconds: float = 0.5
    count_requests: int = 10  # or count_seconds' worth, whichever is fewer (at least 3)
    count_seconds: float = 1.0
    passes: int = 8  # interleaving slices per round
    breakdown_requests: int = 100  # per write scenario (reads run 4x as many)

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            rounds=2,
            batch_seconds=0.005,
            min_requests=3,
            max_requests=20,
            warmup=2,
            warmup_seconds=0.05,
            count_requests=3,
            count_seconds=0.05,
            passes=2,
            breakdown_requests=3,
        )


@dataclass
class Servers:
    """The shared cache servers of a run (their statistics cross-check the counts)."""

    memcached: str
    redis: str | None = None


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One measured thing in one scenario: a layer or a floor, its state and timings."""

    name: str
    scenario: Scenario
    layer: peers.Layer | None = None  # None for the floors
    op: Callable[[], Any] | None = None  # one measured request/operation
    hook: Callable[[], None] | None = None  # untimed, before every op (cache eviction)
    cookie: str | None = None
    sid: str | None = None
    na: str | None = None
    note: str | None = None
    #: floors: what they were built from (source layer, sizes, checks)
    extra: dict[str, Any] = field(default_factory=dict)
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
    def is_floor(self) -> bool:
        return self.layer is None

    @property
    def measured(self) -> bool:
        return self.na is None and bool(self.round_means)

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


def _lookup(table: dict[str, str], scenario: Scenario) -> str | None:
    return table.get(scenario.key) or table.get(scenario.op)


def prepare(case: Case) -> None:
    """Create the session this scenario starts from; record why a layer cannot."""
    scenario, layer = case.scenario, case.layer
    assert layer is not None
    reason = _lookup(layer.unsupported, scenario)
    if reason is not None:
        case.na = reason
        return
    case.note = _lookup(layer.note, scenario)
    if scenario.shape is not None and layer.name not in ("bare", "middleware_only"):
        try:
            response = peers.call(layer.wsgi, f"/setup/{scenario.shape}")
        except Exception as exc:  # e.g. Beaker's cookie refusing 20 KB
            case.na = f"{type(exc).__name__}: {_first_line(exc)}"
            return
        cookies = response.set_cookies()
        if response.status != "200 OK" or not cookies:
            case.na = f"setup failed ({response.status})"
            return
        case.cookie = peers.cookie_pair(cookies[0])
        case.sid = response.body.decode() or case.cookie.split("=", 1)[1]
        # Some layers lose a session they cannot store without saying so.
        back = peers.call(layer.wsgi, "/read", case.cookie)
        if back.body != _READ_BODY:
            case.na = f"the session was not stored (read back: {back.body[:40]!r})"
            return
    if scenario.evict and layer.evict is not None:
        evict, sid, pair = layer.evict, case.sid or "", case.cookie or ""
        case.hook = lambda: evict(sid, pair)
    app, path, cookie = layer.wsgi, scenario.path, case.cookie
    call = peers.call

    def op() -> None:
        if call(app, path, cookie).status != "200 OK":
            raise RuntimeError(f"{layer.name}/{scenario.key}: request failed")

    case.op = op


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:140] if text else ""


def check(case: Case) -> None:
    """One request, fully checked (status and body): the session really was used."""
    assert case.layer is not None
    if case.hook is not None:
        case.hook()
    response = peers.call(case.layer.wsgi, case.scenario.path, case.cookie)
    expect = case.scenario.expect
    if response.status != "200 OK" or (expect is not None and response.body != expect):
        raise RuntimeError(f"got {response.status} {response.body[:60]!r}")


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


def warm_up(case: Case, settings: Settings) -> float | None:
    """Check and run a few operations; the median wall µs per operation, or None (and
    ``case.na`` says why) when the case fails."""
    try:
        if case.layer is not None:
            for _ in range(3):
                check(case)
        deadline = time.monotonic() + settings.warmup_seconds
        for done in range(settings.warmup):
            if done >= 3 and time.monotonic() > deadline:
                break
            run_chunk(case, 1)
    except Exception as exc:  # a layer that cannot do this shape (size limits, ...)
        case.na = f"fails: {type(exc).__name__}: {_first_line(exc)}"
        return None
    median = statistics.median(case.samples)
    case.samples.clear()
    case._wall = case._cpu = case._n = 0
    case.part_ns.clear()
    return median


def count(case: Case, settings: Settings, servers: Servers, mean_us: float) -> None:
    """Exact per-request SQL statements, DB round trips and cache round trips."""
    requests = max(3, min(settings.count_requests, int(settings.count_seconds * 1e6 / mean_us)))
    driver, memcached, redis = counters.DriverCounter(), counters.CacheCounter(), None
    sql = counters.SqlCounter(case.layer) if case.layer is not None else None
    op, hook = case.op, case.hook
    assert op is not None
    per_request: list[tuple[int, tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]] = []
    mc_before = counters.memcached_stats(servers.memcached)
    redis_before = counters.redis_stats(servers.redis) if servers.redis else {}
    if servers.redis:
        redis = counters.RedisCounter()
    driver.install()
    memcached.install()
    if redis is not None:
        redis.install()
    if sql is not None:
        sql.install()
    try:
        for _ in range(requests):
            if hook is not None:
                hook()
            s0 = sql.snapshot() if sql is not None else 0
            d0, c0 = Counter(driver.counts), Counter(memcached.counts)
            r0 = Counter(redis.counts) if redis is not None else Counter()
            op()
            d1, c1 = Counter(driver.counts), Counter(memcached.counts)
            r1 = Counter(redis.counts) if redis is not None else Counter()
            d1.subtract(d0)
            c1.subtract(c0)
            r1.subtract(r0)
            c1.update(r1)
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
        if redis is not None:
            redis.uninstall()
        memcached.uninstall()
        driver.uninstall()
    kinds = ("get", "set", "delete")
    server = {
        "memcached": counters.memcached_ops(mc_before, counters.memcached_stats(servers.memcached))
    }
    client = {"memcached": {k: memcached.counts.get(k, 0) for k in kinds}}
    if redis is not None and servers.redis:
        after = counters.redis_stats(servers.redis)
        server["redis"] = counters.redis_ops(redis_before, after, redis.script_writes)
        client["redis"] = {k: redis.counts.get(k, 0) for k in kinds}
    distinct = set(per_request)
    sql_n, db_ops, cache_ops = per_request[-1]
    db, cache = dict(db_ops), dict(cache_ops)
    case.counts = {
        "sql": sql_n,
        "db_round_trips": sum(db.values()),
        "db": db,
        "cache": cache,
        "cache_round_trips": sum(cache.values()),
        "exact": len(distinct) == 1,
        "server_check": server == client,
        "server_ops": server,
        "client_ops": client,
    }
    if len(distinct) > 1:  # report means when requests differ (they should not), and how
        n = len(per_request)
        case.counts["variants"] = [
            {"requests": per_request.count(v), "sql": v[0], "db": dict(v[1]), "cache": dict(v[2])}
            for v in sorted(distinct, key=per_request.index)
        ]
        case.counts["sql"] = sum(p[0] for p in per_request) / n
        case.counts["db_round_trips"] = sum(sum(dict(p[1]).values()) for p in per_request) / n
        case.counts["cache_round_trips"] = sum(sum(dict(p[2]).values()) for p in per_request) / n


def request_budget(mean_us: float, settings: Settings) -> int:
    n = int(settings.batch_seconds * 1e6 / max(mean_us, 1.0))
    return max(settings.min_requests, min(settings.max_requests, n))


#: Builds the floor cases of a scenario from its prepared, warmed-up layer cases.
FloorFactory = Callable[[Scenario, dict[str, Case]], dict[str, Case]]

Results = dict[str, dict[str, Case]]


def run_scenarios(
    layers: dict[str, peers.Layer],
    floors: FloorFactory | None,
    scenarios: tuple[Scenario, ...],
    settings: Settings,
    servers: Servers,
    log: Callable[[str], None],
) -> Results:
    """Every scenario: prepare, check, build the floors, count, then interleaved rounds."""
    results: Results = {}
    for scenario in scenarios:
        cases: dict[str, Case] = {}
        for name, layer in layers.items():
            if layer.only is not None and scenario.op not in layer.only:
                continue
            case = Case(name, scenario, layer)
            prepare(case)
            cases[name] = case
        means: dict[str, float] = {}
        for case in cases.values():
            if case.na is None:
                mean = warm_up(case, settings)
                if mean is not None:
                    means[case.name] = mean
        if floors is not None:
            for name, case in floors(scenario, cases).items():
                cases[name] = case
                if case.na is None:
                    mean = warm_up(case, settings)
                    if mean is not None:
                        means[name] = mean
        live = [c for c in cases.values() if c.na is None]
        for case in live:
            case.requests = request_budget(means[case.name], settings)
        for case in live:
            count(case, settings, servers, means[case.name])
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
        summary = " ".join(
            f"{n}={c.median:.0f}" if c.measured else f"{n}=n/a" for n, c in cases.items()
        )
        log(f"  {scenario.title:36s} {summary}")
    return results


# --------------------------------------------------------------------------- analysis


def overhead(results: Results, scenario: str, name: str, cpu: bool = False) -> float | None:
    """Median per-request time of a layer minus the bare app's (wall or CPU); for a
    floor, its absolute median (a floor does not run the app)."""
    cases = results.get(scenario, {})
    case = cases.get(name)
    if case is None or not case.measured:
        return None
    value = case.cpu_median if cpu else case.median
    if case.is_floor:
        return value
    bare = cases.get("bare")
    if bare is None or not bare.measured:
        return None
    return value - (bare.cpu_median if cpu else bare.median)


def round_overheads(results: Results, scenario: str, name: str, cpu: bool = False) -> list[float]:
    """Per-round overheads (same definition as :func:`overhead`, round by round)."""
    cases = results.get(scenario, {})
    case = cases.get(name)
    if case is None or not case.measured:
        return []
    values = case.cpu_round_means if cpu else case.round_means
    if case.is_floor:
        return list(values)
    bare = cases.get("bare")
    if bare is None or not bare.measured:
        return []
    base = bare.cpu_round_means if cpu else bare.round_means
    return [v - b for v, b in zip(values, base, strict=False)]


def noise_band(results: Results, scenario: str) -> float:
    """How much the bare app's own round means wander: max |round mean - median|."""
    bare = results[scenario]["bare"]
    median = bare.median
    return max(abs(m - median) for m in bare.round_means)
