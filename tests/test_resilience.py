"""Resilience on real servers: parallel requests to one session, and memcached faults.

Everything runs through :class:`~sa_sessions.SessionMiddleware` (real WSGI calls from
threads, or HTTP against a waitress server) on MariaDB and real memcached processes.

Concurrency (part 1): 50 parallel requests to one server-side session each setting its
own key, or each calling ``increment("n")``, lose nothing; a logout or a
``regenerate_id()`` racing slower requests is never undone; cookie-only sessions cannot
be merged and the browser keeps the last ``Set-Cookie`` (both responses carry complete
states).  After each burst the cached copy must be the row's version.

Faults (part 2): memcached killed mid-load, frozen with SIGSTOP mid-load, and one node of
a two-server pool killed, each followed by its return.  Each worker thread owns one
session, keeps the cookie each response sends (as a browser does), and checks every read
against what it wrote, so a stale read, a lost write or a failed request is caught the
moment it happens.  ``bench/chaos.py`` (``tests/test_chaos.py``) puts several processes
through every kind of fault at once.  Figures: docs/resilience.md.
"""

from __future__ import annotations

import http.client
import math
import statistics
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import create_engine

from sa_sessions import SessionMiddleware
from sa_sessions import SessionStore
from sa_sessions import memcached_region
from sa_sessions._clock import to_micros
from sa_sessions.cache.entry import Kind
from sa_sessions.ids import hash_session_id
from sa_sessions.store import StoredSession

from .conftest import MYSQL_URL
from .conftest import SECRET
from .conftest import MemcachedProcess
from .conftest import make_engine
from .webapp import COOKIE
from .webapp import Result
from .webapp import Web
from .webapp import call
from .webapp import clock_fixture  # noqa: F401
from .webapp import parallel
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401

PARALLEL = 50


@pytest.fixture(
    name="db_kind",
    params=[
        pytest.param(
            "mysql", id="mariadb-memcached", marks=[pytest.mark.mysql, pytest.mark.memcached]
        )
    ],
)
def db_kind_fixture(request: pytest.FixtureRequest) -> str:
    """Overrides conftest's db_kind: these tests need real servers."""
    return str(request.param)


@pytest.fixture
def engine(db_kind: str) -> Iterator[Engine]:
    """Overrides conftest's engine: a pool large enough for 50 parallel requests."""
    make_engine(db_kind).dispose()  # skips (or fails in CI) without MariaDB
    big = create_engine(MYSQL_URL, pool_pre_ping=True, pool_size=PARALLEL, max_overflow=10)
    yield big
    big.dispose()


# --------------------------------------------------------------------------- helpers


def start(mw: SessionMiddleware, query: str) -> tuple[str, str]:
    """A new session made by ``query``: (Cookie header, session id)."""
    result = call(mw, f"{query}&show")
    assert result.status == 200
    (sc,) = result.set_cookies
    return f"{COOKIE}={sc.value}", result.json["sid"]


def shown(mw: SessionMiddleware, cookie: str) -> dict[str, Any]:
    result = call(mw, "show", cookie=cookie)
    assert result.status == 200
    return result.json


def database_copy(web: Web, sid: str) -> dict[str, Any] | None:
    """The session as stored in its row, bypassing every cache."""
    record = SessionStore(web.model, web.engine, secret_keys=SECRET, clock=web.clock).load(sid)
    return None if record is None else record.data


def assert_cache_is_current(web: Web, sid: str, store: SessionStore[Any] | None = None) -> None:
    """The cached copy, if any, is the row's version; a gone row has no copy."""
    store = store or web.store
    entry = web.cache_entry(sid, store)
    row = web.row(sid, store)
    if row is None:
        assert entry is None or entry.kind is Kind.ENDED
    elif entry is not None:
        assert entry.kind is Kind.COPY and entry.number == row.version


def figures(name: str, **values: Any) -> None:
    """Measured figures, shown by ``pytest -s`` (quoted in docs/resilience.md)."""
    shown = ", ".join(
        f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in values.items()
    )
    print(f"\nFIGURES {name}: {shown}")


