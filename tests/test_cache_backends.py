"""The session cache interface: one contract every backend implementation must pass.

Each test runs against the in-process cache, the adapter over dogpile's own memory
backend, real memcached (one node and a two-node pool) and real Redis (one node and
a two-node pool).  Failure tests kill real servers or point at closed ports.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import pytest
from dogpile.cache import make_region

from sa_sessions.cache.backend import CacheUnavailable
from sa_sessions.cache.backend import SessionCacheBackend
from sa_sessions.cache.backend import Token
from sa_sessions.cache.memcached import MemcachedPool
from sa_sessions.cache.memory import MemoryCache
from sa_sessions.cache.redis import RedisPool
from sa_sessions.cache.regions import session_cache_for
from sa_sessions.exceptions import SessionConfigError

from .cache_contract import MEMCACHED
from .cache_contract import REDIS
from .cache_contract import PoolKind
from .cache_contract import Server
from .cache_contract import best_of
from .cache_contract import in_forked_child
from .cache_contract import key
from .cache_contract import keys_of
from .cache_contract import until
from .cache_contract import until_all_miss
from .conftest import MemcachedProcess
from .conftest import RedisProcess
from .conftest import free_port

#: Thirty days: memcached reads a longer relative expiry as a Unix timestamp.
THIRTY_DAYS = 30 * 24 * 3600


@dataclass
class Subject:
    """A backend under test, and what the contract needs to know about it."""

    kind: str
    backend: SessionCacheBackend
    #: A TTL (seconds) that the backend keeps for at least a moment (memcached: whole seconds).
    short_ttl: float
    #: Ring names of the servers (empty for in-process caches).
    nodes: list[str] = field(default_factory=list)
    #: The server processes behind the backend.
    servers: list[Any] = field(default_factory=list)
    #: Builds another backend of the same kind on the same servers, with other options.
    make: Callable[..., SessionCacheBackend] | None = None

    def keys_per_node(self, count: int) -> list[list[str]]:
        """``count`` keys owned by each node, in the order of :attr:`nodes`."""
        if not self.nodes:
            return [[key(n) for n in range(count)]]
        return [keys_of(self.nodes, name, count) for name in self.nodes]


def _pool_kind(kind: str) -> PoolKind:
    """The kind of pool behind a subject: ``memcached-pool`` is memcached."""
    return {"memcached": MEMCACHED, "redis": REDIS}[kind.removesuffix("-pool")]


def _server_subject(kind: str, servers: list[Server], **options: Any) -> Subject:
    """A subject of a server kind on ``servers``; ``make`` keeps ``options`` unless told."""
    pool_kind = _pool_kind(kind)
    return Subject(
        kind,
        pool_kind.pool(servers, **options),
        short_ttl=pool_kind.short_ttl,
        nodes=[pool_kind.name_of(server) for server in servers],
        servers=list(servers),
        make=lambda **more: pool_kind.pool(servers, **{**options, **more}),
    )


def _close(backend: SessionCacheBackend) -> None:
    if isinstance(backend, (MemcachedPool, RedisPool)):
        backend.close()


@pytest.fixture(scope="module")
def _second_memcached(memcached_factory: Callable[[], MemcachedProcess]) -> MemcachedProcess:
    return memcached_factory()


@pytest.fixture(scope="module")
def _second_redis(redis_factory: Callable[[], RedisProcess]) -> RedisProcess:
    return redis_factory()


def _ready(server: Any) -> Any:
    if server.proc is None:
        server.start()
    server.flush()
    return server


SUBJECTS = [
    pytest.param("memory", id="memory"),
    pytest.param("dogpile-memory", id="dogpile-memory"),
    pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
    pytest.param("memcached-pool", id="memcached-pool", marks=pytest.mark.memcached),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("redis-pool", id="redis-pool", marks=pytest.mark.redis),
]

SERVER_SUBJECTS = SUBJECTS[2:]


@pytest.fixture(params=SUBJECTS)
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    """Every backend, on the run's shared servers (flushed)."""
    kind: str = request.param
    if kind == "memory":
        yield Subject(kind, MemoryCache(), short_ttl=0.5)
        return
    if kind == "dogpile-memory":
        region = make_region().configure("dogpile.cache.memory")
        yield Subject(kind, session_cache_for(region), short_ttl=0.5)
        return
    pool_kind = _pool_kind(kind)
    servers = [_ready(request.getfixturevalue(pool_kind.server_fixture))]
    if kind.endswith("-pool"):
        servers.append(_ready(request.getfixturevalue(f"_second_{pool_kind.name}")))
    made = _server_subject(kind, servers)
    yield made
    _close(made.backend)


