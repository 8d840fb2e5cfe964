"""What the memcached and Redis pool tests share: helpers, raw views, and the pool contract.

:class:`PoolKind` knows how to build a pool of one kind on server processes and how to
look behind its back (a raw protocol view: what is stored, with which expiry, how many
writes a server received).  :class:`PoolContract` holds the tests that both pools must
pass; ``tests/test_cache_memcached.py`` and ``tests/test_cache_redis.py`` each run it
through a subclass (``TestMemcachedPool``, ``TestRedisPool``) under their own marker,
so a missing server is skipped or failed as for any other test of that file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pickle
import socket
import threading
import time
import warnings
from abc import ABC
from abc import abstractmethod
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import ClassVar
from typing import TypeAlias

import pytest
import redis

from sa_sessions.cache.backend import CacheUnavailable
from sa_sessions.cache.backend import SessionCacheBackend
from sa_sessions.cache.backend import Token
from sa_sessions.cache.entry import EndReason
from sa_sessions.cache.guard import Absent
from sa_sessions.cache.guard import CachedCopy
from sa_sessions.cache.guard import Ended
from sa_sessions.cache.guard import SessionCache
from sa_sessions.cache.memcached import MemcachedPool
from sa_sessions.cache.nodes import NodeRing
from sa_sessions.cache.redis import RedisPool
from sa_sessions.exceptions import SessionConfigError

from .conftest import SECRET

#: A pool of either kind.
Pool: TypeAlias = MemcachedPool | RedisPool

#: A MemcachedProcess or RedisProcess of tests/conftest.py (bench/cache_servers.py).
Server: TypeAlias = Any


# --------------------------------------------------------------------------- keys and polling


def key(n: int | str, prefix: str = "sas:") -> str:
    """A session-shaped cache key (prefix + 64 hex characters)."""
    return prefix + hashlib.sha256(f"contract-{n}".encode()).hexdigest()


def hid(n: int | str) -> str:
    """A hashed session id (64 lowercase hex characters)."""
    return hashlib.sha256(f"contract-session-{n}".encode()).hexdigest()


def keys_of(names: Sequence[str], owner: str, count: int) -> list[str]:
    """``count`` keys that the ring over the node ``names`` places on ``owner``."""
    ring = NodeRing([(name, name) for name in names])
    found: list[str] = []
    n = 0
    while len(found) < count:
        candidate = key(f"node-{n}")
        if ring.node_for(candidate) == owner:
            found.append(candidate)
        n += 1
    return found


def guard_on(backend: SessionCacheBackend) -> SessionCache:
    """The session cache over ``backend``, as the store builds it."""
    return SessionCache(backend, keys=SECRET, max_value_bytes=100_000, end_marker_ttl=60)


def until(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds passed; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def until_all_miss(cache: SessionCacheBackend, keys: Sequence[str], timeout: float) -> bool:
    """Poll until every key reads as a miss: its node, killed and started again, answers."""

    def answers() -> bool:
        try:
            return all(cache.get(k) is None for k in keys)
        except CacheUnavailable:
            return False

    return until(answers, timeout=timeout)


def best_of(attempts: int, call: Callable[[], object]) -> float:
    """The shortest of ``attempts`` timed runs of ``call`` (exceptions are part of a run)."""
    best = float("inf")
    for _ in range(attempts):
        started = time.perf_counter()
        with contextlib.suppress(CacheUnavailable):
            call()
        best = min(best, time.perf_counter() - started)
    return best


def in_forked_child(check: Callable[[], bool], meanwhile: Callable[[], None] | None = None) -> bool:
    """Run ``check`` in a forked child (and ``meanwhile`` in the parent); True if it passed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads alive
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            code = 0 if check() else 1
        except BaseException:
            code = 2
        os._exit(code)
    try:
        if meanwhile is not None:
            meanwhile()
    finally:
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