def raw_entry(address: str, store: SessionStore[Any], sid: str) -> Any:
    """The entry a given memcached server really holds for a session (None: nothing)."""
    from pymemcache.client.base import Client as RawClient

    assert store.cache is not None
    host, _, port = address.rpartition(":")
    raw = RawClient((host, int(port)), connect_timeout=1, timeout=1)
    try:
        hashed = hash_session_id(sid)
        value = raw.get(store.cache.key(hashed))
    finally:
        raw.close()
    return None if value is None else store.cache.entries.decode(hashed, value)


def raw_version(address: str, store: SessionStore[Any], sid: str) -> int | None:
    """The version of the copy a memcached server really holds (None: no copy)."""
    entry = raw_entry(address, store, sid)
    return entry.number if entry is not None and entry.kind is Kind.COPY else None


# --------------------------------------------------------------------------- part 1: concurrency


def test_fifty_parallel_requests_each_keep_their_own_key(web: Web) -> None:
    """All 50 requests load version 1 before any saves: 49 of them must merge."""
    loaded = threading.Barrier(PARALLEL, timeout=30)
    errors: list[BaseException] = []
    mw = web.middleware(
        cookie_only_threshold=0, hooks={"sync": lambda s: loaded.wait()}, errors=errors
    )
    cookie, sid = start(mw, "set=base:0")
    began = time.monotonic()
    results = parallel(
        PARALLEL, lambda i: call(mw, f"get=base&hook=sync&set=k{i}:{i}", cookie=cookie)
    )
    figures("fifty own keys", seconds=time.monotonic() - began)
    assert [f"{type(e).__name__}: {e}" for e in errors] == []
    assert [r.status for r in results] == [200] * PARALLEL
    # each response names the version it saved in the id cookie
    assert all(len(r.set_cookies) == 1 and not r.set_cookies[0].deleted for r in results)
    expected = {"base": 0, **{f"k{i}": i for i in range(PARALLEL)}}
    assert database_copy(web, sid) == expected
    assert web.row(sid).version == 1 + PARALLEL
    assert_cache_is_current(web, sid)
    assert shown(mw, cookie)["data"] == expected  # served from the cache


def test_fifty_parallel_increments_count_exactly(web: Web) -> None:
    loaded = threading.Barrier(PARALLEL, timeout=30)
    errors: list[BaseException] = []
    mw = web.middleware(
        cookie_only_threshold=0, hooks={"sync": lambda s: loaded.wait()}, errors=errors
    )
    cookie, sid = start(mw, "set=n:0")
    began = time.monotonic()
    results = parallel(PARALLEL, lambda i: call(mw, "get=n&hook=sync&incr=n", cookie=cookie))
    figures("fifty increments", seconds=time.monotonic() - began)
    assert [f"{type(e).__name__}: {e}" for e in errors] == []
    assert [r.status for r in results] == [200] * PARALLEL
    seen = sorted(r.json["incr"] for r in results)
    assert seen[-1] <= PARALLEL  # each saw its own addition on the data it loaded
    assert database_copy(web, sid) == {"n": PARALLEL}
    assert_cache_is_current(web, sid)
    assert shown(mw, cookie)["data"] == {"n": PARALLEL}


class _Server:
    """The middleware served by waitress on a free loopback port, in a thread."""

    def __init__(self, app: SessionMiddleware, threads: int) -> None:
        waitress_server = pytest.importorskip("waitress.server")
        self.server = waitress_server.create_server(
            app, host="127.0.0.1", port=0, threads=threads, channel_timeout=30
        )
        self.port = int(self.server.effective_port)
        self.loop = pytest.importorskip("waitress.wasyncore").loop
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        # server.run() would still be in select() on the sockets close() closes.
        while not self.stop.is_set():
            self.loop(timeout=0.05, map=self.server._map, count=1)

    def get(self, query: str, cookie: str) -> Result:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/?" + query, headers={"Cookie": cookie})
            response = conn.getresponse()
            body = response.read()
            return Result(response.status, response.getheaders(), body)
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.server.close()