@pytest.fixture(params=SERVER_SUBJECTS)
def doomed(request: pytest.FixtureRequest) -> Iterator[Subject]:
    """A server backend on private servers that the test may kill (short breaker settings)."""
    kind: str = request.param
    start: Callable[[], Server] = request.getfixturevalue(_pool_kind(kind).factory_fixture)
    servers = [start() for _ in range(2 if kind.endswith("-pool") else 1)]
    made = _server_subject(kind, servers, dead_timeout=1.0, failure_threshold=2)
    yield made
    _close(made.backend)
    for server in made.servers:
        server.stop()


# --------------------------------------------------------------------------- get / set / delete


def test_every_backend_implements_the_interface(subject: Subject) -> None:
    assert isinstance(subject.backend, SessionCacheBackend)


def test_get_of_a_missing_key_is_none(subject: Subject) -> None:
    assert subject.backend.get(key("missing")) is None


def test_set_then_get_returns_exactly_the_bytes(subject: Subject) -> None:
    cache = subject.backend
    for keys in subject.keys_per_node(3):
        for k in keys:
            cache.set(k, b"value of " + k.encode(), 60)
        for k in keys:
            found = cache.get(k)
            assert found is not None
            assert type(found[0]) is bytes
            assert found[0] == b"value of " + k.encode()


def test_set_overwrites_whatever_is_stored(subject: Subject) -> None:
    cache = subject.backend
    cache.set(key(1), b"first", 60)
    cache.set(key(1), b"second", 60)
    found = cache.get(key(1))
    assert found is not None and found[0] == b"second"


def test_delete_removes_the_value_and_ignores_missing_keys(subject: Subject) -> None:
    cache = subject.backend
    cache.set(key(1), b"v", 60)
    cache.delete(key(1))
    assert cache.get(key(1)) is None
    cache.delete(key(1))  # nothing stored: no error
    cache.delete(key("never-written"))


def test_set_many_stores_every_value_on_every_node(subject: Subject) -> None:
    cache = subject.backend
    keys = [k for group in subject.keys_per_node(4) for k in group]
    cache.set(keys[0], b"old", 60)
    cache.set_many({k: k.encode()[-8:] for k in keys}, 60)
    for k in keys:
        found = cache.get(k)
        assert found is not None and found[0] == k.encode()[-8:]
    cache.set_many({}, 60)  # nothing to do: no error


# --------------------------------------------------------------------------- add


def test_add_stores_only_where_nothing_is_stored(subject: Subject) -> None:
    cache = subject.backend
    for keys in subject.keys_per_node(2):
        for k in keys:
            assert cache.add(k, b"first", 60) is True
            assert cache.add(k, b"second", 60) is False
            found = cache.get(k)
            assert found is not None and found[0] == b"first"


def test_add_works_again_after_a_delete(subject: Subject) -> None:
    cache = subject.backend
    assert cache.add(key(1), b"a", 60)
    cache.delete(key(1))
    assert cache.add(key(1), b"b", 60) is True
    found = cache.get(key(1))
    assert found is not None and found[0] == b"b"


def race(threads: int, attempt: Callable[[int], bool]) -> list[bool]:
    """Run ``attempt(n)`` in ``threads`` threads released together; every result."""
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        barrier.wait()
        stored = attempt(n)
        with lock:
            results.append(stored)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def test_concurrent_adds_store_exactly_once(subject: Subject) -> None:
    cache = subject.backend
    results = race(8, lambda n: cache.add(key("race"), f"writer {n}".encode(), 60))
    assert sorted(results) == [False] * 7 + [True]


# --------------------------------------------------------------------------- cas and tokens