class MkdirGadget:
    """Unpickling this creates a directory: a visible, harmless stand-in for code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (os.mkdir, (self.path,))


def gadget(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when unpickled."""
    return pickle.dumps(MkdirGadget(str(marker)))


# --------------------------------------------------------------------------- memcached's protocol


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=2)


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("memcached closed the connection")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def raw_get(address: str, key: str) -> tuple[int, bytes] | None:
    """``(flags, data)`` of an item read with a plain ``get``, or None if absent."""
    with _connect(address) as sock:
        sock.sendall(b"get " + key.encode("ascii") + b"\r\n")
        buf = bytearray()
        header = _read_line(sock, buf)
        if header == b"END":
            return None
        word, name, flags, size = header.split(b" ")
        assert word == b"VALUE"
        assert name == key.encode("ascii")
        while len(buf) < int(size) + 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            buf += chunk
        data = bytes(buf[: int(size)])
        del buf[: int(size) + 2]
        assert _read_line(sock, buf) == b"END"
        return int(flags), data


def raw_set(address: str, key: str, flags: int, data: bytes, exptime: int = 0) -> None:
    """Write an item directly, as anyone with network access to memcached could."""
    with _connect(address) as sock:
        header = f"set {key} {flags} {exptime} {len(data)}\r\n".encode("ascii")
        sock.sendall(header + data + b"\r\n")
        assert _read_line(sock, bytearray()) == b"STORED"


def raw_ttl(address: str, key: str) -> int | None:
    """Whole seconds an item has left (-1: no expiry), by meta get; None if absent."""
    with _connect(address) as sock:
        sock.sendall(b"mg " + key.encode("ascii") + b" t\r\n")
        reply = _read_line(sock, bytearray())
        if reply == b"EN":
            return None
        word, ttl = reply.split(b" ")
        assert word == b"HD" and ttl.startswith(b"t")
        return int(ttl[1:])


def raw_stats(address: str) -> dict[str, str]:
    """The server's ``stats``."""
    with _connect(address) as sock:
        sock.sendall(b"stats\r\n")
        buf = bytearray()
        result: dict[str, str] = {}
        while (line := _read_line(sock, buf)) != b"END":
            _, name, value = line.decode().split(" ", 2)
            result[name] = value
        return result


# --------------------------------------------------------------------------- the kinds of pool


class PoolKind(ABC):
    """How to build a pool of one kind on real servers, and a raw view behind its back."""

    #: The pytest marker (and parameter id) of tests that need this kind of server.
    name: ClassVar[str]
    #: conftest fixtures: the run's shared server (flushed), a starter of private ones.
    server_fixture: ClassVar[str]
    factory_fixture: ClassVar[str]
    #: The dogpile backend name that regions are configured with.
    region_backend: ClassVar[str]
    #: The pool's keywords for its reply timeout and its connect timeout.
    timeout_options: ClassVar[tuple[str, str]]
    #: A TTL (seconds) that the server keeps for at least a moment.
    short_ttl: ClassVar[float]
    #: A token of the pool's own shape that names no value stored.
    stale_token: ClassVar[Token]
    #: What the log says after a planted pickle was read (through the pool, then the guard).
    planted_warnings: ClassVar[tuple[str, ...]]

    @abstractmethod
    def location(self, port: int) -> str:
        """How the pool names the server on ``port`` of 127.0.0.1 (also its ring name)."""

    @abstractmethod
    def pool_at(self, locations: Sequence[str], **options: Any) -> Pool:
        """A pool of the servers at ``locations``."""

    def name_of(self, server: Server) -> str:
        return self.location(server.port)

    def pool(
        self,
        servers: Sequence[Server],
        *,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        **options: Any,
    ) -> Pool:
        """A pool of ``servers``; ``timeout`` and ``connect_timeout`` under the pool's names."""
        for name, value in zip(self.timeout_options, (timeout, connect_timeout), strict=True):
            if value is not None:
                options[name] = value
        return self.pool_at([self.name_of(server) for server in servers], **options)

    # ------------------------------------------------------------------ the raw view

    @abstractmethod
    def raw_get(self, server: Server, key: str) -> bytes | None:
        """The bytes stored under ``key``, read behind the pool's back (None if absent)."""

    @abstractmethod
    def raw_set(self, server: Server, key: str, data: bytes) -> None:
        """Store ``data`` as the pool itself stores bytes, behind its back."""

    @abstractmethod
    def plant(self, server: Server, key: str, data: bytes) -> None:
        """Store ``data`` as another client of this server stores a pickled object."""

    @abstractmethod
    def planted_read(self, data: bytes) -> bytes:
        """What the pool's ``get`` hands back for what :meth:`plant` stored."""

    @abstractmethod
    def raw_ttl(self, server: Server, key: str) -> float | None:
        """Seconds left before ``key`` expires (inf: never), or None if absent."""

    @abstractmethod
    def item_count(self, server: Server) -> int:
        """How many items the server holds."""

    @abstractmethod
    def writes_received(self, server: Server) -> int:
        """How many write commands the server has run so far."""

    @abstractmethod
    def connection_id(self, pool: Pool, key: str) -> object:
        """Names this process's connection to the node of ``key`` (None: none yet)."""