def test_fifty_parallel_increments_over_http(web: Web) -> None:
    """The same through a real server: 50 HTTP clients, waitress with 16 threads."""
    errors: list[BaseException] = []
    mw = web.middleware(cookie_only_threshold=0, errors=errors)
    cookie, sid = start(mw, "set=n:0")
    server = _Server(mw, threads=16)
    try:
        began = time.monotonic()
        results = parallel(PARALLEL, lambda i: server.get("incr=n", cookie))
        figures("fifty increments over http", seconds=time.monotonic() - began)
    finally:
        server.close()
    assert [f"{type(e).__name__}: {e}" for e in errors] == []
    assert [r.status for r in results] == [200] * PARALLEL
    assert database_copy(web, sid) == {"n": PARALLEL}
    assert_cache_is_current(web, sid)


SLOW_WRITES = [
    "set=x:1",  # a full write: versioned UPDATE, then the locked merge finds no row
    "incr=n",
    "quick=q:1",  # a cache-only write: the cached copy is gone, so it goes to the row
    "del=big",  # shrinks into a cookie: the row is checked before a data cookie is issued
    'update={"y":2}&modified',
]


def _race(web: Web, mw: SessionMiddleware, cookie: str, winner: str) -> tuple[Result, list[Result]]:
    """Slower requests all load the session, then ``winner`` runs, then they save."""
    loaded = threading.Barrier(len(SLOW_WRITES) + 1, timeout=30)
    release = threading.Event()

    def pause(session: Any) -> None:
        loaded.wait()
        assert release.wait(30)

    hooked = web.middleware(hooks={"pause": pause}, store=mw.settings.store)
    slow: list[Result] = []
    runner = threading.Thread(
        target=lambda: slow.extend(
            parallel(
                len(SLOW_WRITES),
                lambda i: call(hooked, f"get=user&{SLOW_WRITES[i]}&hook=pause", cookie=cookie),
            )
        )
    )
    runner.start()
    loaded.wait()
    first = call(mw, winner, cookie=cookie)
    release.set()
    runner.join(60)
    assert len(slow) == len(SLOW_WRITES)
    return first, slow


def test_logout_racing_slower_requests_is_never_undone(web: Web) -> None:
    mw = web.middleware()
    cookie, sid = start(mw, "set=user:1&rand=big:6000")  # too big for a cookie
    assert web.row(sid) is not None
    logout, slow = _race(web, mw, cookie, "terminate")
    assert logout.status == 200
    assert [sc.deleted for sc in logout.set_cookies] == [True]
    for action, result in zip(SLOW_WRITES, slow, strict=True):
        assert result.status == 200, action
        assert result.set_cookies == [], action  # nothing re-issued (nor deleted)
    assert web.row(sid) is None
    assert not web.cached(sid)
    for _ in range(3):  # later requests with the old cookie are anonymous
        again = shown(mw, cookie)
        assert again["active"] is False and again["data"] == {}
    assert web.rows() == 0


def test_regenerate_racing_a_request_with_the_old_id(web: Web) -> None:
    """The old id stays dead; writes of requests still using it are dropped with it."""
    mw = web.middleware()
    cookie, old_sid = start(mw, "set=user:1&rand=big:6000")
    login, slow = _race(web, mw, cookie, 'regen&set=who:"login"&show')
    assert login.status == 200
    (new_cookie,) = login.set_cookies
    new_sid = login.json["sid"]
    assert new_sid != old_sid
    for action, result in zip(SLOW_WRITES, slow, strict=True):
        assert result.status == 200, action
        assert result.set_cookies == [], action  # the new cookie is never overwritten
    assert web.row(old_sid) is None
    assert not web.cached(old_sid)
    assert shown(mw, cookie)["active"] is False
    data = shown(mw, f"{COOKIE}={new_cookie.value}")["data"]
    assert data["user"] == 1 and data["who"] == "login"
    assert set(data) == {"user", "big", "who"}
    assert web.rows() == 1