def test_cas_with_the_token_of_the_value_read_replaces_it(subject: Subject) -> None:
    cache = subject.backend
    for keys in subject.keys_per_node(2):
        for k in keys:
            cache.set(k, b"v1", 60)
            found = cache.get(k)
            assert found is not None
            assert cache.cas(k, b"v2", found[1], 60) is True
            after = cache.get(k)
            assert after is not None and after[0] == b"v2"


#: What makes the token of a read stale: each returns the key then to swap with that
#: token, and the value that must be left there (None: nothing, cas never creates).
Staler = Callable[[SessionCacheBackend, str, Token], tuple[str, bytes | None]]


def _spent_by_its_own_cas(cache: SessionCacheBackend, k: str, token: Token) -> tuple[str, bytes]:
    assert cache.cas(k, b"v2", token, 60)
    return k, b"v2"


def _another_writer_changed_the_value(
    cache: SessionCacheBackend, k: str, token: Token
) -> tuple[str, bytes]:
    cache.set(k, b"written by another request", 60)
    return k, b"written by another request"


def _deleted(cache: SessionCacheBackend, k: str, token: Token) -> tuple[str, None]:
    cache.delete(k)
    return k, None


def _deleted_and_added_anew(cache: SessionCacheBackend, k: str, token: Token) -> tuple[str, bytes]:
    cache.delete(k)
    assert cache.add(k, b"a new session", 60)
    return k, b"a new session"


def _used_on_another_key(cache: SessionCacheBackend, k: str, token: Token) -> tuple[str, bytes]:
    other = key("another key")
    cache.set(other, b"value of the other key", 60)
    return other, b"value of the other key"


@pytest.mark.parametrize(
    "staler",
    [
        pytest.param(_spent_by_its_own_cas, id="spent-by-its-own-cas"),
        pytest.param(_another_writer_changed_the_value, id="another-writer-changed-the-value"),
        pytest.param(_deleted, id="deleted-and-never-created-again"),
        pytest.param(_deleted_and_added_anew, id="deleted-and-added-anew"),
        pytest.param(_used_on_another_key, id="used-on-another-key"),
    ],
)
def test_cas_with_a_stale_token_fails_and_changes_nothing(subject: Subject, staler: Staler) -> None:
    cache = subject.backend
    cache.set(key(1), b"read by the request", 60)
    found = cache.get(key(1))
    assert found is not None
    target, left = staler(cache, key(1), found[1])
    assert cache.cas(target, b"stale write", found[1], 60) is False
    after = cache.get(target)
    assert (None if after is None else after[0]) == left


def test_cas_after_a_change_beyond_the_first_64_bytes(subject: Subject) -> None:
    """memcached and the in-process caches name the exact value read.  A Redis token is
    the value's length and first 64 bytes (documented): exact for the session cache's
    entries, whose first bytes carry a MAC over the whole entry (test_cache_redis.py)."""
    prefix_token = subject.kind.startswith("redis")
    cache = subject.backend
    head = bytes(range(64)) * 2
    cache.set(key(1), head + b"tail one", 60)
    found = cache.get(key(1))
    assert found is not None
    cache.set(key(1), head + b"tail two", 60)  # same length, same first 128 bytes
    assert cache.cas(key(1), b"stale write", found[1], 60) is prefix_token


def test_concurrent_cas_with_one_token_succeeds_exactly_once(subject: Subject) -> None:
    cache = subject.backend
    cache.set(key("race"), b"start", 60)
    found = cache.get(key("race"))
    assert found is not None
    token = found[1]
    results = race(8, lambda n: cache.cas(key("race"), f"writer {n}".encode(), token, 60))
    assert sorted(results) == [False] * 7 + [True]


# --------------------------------------------------------------------------- expiry