class MemcachedKind(PoolKind):
    name = "memcached"
    server_fixture = "memcached"
    factory_fixture = "memcached_factory"
    region_backend = "sa_sessions.pymemcache"
    timeout_options = ("timeout", "connect_timeout")
    short_ttl = 2.0  # whole seconds, and memcached's clock ticks once a second
    stale_token = b"1"
    planted_warnings = ("flags 1", "failed authentication")

    def location(self, port: int) -> str:
        return f"127.0.0.1:{port}"

    def pool_at(self, locations: Sequence[str], **options: Any) -> MemcachedPool:
        return MemcachedPool(locations, **options)

    def raw_get(self, server: Server, key: str) -> bytes | None:
        """Also checks the flags: the pool stores every item with flags 0."""
        found = raw_get(server.address, key)
        if found is None:
            return None
        flags, data = found
        assert flags == 0, f"an item with flags {flags}"
        return data

    def raw_set(self, server: Server, key: str, data: bytes) -> None:
        raw_set(server.address, key, 0, data)

    def plant(self, server: Server, key: str, data: bytes) -> None:
        """Flags 1: how pymemcache (and dogpile's backend on it) marks a pickle."""
        raw_set(server.address, key, 1, data)

    def planted_read(self, data: bytes) -> bytes:
        return b""  # flags other than 0: never handed out, never unpickled

    def raw_ttl(self, server: Server, key: str) -> float | None:
        ttl = raw_ttl(server.address, key)
        return None if ttl is None else math.inf if ttl == -1 else float(ttl)

    def item_count(self, server: Server) -> int:
        return int(raw_stats(server.address)["curr_items"])

    def writes_received(self, server: Server) -> int:
        return int(raw_stats(server.address)["cmd_set"])

    def connection_id(self, pool: Pool, key: str) -> object:
        """The local port of this thread's socket to the node."""
        assert isinstance(pool, MemcachedPool)
        sock = pool.node_for(key).client().sock
        return None if sock is None else sock.getsockname()[1]