def test_cookie_only_sessions_cannot_be_merged_the_last_cookie_wins(web: Web) -> None:
    """Documented behaviour: each response carries its complete state; one is kept."""
    both_loaded = threading.Barrier(2, timeout=30)
    order: list[int] = []
    lock = threading.Lock()
    mw = web.middleware(hooks={"sync": lambda s: both_loaded.wait()})
    cookie, _ = start(mw, "set=base:0")
    assert cookie.split("=", 1)[1].startswith("v1.d")  # all data in the cookie

    def request(i: int) -> Result:
        result = call(mw, f"get=base&hook=sync&set={'ab'[i]}:{i + 1}", cookie=cookie)
        with lock:
            order.append(i)
        return result

    results = parallel(2, request)
    states = []
    for result in results:
        (sc,) = result.set_cookies
        assert sc.value.startswith("v1.d")
        states.append(shown(mw, f"{COOKIE}={sc.value}")["data"])
    assert states == [{"base": 0, "a": 1}, {"base": 0, "b": 2}]  # each complete
    browser = results[order[-1]].set_cookies[0].value  # the last Set-Cookie processed
    kept = shown(mw, f"{COOKIE}={browser}")["data"]
    assert kept == states[order[-1]]
    assert len(kept) == 2  # one request's change is gone: no server copy to merge into
    assert web.rows() == 0


def test_a_refill_that_lost_the_race_against_a_logout_cannot_land(web: Web) -> None:
    """A request that missed the cache reads the row; a logout deletes it; then the
    refill arrives.  The logout left an end marker, which the refill cannot replace."""
    mw = web.middleware(cookie_only_threshold=0)
    cookie, sid = start(mw, "set=user:1")
    cache = web.store.cache
    assert cache is not None
    hashed = hash_session_id(sid)
    web.evict(sid)
    stamp = web.store.clock()  # the racing request reads the row ...
    row = web.row(sid)
    assert call(mw, "terminate", cookie=cookie).status == 200  # ... the logout ...
    assert web.row(sid) is None and web.ended_in_cache(sid)
    # it found nothing in the cache, so it adds
    late = cache.fill(hashed, row.version, bytes(row.data), to_micros(stamp), 60.0)
    assert late is False  # ... and the refill finds the end marker
    assert web.ended_in_cache(sid)
    assert shown(mw, cookie)["active"] is False


# --------------------------------------------------------------------------- part 2: faults


@dataclass
class Sample:
    at: float  # seconds since the run started
    latency: float
    status: int
    action: str