def test_values_expire_after_their_ttl_whatever_wrote_them(subject: Subject) -> None:
    cache = subject.backend
    ttl = subject.short_ttl
    cache.set(key("cas-base"), b"base", ttl)
    base = cache.get(key("cas-base"))
    assert base is not None
    started = time.monotonic()
    cache.set(key("set"), b"set", ttl)
    assert cache.add(key("add"), b"add", ttl)
    cache.set_many({key("many-1"): b"m1", key("many-2"): b"m2"}, ttl)
    assert cache.cas(key("cas-base"), b"cas", base[1], ttl)
    cache.set(key("extended"), b"short at first", ttl)
    extended = cache.get(key("extended"))
    assert extended is not None
    assert cache.cas(key("extended"), b"extended by cas", extended[1], 600)
    written = [key("set"), key("add"), key("many-1"), key("many-2"), key("cas-base")]
    if time.monotonic() - started < ttl / 2:  # a stalled machine proves nothing here
        assert all(cache.get(k) is not None for k in written)

    assert until(lambda: all(cache.get(k) is None for k in written), timeout=ttl + 4)
    found = cache.get(key("extended"))
    assert found is not None and found[0] == b"extended by cas"
    assert cache.add(key("add"), b"after expiry", 60) is True


def test_a_ttl_longer_than_thirty_days_is_capped_not_read_as_a_date(subject: Subject) -> None:
    cache = subject.backend
    cache.set(key(1), b"long-lived", THIRTY_DAYS * 3)
    assert cache.add(key(2), b"long-lived", THIRTY_DAYS + 1)
    cache.set_many({key(3): b"long-lived"}, 10 * 365 * 24 * 3600.0)
    for n in (1, 2, 3):
        found = cache.get(key(n))
        assert found is not None and found[0] == b"long-lived"


def test_a_ttl_under_one_second_stores_the_value_and_expires(subject: Subject) -> None:
    """memcached rounds it up to one second: never to 0, which it would read as "forever"."""
    cache = subject.backend
    started = time.monotonic()
    cache.set(key(1), b"v", 0.4)
    found = cache.get(key(1))
    if not subject.kind.startswith("memcached") and time.monotonic() - started < 0.2:
        assert found is not None  # (memcached's one-second clock may drop it at once)
    assert until(lambda: cache.get(key(1)) is None, timeout=4)


# --------------------------------------------------------------------------- values and keys


@pytest.mark.parametrize("size", [1, 1_000, 100_000, 1_000_000])
def test_values_up_to_a_megabyte_round_trip(subject: Subject, size: int) -> None:
    cache = subject.backend
    value = os.urandom(size)
    cache.set(key("set"), value, 60)
    assert cache.add(key("add"), value, 60)
    cache.set_many({key("many"): value}, 60)
    found = cache.get(key("set"))
    assert found is not None
    assert cache.cas(key("set"), value[::-1], found[1], 60)
    for k, expected in ((key("set"), value[::-1]), (key("add"), value), (key("many"), value)):
        stored = cache.get(k)
        assert stored is not None and stored[0] == expected