class RedisKind(PoolKind):
    name = "redis"
    server_fixture = "redis_server"
    factory_fixture = "redis_factory"
    region_backend = "sa_sessions.redis"
    timeout_options = ("socket_timeout", "socket_connect_timeout")
    short_ttl = 0.5
    stale_token = (1, b"v")
    planted_warnings = ("failed authentication",)

    def location(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def pool_at(self, locations: Sequence[str], **options: Any) -> RedisPool:
        return RedisPool(locations, **options)

    @staticmethod
    def plain(server: Server, db: int = 0) -> redis.Redis:
        """A plain client of ``server`` (close it, or use it in a ``with``)."""
        return redis.Redis(host="127.0.0.1", port=server.port, db=db)

    def raw_get(self, server: Server, key: str) -> bytes | None:
        with self.plain(server) as plain:
            value: bytes | None = plain.get(key)
        return value

    def raw_set(self, server: Server, key: str, data: bytes) -> None:
        with self.plain(server) as plain:
            plain.set(key, data)

    def plant(self, server: Server, key: str, data: bytes) -> None:
        self.raw_set(server, key, data)  # Redis keeps no type tag: a pickle is plain bytes

    def planted_read(self, data: bytes) -> bytes:
        return data  # handed back as bytes, nothing more

    def raw_ttl(self, server: Server, key: str) -> float | None:
        with self.plain(server) as plain:
            ms = int(plain.pttl(key))
        return None if ms == -2 else math.inf if ms == -1 else ms / 1000

    def item_count(self, server: Server) -> int:
        with self.plain(server) as plain:
            return int(plain.dbsize())

    def writes_received(self, server: Server) -> int:
        with self.plain(server) as plain:
            stats: dict[str, dict[str, int]] = plain.info("commandstats")
        return stats.get("cmdstat_set", {}).get("calls", 0)

    def connection_id(self, pool: Pool, key: str) -> object:
        """The server's id of the connection the node's client uses."""
        assert isinstance(pool, RedisPool)
        return pool.node_for(key).client.client_id()


MEMCACHED = MemcachedKind()
REDIS = RedisKind()

#: Each kind as a parameter, marked so that its tests skip (or fail) without its server.
POOL_KINDS = [
    pytest.param(MEMCACHED, id="memcached", marks=pytest.mark.memcached),
    pytest.param(REDIS, id="redis", marks=pytest.mark.redis),
]


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Refusal:
    """A request the server answers with an error: proof that the server is up."""

    request: Callable[[Pool], object]
    #: The exception the pool reports it as (``refused (<error>)``).
    error: str
    #: Run once before: puts the server in the state that makes it refuse.
    prepare: Callable[[Server], object] = lambda server: None


@dataclass
class FrozenNodeTimings:
    """What calls cost while one node of a pool is frozen (seconds)."""

    slow: list[float]  # each call that waited for the frozen node
    fast: float  # the best call once the node was marked dead
    live: float  # the best call to the other node
    forced: float  # the best write tried on the dead node anyway (end markers)


class PoolContract:
    """The tests that both pools must pass; a subclass names its kind (and refusals)."""

    kind: ClassVar[PoolKind]

    @pytest.fixture
    def server(self, request: pytest.FixtureRequest) -> Server:
        """The run's shared server of this kind, flushed."""
        return request.getfixturevalue(self.kind.server_fixture)

    @pytest.fixture
    def pool(self, server: Server) -> Iterator[Pool]:
        made = self.kind.pool([server])
        yield made
        made.close()

    @pytest.fixture
    def start_private(self, request: pytest.FixtureRequest) -> Iterator[Callable[[], Server]]:
        """Starts private servers that the test may kill or freeze (stopped at its end)."""
        factory: Callable[[], Server] = request.getfixturevalue(self.kind.factory_fixture)
        started: list[Server] = []

        def start() -> Server:
            started.append(factory())
            return started[-1]

        yield start
        for server in started:
            server.thaw()
            server.stop()

    @pytest.fixture
    def pair(self, start_private: Callable[[], Server]) -> list[Server]:
        """Two private servers."""
        return [start_private(), start_private()]

    @pytest.fixture
    def refusal(self) -> Refusal:
        raise NotImplementedError("a subclass lists its kind's refusals as a fixture")

    # ------------------------------------------------------------------ what is stored

    def test_values_are_stored_as_the_bytes_given(self, pool: Pool, server: Server) -> None:
        """By every write (memcached: with flags 0, which the raw view checks)."""
        payload = b"\x80\x04\x95\x00\x01sealed\xff|with a pipe\r\nEND\r\n$3\r\n"
        pool.set(key(1), payload, 60)
        assert pool.add(key(2), payload, 60)
        pool.set_many({key(3): payload}, 60)
        found = pool.get(key(1))
        assert found is not None
        assert pool.cas(key(1), payload + b"!", found[1], 60)
        stored = [self.kind.raw_get(server, key(n)) for n in (1, 2, 3)]
        assert stored == [payload + b"!", payload, payload]

    def test_the_pool_caps_every_expiry(self, server: Server) -> None:
        cap = 2  # (memcached: a second may tick by at once, and the cap must outlast it)
        pool = self.kind.pool([server], max_ttl=cap)
        pool.set(key(1), b"short-lived", 3600)
        pool.set(key(2), b"short-lived", 10 * 365 * 24 * 3600.0)
        pool.set_many({key(3): b"short-lived"}, 3600)
        pool.set_many({key(4): b"short-lived"}, 1e9)
        keys = [key(n) for n in (1, 2, 3, 4)]
        assert self.kind.raw_get(server, key(1)) is not None
        ttls = [self.kind.raw_ttl(server, k) for k in keys]
        assert all(ttl is not None and 0 < ttl <= cap for ttl in ttls), ttls
        assert until(lambda: all(self.kind.raw_get(server, k) is None for k in keys), cap + 3)
        pool.close()

    def test_expiries_that_are_not_finite_numbers_are_clamped(self, server: Server) -> None:
        pool = self.kind.pool([server], max_ttl=60)
        pool.set(key(1), b"infinite", float("inf"))
        pool.set_many({key(2): b"infinite"}, float("inf"))
        pool.set(key(3), b"not a number", float("nan"))
        assert [self.kind.raw_get(server, key(n)) for n in (1, 2)] == [b"infinite"] * 2
        ttls = [self.kind.raw_ttl(server, key(n)) for n in (1, 2)]
        assert all(ttl is not None and 50 < ttl <= 60 for ttl in ttls), ttls
        nan_ttl = self.kind.raw_ttl(server, key(3))
        assert nan_ttl is None or nan_ttl <= 1  # the shortest expiry, never an error
        pool.close()

    @pytest.mark.parametrize("max_ttl", [0, -1, 1.5, True, "60", None])
    def test_a_max_ttl_that_is_not_whole_seconds_is_refused(
        self, server: Server, max_ttl: Any
    ) -> None:
        with pytest.raises(SessionConfigError, match="max_ttl"):
            self.kind.pool([server], max_ttl=max_ttl)

    def test_a_planted_pickle_is_never_unpickled(
        self, pool: Pool, server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        cache = guard_on(pool)
        marker = tmp_path / "gadget-ran"
        planted = gadget(marker)
        self.kind.plant(server, cache.key(hid(1)), planted)
        with caplog.at_level(logging.WARNING, logger="sa_sessions.cache"):
            found = pool.get(cache.key(hid(1)))
            assert found is not None and found[0] == self.kind.planted_read(planted)
            seen = cache.read(hid(1))
        assert not marker.exists()
        assert all(warning in caplog.text for warning in self.kind.planted_warnings)
        assert type(seen) is Absent and seen.token is not None
        assert cache.fill(hid(1), 1, b"b" * 64, 1, 60, seen)  # the next refill replaces it
        assert self.kind.raw_get(server, cache.key(hid(1))) is not None  # (memcached: flags 0)
        assert type(cache.read(hid(1))) is CachedCopy
        assert not marker.exists()

    def test_keys_land_on_the_node_the_ring_names(
        self, start_private: Callable[[], Server]
    ) -> None:
        servers = [start_private() for _ in range(3)]
        names = [self.kind.name_of(server) for server in servers]
        pool = self.kind.pool(servers)
        ring = NodeRing([(name, name) for name in names])
        owners: set[str] = set()
        for n in range(30):
            pool.set(key(n), b"v", 60)
            owner = ring.node_for(key(n))
            assert pool.node_for(key(n)).label == owner
            owners.add(owner)
            holders = [
                name
                for name, server in zip(names, servers, strict=True)
                if self.kind.raw_get(server, key(n)) is not None
            ]
            assert holders == [owner]
        assert owners == set(names)
        pool.close()

    # ------------------------------------------------------------------ failed nodes

    def test_a_dead_nodes_keys_are_never_moved_to_the_survivor(self, pair: list[Server]) -> None:
        a, b = pair
        names = [self.kind.name_of(a), self.kind.name_of(b)]
        pool = self.kind.pool(pair, dead_timeout=30.0)
        on_a, on_b = keys_of(names, names[0], 5), keys_of(names, names[1], 5)
        for k in on_a + on_b:
            pool.set(k, b"old", 60)
        b.kill()
        writes_to_a = self.kind.writes_received(a)
        for k in on_b:
            with pytest.raises(CacheUnavailable):
                pool.get(k)
            with pytest.raises(CacheUnavailable):
                pool.set(k, b"new", 60)
            with pytest.raises(CacheUnavailable):
                pool.add(k, b"new", 60)
        with pytest.raises(CacheUnavailable):
            pool.set_many({k: b"new" for k in on_b}, 60)
        # The survivor never received them, and holds its own keys only.
        assert self.kind.writes_received(a) == writes_to_a
        assert all(self.kind.raw_get(a, k) is None for k in on_b)
        assert all(self.kind.raw_get(a, k) == b"old" for k in on_a)
        assert self.kind.item_count(a) == len(on_a)
        for k in on_a:  # which work as before
            found = pool.get(k)
            assert found is not None and found[0] == b"old"
            pool.set(k, b"new", 60)
        pool.close()

    def test_a_restarted_node_gets_its_keys_back(self, pair: list[Server]) -> None:
        a, b = pair
        names = [self.kind.name_of(a), self.kind.name_of(b)]
        pool = self.kind.pool(pair, dead_timeout=0.5)
        on_b = keys_of(names, names[1], 3)
        for k in on_b:
            pool.set(k, b"before the crash", 60)
        b.kill()
        for k in on_b:
            with pytest.raises(CacheUnavailable):
                pool.get(k)
        b.start()  # same port, empty
        assert until_all_miss(pool, on_b, timeout=5.0)
        for k in on_b:
            pool.set(k, b"after", 60)
            assert self.kind.raw_get(b, k) == b"after"
            assert self.kind.raw_get(a, k) is None
        pool.close()

    def test_connections_left_idle_across_a_restart_work_at_once_in_every_thread(
        self, pair: list[Server]
    ) -> None:
        """A restarted server closed every connection while they sat idle; the first
        call on each is neither a failure nor a reason to mark the node dead (a pool
        whose every thread failed once would stay dead for a dead_timeout per thread)."""
        server = pair[0]
        pool = self.kind.pool([server], failure_threshold=1, dead_timeout=60.0)
        threads = 4
        connected = threading.Barrier(threads + 1)
        restarted = threading.Event()
        outcomes: list[object] = []

        def worker(n: int) -> None:
            pool.set(key(f"t{n}"), b"before", 60)
            connected.wait(5)  # every thread holds an open connection now
            restarted.wait(5)
            try:
                outcomes.append(pool.get(key(f"t{n}")))
            except CacheUnavailable as exc:
                outcomes.append(exc)

        running = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for thread in running:
            thread.start()
        connected.wait(5)
        server.kill()
        server.start()  # same port, empty; nothing called the pool in between
        restarted.set()
        for thread in running:
            thread.join(10)
        assert outcomes == [None] * threads  # misses: the restarted server is empty
        assert pool.node_states() == {self.kind.name_of(server): "closed"}
        pool.close()

    def _frozen_node_timings(self, a: Server, b: Server, timeout: float) -> FrozenNodeTimings:
        """Freeze b and time the calls to it (and to a) before and after it is marked dead."""
        names = [self.kind.name_of(a), self.kind.name_of(b)]
        pool = self.kind.pool(
            [a, b], timeout=timeout, connect_timeout=timeout, failure_threshold=2, dead_timeout=60
        )
        on_a, on_b = keys_of(names, names[0], 1)[0], keys_of(names, names[1], 1)[0]
        pool.set(on_a, b"a", 60)
        pool.set(on_b, b"b", 60)  # open connections to both
        b.freeze()
        try:
            slow: list[float] = []
            for _ in range(2):  # failure_threshold
                started = time.perf_counter()
                with pytest.raises(CacheUnavailable, match="TimeoutError"):
                    pool.get(on_b)
                slow.append(time.perf_counter() - started)
            with pytest.raises(CacheUnavailable, match="marked dead"):
                pool.get(on_b)
            fast = best_of(5, lambda: pool.get(on_b))
            live = best_of(5, lambda: pool.get(on_a))
            found = pool.get(on_a)
            assert found is not None and found[0] == b"a"
            forced = best_of(2, lambda: pool.set(on_b, b"ended", 60))  # tried even when dead
        finally:
            b.thaw()
        pool.close()
        return FrozenNodeTimings(slow, fast, live, forced)

    def test_a_frozen_node_costs_about_the_timeout_per_call_then_fails_fast(
        self, pair: list[Server]
    ) -> None:
        timeout = 0.3
        runs = [self._frozen_node_timings(pair[0], pair[1], timeout) for _ in range(3)]
        assert all(duration >= timeout * 0.9 for run in runs for duration in run.slow)
        assert min(max(run.slow) for run in runs) < timeout * 3
        assert min(run.fast for run in runs) < 0.05
        assert min(run.live for run in runs) < 0.05
        # End markers are written even to a node marked dead, at the cost of one timeout.
        assert all(run.forced >= timeout * 0.9 for run in runs)
        assert min(run.forced for run in runs) < timeout * 3

    def test_a_late_reply_of_a_frozen_node_is_never_taken_for_the_next_answer(
        self, pair: list[Server]
    ) -> None:
        server = pair[0]
        pool = self.kind.pool([server], timeout=0.3, failure_threshold=100)
        pool.set(key(1), b"one", 60)
        pool.set(key(2), b"two", 60)
        server.freeze()
        try:
            with pytest.raises(CacheUnavailable):
                pool.get(key(1))
        finally:
            server.thaw()
        for _ in range(3):
            found = pool.get(key(2))
            assert found is not None and found[0] == b"two"
            found = pool.get(key(1))
            assert found is not None and found[0] == b"one"
        pool.close()

    def test_a_refused_request_does_not_mark_a_healthy_node_dead(
        self, server: Server, refusal: Refusal
    ) -> None:
        """The server answered: it is up, and the sessions on it should keep their cache."""
        pool = self.kind.pool([server], failure_threshold=2, dead_timeout=30.0)
        refusal.prepare(server)
        for _ in range(2):  # failure_threshold
            with pytest.raises(CacheUnavailable, match=rf"refused \({refusal.error}\)"):
                refusal.request(pool)
        assert pool.add(key(2), b"fine", 60)  # (set would be tried even on a node marked dead)
        found = pool.get(key(2))
        assert found is not None and found[0] == b"fine"
        pool.close()

    def test_a_forced_write_to_a_node_marked_dead_is_not_counted_as_refused(
        self, pair: list[Server]
    ) -> None:
        """``set`` is tried even on a node marked dead; only calls not made are refusals."""
        server = pair[0]
        pool = self.kind.pool([server], failure_threshold=1, dead_timeout=30.0)
        server.kill()
        with pytest.raises(CacheUnavailable):
            pool.get(key(1))  # opens the breaker
        breaker = pool.node_for(key(1)).breaker
        with pytest.raises(CacheUnavailable, match="marked dead"):
            pool.get(key(1))
        assert breaker.refused == 1
        with pytest.raises(CacheUnavailable, match="failed"):
            pool.set(key(1), b"end marker", 60)  # tried: the connection is refused
        assert breaker.refused == 1
        pool.close()

    # ------------------------------------------------------------------ fork

    def test_a_forked_child_never_uses_the_parents_connection(self, pool: Pool) -> None:
        pool.set(key("parent"), b"parent", 60)
        parent_id = self.kind.connection_id(pool, key("parent"))
        assert parent_id is not None

        def child() -> bool:
            if self.kind.connection_id(pool, key("parent")) == parent_id:
                return False  # an inherited connection
            for n in range(200):
                pool.set(key(f"child-{n}"), f"child {n}".encode(), 60)
                found = pool.get(key(f"child-{n}"))
                if found is None or found[0] != f"child {n}".encode():
                    return False
            return bool(self.kind.connection_id(pool, key("parent")) != parent_id)

        def parent() -> None:  # at the same time as the child, on the parent's connection
            for n in range(200):
                pool.set(key(f"parent-{n}"), f"parent {n}".encode(), 60)
                found = pool.get(key(f"parent-{n}"))
                assert found is not None and found[0] == f"parent {n}".encode()

        assert in_forked_child(child, parent)
        assert self.kind.connection_id(pool, key("parent")) == parent_id
        found = pool.get(key("parent"))
        assert found is not None and found[0] == b"parent"

    # ------------------------------------------------------------------ the guard

    def test_the_guard_on_a_pool_with_a_dead_node_ends_what_it_can(
        self, pair: list[Server]
    ) -> None:
        a, b = pair
        pool = self.kind.pool(pair, dead_timeout=30.0)
        cache = guard_on(pool)
        names = [self.kind.name_of(a), self.kind.name_of(b)]
        ring = NodeRing([(name, name) for name in names])
        ids = [hid(n) for n in range(20)]
        on_a = [h for h in ids if ring.node_for(cache.key(h)) == names[0]]
        b.kill()
        assert cache.end_many(ids, EndReason.REVOKED, 1) is False
        assert all(cache.read(h) == Ended(EndReason.REVOKED) for h in on_a)
        assert cache.stats.errors == 1
        pool.close()

    def test_a_publish_that_timed_out_on_a_frozen_node_leaves_a_whole_entry(
        self, pair: list[Server]
    ) -> None:
        """A timed-out write may still land when the node wakes up (it was sent): either way
        the entry there is a whole one, of the version it claims."""
        server = pair[0]
        pool = self.kind.pool([server], timeout=0.3, connect_timeout=0.3)
        cache = guard_on(pool)
        assert cache.fill(hid(1), 1, b"v1" * 32, 1, 60)
        seen = cache.read(hid(1))
        assert type(seen) is CachedCopy
        server.freeze()
        try:
            assert cache.publish(hid(1), 2, b"v2" * 32, 2, 60, seen.token) is False
        finally:
            server.thaw()
        assert cache.stats.errors == 1
        pool.close()
        again = guard_on(self.kind.pool([server])).read(hid(1))
        assert type(again) is CachedCopy
        assert (again.version, again.stamp_us, again.blob) in (
            (1, 1, b"v1" * 32),
            (2, 2, b"v2" * 32),
        )


def refusal_fixture(refusals: dict[str, Refusal]) -> Any:
    """A class-level ``refusal`` fixture with one parameter per named refusal."""

    @pytest.fixture(params=[pytest.param(r, id=name) for name, r in refusals.items()])
    def refusal(self: PoolContract, request: pytest.FixtureRequest) -> Refusal:
        found: Refusal = request.param
        return found

    return refusal