@dataclass
class Worker:
    """One thread with its own server-side session; remembers what it wrote."""

    index: int
    cookie: str
    sid: str
    expected: dict[str, Any]
    terminate_at: float | None = None
    terminated: bool = False
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class LoadRun:
    """Worker threads hammering their own sessions while the main thread breaks things."""

    def __init__(self, mw: SessionMiddleware, workers: int, *, keys: int = 12) -> None:
        self.mw = mw
        self.keys = keys
        self.workers = []
        for i in range(workers):
            cookie, sid = start(mw, f"set=owner:{i}")
            self.workers.append(Worker(i, cookie, sid, {"owner": i}))
        self.started = 0.0
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> None:
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._work, args=(w,)) for w in self.workers]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads)

    def _work(self, w: Worker) -> None:
        step = 0
        while not self.stop.is_set():
            step += 1
            if w.terminate_at is not None and not w.terminated and self.now() >= w.terminate_at:
                action = "terminate"
            elif w.terminated or step % 3 == 0:
                action = "show"
            elif step % 3 == 1:
                action = "incr=n"
            else:
                action = f"set=k{step % self.keys}:{step}"
            began = self.now()
            try:
                result = call(self.mw, action, cookie=w.cookie)
            except Exception as exc:  # recorded, the run goes on
                w.problems.append(f"{action}: {type(exc).__name__}: {exc}")
                continue
            w.samples.append(Sample(began, self.now() - began, result.status, action))
            if result.status != 200:
                w.problems.append(f"{action}: status {result.status} at {began:.2f}s")
                continue
            for sc in result.set_cookies:  # keep what the browser would keep
                w.cookie = f"{COOKIE}={sc.value}" if not sc.deleted else ""
            if action == "terminate":
                w.terminated = True
                w.expected = {}
            elif action == "incr=n":
                w.expected["n"] = w.expected.get("n", 0) + 1
            elif action.startswith("set="):
                w.expected[f"k{step % self.keys}"] = step
            else:
                data = result.json["data"]
                if data != w.expected or result.json["active"] == w.terminated:
                    w.problems.append(f"stale read at {began:.2f}s: {data} != {w.expected}")
            if result.set_cookies and action in ("show",):
                w.problems.append(f"{action}: unexpected Set-Cookie")

    # ------------------------------------------------------------------ results

    @property
    def samples(self) -> list[Sample]:
        return sorted((s for w in self.workers for s in w.samples), key=lambda s: s.at)

    def problems(self) -> list[str]:
        return [f"worker {w.index}: {p}" for w in self.workers for p in w.problems]

    def between(self, begin: float, end: float) -> list[Sample]:
        return [s for s in self.samples if begin <= s.at < end]

    def verify(self, web: Web, store: SessionStore[Any]) -> None:
        """Every write is in the row; every session reads back exactly, through the cache."""
        assert self.problems() == []
        assert len(self.samples) > 20 * len(self.workers)
        for w in self.workers:
            stored = database_copy(web, w.sid)
            if w.terminated:
                assert stored is None
                assert web.row(w.sid, store) is None
            else:
                assert stored == w.expected
            for _ in range(2):  # the second read is a cache hit
                data = shown(self.mw, w.cookie)
                assert data["data"] == w.expected
                assert data["active"] is not w.terminated


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def fault_store(web: Web, servers: list[str], **options: Any) -> SessionStore[Any]:
    """A store on these memcached servers with short fault-detection settings."""
    region = memcached_region(
        servers,
        timeout=options.pop("timeout", 0.2),
        connect_timeout=options.pop("connect_timeout", 0.2),
        dead_timeout=options.pop("dead_timeout", 1.0),
        failure_threshold=options.pop("failure_threshold", 2),
    )
    store = web.new_store(region=region, **options)
    web.store = store  # web.cached() and friends look here
    return store


def node_states(store: SessionStore[Any]) -> dict[str, str]:
    assert store.cache is not None
    states: dict[str, str] = store.cache.backend.node_states()  # type: ignore[attr-defined]
    return states


WORKERS = 6


@pytest.mark.slow
def test_memcached_killed_mid_load_then_restarted(
    web: Web, memcached_factory: Callable[[], MemcachedProcess]
) -> None:
    """No request fails, no write is lost, reads come from the database meanwhile;
    after the restart (empty, same port) nothing stale is served."""
    server = memcached_factory()
    store = fault_store(web, [server.address])
    assert store.cache is not None
    run = LoadRun(web.middleware(store, cookie_only_threshold=0), WORKERS)
    run.run()
    try:
        time.sleep(1.5)
        killed_at = run.now()
        server.kill()
        errors_before = store.cache.stats.errors
        time.sleep(2.0)
        restarted_at = run.now()
        server.start()
        time.sleep(3.0)
    finally:
        run.finish()
    assert store.cache.stats.errors > errors_before  # the outage was noticed ...
    run.verify(web, store)  # ... and no request, write or read suffered
    during = [s.latency for s in run.between(killed_at, restarted_at)]
    figures(
        "memcached killed",
        requests=len(run.samples),
        during=len(during),
        p50_ms=1000 * percentile(during, 0.5),
        p99_ms=1000 * percentile(during, 0.99),
        max_ms=1000 * max(during),
        cache_errors=store.cache.stats.errors,
    )
    assert len(during) > 50
    assert max(during) < 1.0  # refused connections cost no timeout
    # Back in use: every live session has a current copy on the restarted server.
    for w in run.workers:
        assert raw_version(server.address, store, w.sid) == web.row(w.sid, store).version
    assert node_states(store) == {server.address: "closed"}