BINARY_VALUES = [
    pytest.param(bytes(range(256)) * 4, id="every-byte"),
    pytest.param(b"\r\nEND\r\nVALUE sas:x 0 1\r\nx\r\nEND\r\n", id="memcached-protocol"),
    pytest.param(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\ny\r\n", id="redis-protocol"),
    pytest.param(b"\x80\x04\x95\x00" + b"\x00" * 60, id="pickle-header"),
    pytest.param(b'{"ct": 1, "v": 2}|payload', id="dogpile-framing"),
    pytest.param(b"\x00", id="nul"),
]


@pytest.mark.parametrize("value", BINARY_VALUES)
def test_binary_values_round_trip_unchanged(subject: Subject, value: bytes) -> None:
    cache = subject.backend
    cache.set(key(1), value, 60)
    found = cache.get(key(1))
    assert found is not None and found[0] == value
    assert cache.cas(key(1), value + b"!", found[1], 60)
    after = cache.get(key(1))
    assert after is not None and after[0] == value + b"!"


def test_an_empty_value_is_stored_not_a_miss(subject: Subject) -> None:
    cache = subject.backend
    cache.set(key(1), b"", 60)
    found = cache.get(key(1))
    assert found is not None and found[0] == b""
    assert cache.add(key(1), b"x", 60) is False
    assert cache.cas(key(1), b"x", found[1], 60) is True


def test_longest_keys_and_every_printable_character_work(subject: Subject) -> None:
    cache = subject.backend
    longest = key(1, prefix="p" * 186)
    assert len(longest) == 250
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    for k in (longest, printable, printable[::-1] + key(2)):
        cache.set(k, k.encode(), 60)
        found = cache.get(k)
        assert found is not None and found[0] == k.encode()


# --------------------------------------------------------------------------- failures


def every_operation(
    cache: SessionCacheBackend, k: str, token: Token
) -> dict[str, Callable[[], object]]:
    """One call of each operation of the interface on ``k``, by name."""
    return {
        "get": lambda: cache.get(k),
        "add": lambda: cache.add(k, b"v", 60),
        "cas": lambda: cache.cas(k, b"v", token, 60),
        "set": lambda: cache.set(k, b"v", 60),
        "set_many": lambda: cache.set_many({k: b"v"}, 60),
        "delete": lambda: cache.delete(k),
    }


def test_a_killed_server_fails_every_operation_with_cache_unavailable(doomed: Subject) -> None:
    cache = doomed.backend
    keys = [group[0] for group in doomed.keys_per_node(1)]
    for k in keys:
        cache.set(k, b"v", 60)
    tokens = {k: found[1] for k in keys if (found := cache.get(k)) is not None}
    assert set(tokens) == set(keys)
    for server in doomed.servers:
        server.kill()
    for _ in range(3):  # before and after the breaker opened
        for k in keys:
            for call in every_operation(cache, k, tokens[k]).values():
                with pytest.raises(CacheUnavailable):
                    call()


@pytest.mark.parametrize(
    "doomed", [p for p in SERVER_SUBJECTS if str(p.values[0]).endswith("-pool")], indirect=True
)
def test_set_many_tries_every_node_and_reports_a_failure(doomed: Subject) -> None:
    """One dead node fails the call, but the other node's values are still written."""
    cache = doomed.backend
    alive_keys, dead_keys = doomed.keys_per_node(3)
    doomed.servers[1].kill()
    with pytest.raises(CacheUnavailable):
        cache.set_many({k: b"v" for k in alive_keys + dead_keys}, 60)
    for k in alive_keys:
        found = cache.get(k)
        assert found is not None and found[0] == b"v"


@pytest.mark.parametrize(
    "kind", [pytest.param(MEMCACHED, id="memcached"), pytest.param(REDIS, id="redis")]
)
def test_a_closed_port_fails_with_cache_unavailable(kind: PoolKind) -> None:
    backend = kind.pool_at([kind.location(free_port())], failure_threshold=100)
    calls: list[Callable[[], object]] = [
        *every_operation(backend, key(1), kind.stale_token).values(),
        lambda: backend.set_many({key(1): b"v", key(2): b"w"}, 60),
    ]
    for call in calls:
        with pytest.raises(CacheUnavailable):
            call()
    _close(backend)


def _open_every_breaker(doomed: Subject, cache: SessionCacheBackend, keys: list[str]) -> None:
    """Kill every server, fail ``failure_threshold`` reads per node, start them again."""
    for server in doomed.servers:
        server.kill()
    for k in keys:
        for _ in range(2):  # failure_threshold
            with pytest.raises(CacheUnavailable):
                cache.get(k)
    for server in doomed.servers:
        server.start()  # back on the same port, but the breakers are open


def test_an_open_breaker_fails_fast_without_contacting_the_server(doomed: Subject) -> None:
    """Once ``failure_threshold`` calls failed, a node is not called until ``dead_timeout``."""
    assert doomed.make is not None
    cache = doomed.make(dead_timeout=30.0)
    keys = [group[0] for group in doomed.keys_per_node(1)]
    _open_every_breaker(doomed, cache, keys)
    for k in keys:
        refused = every_operation(cache, k, _pool_kind(doomed.kind).stale_token)
        for name in ("add", "cas", "delete", "get"):  # (set and set_many are tried anyway)
            with pytest.raises(CacheUnavailable, match="marked dead"):
                refused[name]()
        assert best_of(5, functools.partial(cache.get, k)) < 0.05
    fresh = doomed.make()
    assert all(fresh.get(k) is None for k in keys)  # nothing reached the servers
    _close(fresh)
    _close(cache)


def test_set_and_set_many_are_tried_even_on_a_node_marked_dead(doomed: Subject) -> None:
    """They write end markers, which must reach a server that answers again."""
    assert doomed.make is not None
    cache = doomed.make(dead_timeout=30.0)
    keys = [group[0] for group in doomed.keys_per_node(2)]
    _open_every_breaker(doomed, cache, keys)
    first, rest = keys[0], keys[1:]
    cache.set(first, b"ended", 60)
    cache.set_many({k: b"ended" for k in rest}, 60)
    fresh = doomed.make()
    for k in keys:
        found = fresh.get(k)
        assert found is not None and found[0] == b"ended"
    _close(fresh)
    _close(cache)


def test_a_node_is_used_again_after_dead_timeout(doomed: Subject) -> None:
    cache = doomed.backend  # dead_timeout=1.0
    keys = [group[0] for group in doomed.keys_per_node(1)]
    for server in doomed.servers:
        server.kill()
    for k in keys:
        for _ in range(3):
            with pytest.raises(CacheUnavailable):
                cache.get(k)
    for server in doomed.servers:
        server.start()
    assert until_all_miss(cache, keys, timeout=5.0)
    for k in keys:
        cache.set(k, b"back", 60)
        found = cache.get(k)
        assert found is not None and found[0] == b"back"


# --------------------------------------------------------------------------- the in-process cache


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_cache_expires_exactly_at_the_deadline() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    cache.set(key(1), b"v", 10)
    clock.now += 9.999
    assert cache.get(key(1)) is not None
    clock.now += 0.001
    assert cache.get(key(1)) is None
    assert len(cache) == 0  # an expired item is dropped when seen


def test_memory_cache_cas_and_add_see_expired_values_as_absent() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    cache.set(key(1), b"v", 1)
    found = cache.get(key(1))
    assert found is not None
    clock.now += 1
    assert cache.cas(key(1), b"w", found[1], 60) is False
    assert cache.add(key(1), b"x", 60) is True


def test_memory_cache_drops_the_oldest_entries_beyond_its_bound() -> None:
    cache = MemoryCache(max_entries=3)
    for n in range(3):
        cache.set(key(n), b"v", 60)
    cache.set(key(0), b"rewritten", 60)  # a write makes it the youngest again
    cache.set(key(3), b"v", 60)
    assert len(cache) == 3
    assert cache.get(key(1)) is None
    assert [cache.get(key(n)) is not None for n in (0, 2, 3)] == [True, True, True]
    cache.set_many({key(n): b"m" for n in range(10, 15)}, 60)
    assert len(cache) == 3


@pytest.mark.parametrize("bound", [0, -1, 1.5, True, "10", None])
def test_memory_cache_rejects_a_bad_bound(bound: Any) -> None:
    with pytest.raises(SessionConfigError, match="max_entries"):
        MemoryCache(max_entries=bound)


def test_memory_cache_clear_drops_everything() -> None:
    cache = MemoryCache()
    cache.set_many({key(n): b"v" for n in range(5)}, 60)
    cache.clear()
    assert len(cache) == 0
    assert cache.get(key(0)) is None


def test_dogpile_memory_adapters_of_one_region_share_values_and_tokens() -> None:
    region = make_region().configure("dogpile.cache.memory")
    first, second = session_cache_for(region), session_cache_for(region)
    first.set(key(1), b"v1", 60)
    found = second.get(key(1))
    assert found is not None and found[0] == b"v1"
    assert first.cas(key(1), b"v2", found[1], 60)
    assert second.cas(key(1), b"v3", found[1], 60) is False


def test_dogpile_memory_adapter_ignores_what_the_region_itself_stored() -> None:
    region = make_region().configure("dogpile.cache.memory")
    cache = session_cache_for(region)
    region.set(key(1), {"plain": "region value"})
    assert cache.get(key(1)) is None  # never handed out as a session entry
    assert cache.add(key(1), b"v", 60) is True  # nothing usable there: a fill may replace it
    found = cache.get(key(1))
    assert found is not None and found[0] == b"v"


@pytest.mark.parametrize("subject", SUBJECTS[:2], indirect=True)
def test_a_forked_child_starts_with_an_empty_in_process_cache(subject: Subject) -> None:
    """A copy inherited from the parent would be a stale copy (module docstring)."""
    cache = subject.backend
    cache.set(key(1), b"parent's copy", 600)
    assert in_forked_child(lambda: cache.get(key(1)) is None)
    found = cache.get(key(1))
    assert found is not None and found[0] == b"parent's copy"  # the parent keeps its own