@pytest.mark.slow
def test_memcached_frozen_mid_load_costs_at_most_the_timeout(
    web: Web, memcached_factory: Callable[[], MemcachedProcess]
) -> None:
    """SIGSTOP: calls time out instead of blocking; the breaker then skips the server.

    Sessions are written and logged out while the server is frozen; it wakes up still
    holding their old copies.  Their owners' cookies name newer versions, so the old
    copies are never served to them; a replayed logged-out cookie is served nothing
    once ``max_staleness`` has passed since the copy was last known current.
    """
    timeout, dead_timeout, freeze, staleness = 0.2, 1.0, 3.0, 1.0
    server = memcached_factory()
    store = fault_store(
        web, [server.address], timeout=timeout, dead_timeout=dead_timeout, max_staleness=staleness
    )
    store.clock = datetime_now  # max_staleness runs on the wall clock here
    assert store.cache is not None and server.proc is not None
    run = LoadRun(web.middleware(store, cookie_only_threshold=0), WORKERS)
    replays = {w.index: w.cookie for w in run.workers[:2]}
    run.workers[0].terminate_at = 1.0 + 0.05  # right after the freeze
    run.workers[1].terminate_at = 1.0 + 1.5  # while the breaker is open
    run.run()
    try:
        time.sleep(1.0)
        frozen_at = run.now()
        server.freeze()
        time.sleep(freeze)
        thawed_at = run.now()
        server.thaw()
        time.sleep(3.0)
    finally:
        server.thaw()
        run.finish()
    run.verify(web, store)
    assert run.workers[0].terminated and run.workers[1].terminated
    for index, cookie in replays.items():  # the first cookie each logged-out worker had
        assert shown(run.mw, cookie)["active"] is False, index
    frozen = run.between(frozen_at, thawed_at)
    latencies = [s.latency for s in frozen]
    breaker = store.cache.backend.nodes()[0].breaker  # type: ignore[attr-defined]
    # Cache calls that really went out and failed (timed out), as opposed to calls the
    # open breaker refused at once.
    paid = store.cache.stats.errors - breaker.refused
    figures(
        "memcached frozen",
        timeout_s=timeout,
        frozen_s=freeze,
        requests=len(frozen),
        cache_calls_timed_out=paid,
        cache_calls_refused_by_the_breaker=breaker.refused,
        p50_ms=1000 * statistics.median(latencies),
        p99_ms=1000 * percentile(latencies, 0.99),
        max_ms=1000 * max(latencies),
    )
    # No request blocks on the frozen server: each cache call is cut off by the socket
    # timeout (a request makes at most three: read, write, end marker).  The bound is
    # generous, since the database answers every request meanwhile on a busy machine.
    assert max(latencies) < 3 * timeout + 1.0
    # The breaker stops paying timeouts: the first calls of every worker thread, one
    # trial per dead_timeout, and the end markers of the two logouts; everything else
    # is refused at once.
    trials = math.ceil(freeze / dead_timeout) + 1
    assert paid <= 2 * WORKERS + trials + 2
    assert breaker.refused > 10 * paid
    assert node_states(store) == {server.address: "closed"}


@pytest.mark.slow
def test_two_server_pool_with_one_node_killed_and_returning(
    web: Web, memcached_factory: Callable[[], MemcachedProcess]
) -> None:
    """Keys of the dead node are misses, never moved to the survivor; it returns empty
    on the same port and is refilled."""
    a, b = memcached_factory(), memcached_factory()
    store = fault_store(web, [a.address, b.address], dead_timeout=1.5)
    assert store.cache is not None
    run = LoadRun(web.middleware(store, cookie_only_threshold=0), 10)
    on_b = [w for w in run.workers if raw_version(b.address, store, w.sid) is not None]
    on_a = [w for w in run.workers if raw_version(a.address, store, w.sid) is not None]
    assert on_a and on_b and len(on_a) + len(on_b) == len(run.workers)
    run.run()
    try:
        time.sleep(1.5)
        killed_at = run.now()
        b.kill()
        time.sleep(3.0)
        moved = [raw_entry(a.address, store, w.sid) for w in on_b]
        restarted_at = run.now()
        b.start()
        time.sleep(3.0)
    finally:
        run.finish()
    run.verify(web, store)
    assert moved == [None] * len(on_b)  # the survivor never held b's keys
    during = [s.latency for s in run.between(killed_at, restarted_at)]
    figures(
        "pool node killed",
        during=len(during),
        p50_ms=1000 * percentile(during, 0.5),
        p99_ms=1000 * percentile(during, 0.99),
        max_ms=1000 * max(during),
    )
    assert max(during) < 1.0
    for w in on_b:  # b is back, refilled from the database
        assert raw_version(b.address, store, w.sid) == web.row(w.sid, store).version
    for w in on_a:
        assert raw_version(a.address, store, w.sid) == web.row(w.sid, store).version


@pytest.mark.slow
def test_an_end_marker_is_tried_even_on_a_node_marked_dead(
    web: Web, memcached_factory: Callable[[], MemcachedProcess]
) -> None:
    """A node this process believes dead may answer again already: a logout still tries
    to leave its end marker there, so the node cannot serve the session afterwards."""
    server = memcached_factory()
    store = fault_store(web, [server.address], dead_timeout=30.0, failure_threshold=1)
    assert store.cache is not None
    expires = web.clock() + timedelta(hours=1)
    gone = store.create({"user": 1}, expires_at=expires)
    other = store.create({"x": 1}, expires_at=expires)
    server.freeze()
    try:
        assert store.load(other.session_id) is not None  # times out: marked dead; the row
    finally:
        server.thaw()
    assert node_states(store)[server.address] == "open"
    assert store.load(other.session_id) is not None  # skipped: the row answers
    store.delete(gone.session_id)  # the logout
    assert raw_entry(server.address, store, gone.session_id).kind is Kind.ENDED
    assert store.load(gone.session_id) is None


@pytest.mark.slow
def test_one_dead_node_does_not_switch_the_pool_off(
    web: Web, memcached_factory: Callable[[], MemcachedProcess]
) -> None:
    """Each node has its own breaker: the survivor keeps serving its keys from the cache."""
    a, b = memcached_factory(), memcached_factory()
    store = fault_store(web, [a.address, b.address], dead_timeout=30.0)
    assert store.cache is not None
    records: dict[str, StoredSession] = {}
    expires = web.clock() + timedelta(hours=1)
    while not ({"a", "b"} <= set(records)):
        record = store.create({"n": 0}, expires_at=expires)
        on_a = raw_version(a.address, store, record.session_id) is not None
        records["a" if on_a else "b"] = record
    b.kill()
    for _ in range(30):
        for record in records.values():
            assert store.load(record.session_id) is not None
        time.sleep(0.02)
    assert node_states(store) == {a.address: "closed", b.address: "open"}
    store.cache.stats.reset()
    loaded = store.load(records["a"].session_id)
    assert loaded is not None and loaded.data == {"n": 0}
    assert store.cache.stats.gets == 1 and store.cache.stats.errors == 0  # a cache hit
    on_b = store.load(records["b"].session_id)
    assert on_b is not None
    saved = store.save(on_b.session_id, {"n": 1}, expires_at=expires, base=on_b)
    assert saved is not None
    assert raw_entry(a.address, store, saved.session_id) is None  # never moved to a


def datetime_now() -> Any:
    from datetime import datetime
    from datetime import timezone

    return datetime.now(timezone.utc)
