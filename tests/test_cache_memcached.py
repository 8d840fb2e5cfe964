"""MemcachedPool against real memcached processes (and one deliberately hung socket).

Raw protocol helpers read and write items behind the pool's back, so the tests see
exactly what lands in memcached (flags, bytes) and on which node, rather than what
pymemcache chooses to report.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sa_sessions.cache.backend import CacheUnavailable
from sa_sessions.cache.entry import EndReason
from sa_sessions.cache.guard import Absent
from sa_sessions.cache.guard import CachedCopy
from sa_sessions.cache.guard import Ended
from sa_sessions.cache.guard import SessionCache
from sa_sessions.cache.memcached import BytesOnlySerde
from sa_sessions.cache.memcached import MemcachedPool
from sa_sessions.cache.nodes import NodeRing

from .conftest import SECRET
from .conftest import MemcachedProcess
from .test_cache_backends import best_of
from .test_cache_backends import in_forked_child
from .test_cache_backends import until

pytestmark = pytest.mark.memcached

# --------------------------------------------------------------------------- helpers


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


def key(n: int | str) -> str:
    return "sas:" + hashlib.sha256(f"memcached-{n}".encode()).hexdigest()


def hid(n: int | str) -> str:
    return hashlib.sha256(f"memcached-session-{n}".encode()).hexdigest()


class MkdirGadget:
    """Unpickling this creates a directory: a visible, harmless stand-in for code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (os.mkdir, (self.path,))


def keys_of(addresses: list[str], owner: str, count: int) -> list[str]:
    """``count`` keys that the ring over ``addresses`` places on ``owner``."""
    ring = NodeRing([(address, address) for address in addresses])
    found: list[str] = []
    n = 0
    while len(found) < count:
        if ring.node_for(key(n)) == owner:
            found.append(key(n))
        n += 1
    return found


@pytest.fixture
def pool(memcached: MemcachedProcess) -> Iterator[MemcachedPool]:
    made = MemcachedPool([memcached.address])
    yield made
    made.close()


@pytest.fixture
def pair(memcached_factory: Callable[[], MemcachedProcess]) -> Iterator[list[MemcachedProcess]]:
    """Two private servers the test may kill or freeze."""
    servers = [memcached_factory(), memcached_factory()]
    yield servers
    for server in servers:
        server.thaw()
        server.stop()


def guard_on(pool: MemcachedPool) -> SessionCache:
    return SessionCache(pool, keys=SECRET, max_value_bytes=100_000, end_marker_ttl=60)


# --------------------------------------------------------------------------- serde


def test_serde_passes_bytes_with_flags_zero() -> None:
    serde = BytesOnlySerde()
    assert serde.serialize("k", b"\x80\x04payload") == (b"\x80\x04payload", 0)
    assert serde.deserialize("k", b"\x80\x04payload", 0) == b"\x80\x04payload"


class BytesSubclass(bytes):
    pass


@pytest.mark.parametrize(
    "value",
    ["text", 1, 1.5, None, bytearray(b"x"), memoryview(b"x"), {}, BytesSubclass(b"x")],
)
def test_serde_refuses_anything_but_bytes(value: Any) -> None:
    with pytest.raises(TypeError, match="stores bytes only"):
        BytesOnlySerde().serialize("k", value)


@pytest.mark.parametrize("flags", [1, 2, 4, 8, 16, 17, 0xFFFF])
def test_serde_reads_other_flags_as_empty_bytes_and_never_unpickles(
    flags: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "gadget-ran"
    gadget = pickle.dumps(MkdirGadget(str(marker)))
    with caplog.at_level(logging.WARNING, logger="sa_sessions.cache"):
        assert BytesOnlySerde().deserialize("k", gadget, flags) == b""
    assert not marker.exists()
    assert f"flags {flags}" in caplog.text


# --------------------------------------------------------------------------- what is stored


def test_items_are_the_bytes_given_with_flags_zero(
    pool: MemcachedPool, memcached: MemcachedProcess
) -> None:
    payload = b"\x00\x01sealed\xff|with a pipe\r\nEND\r\n"
    pool.set(key(1), payload, 60)
    assert pool.add(key(2), payload, 60)
    pool.set_many({key(3): payload}, 60)
    for n in (1, 2, 3):
        assert raw_get(memcached.address, key(n)) == (0, payload)


def test_the_pool_caps_every_expiry(memcached: MemcachedProcess) -> None:
    pool = MemcachedPool([memcached.address], max_ttl=1)
    pool.set(key(1), b"short-lived", 3600)
    pool.set_many({key(2): b"short-lived"}, 3600)
    assert raw_get(memcached.address, key(1)) is not None
    assert until(lambda: raw_get(memcached.address, key(1)) is None, timeout=4)
    assert raw_get(memcached.address, key(2)) is None
    pool.close()


def test_a_pickle_planted_with_flags_1_is_never_unpickled(
    pool: MemcachedPool,
    memcached: MemcachedProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = guard_on(pool)
    marker = tmp_path / "gadget-ran"
    raw_set(memcached.address, cache.key(hid(1)), 1, pickle.dumps(MkdirGadget(str(marker))))
    with caplog.at_level(logging.WARNING, logger="sa_sessions.cache"):
        found = pool.get(cache.key(hid(1)))
        assert found is not None and found[0] == b""
        seen = cache.read(hid(1))
    assert not marker.exists()
    assert "flags 1" in caplog.text
    assert type(seen) is Absent and seen.token is not None
    # The next refill replaces it with an entry of its own, flags 0.
    assert cache.fill(hid(1), 1, b"b" * 64, 1, 60, seen)
    stored = raw_get(memcached.address, cache.key(hid(1)))
    assert stored is not None and stored[0] == 0
    assert type(cache.read(hid(1))) is CachedCopy
    assert not marker.exists()


def test_keys_land_on_the_node_the_ring_names(
    memcached_factory: Callable[[], MemcachedProcess],
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    addresses = [server.address for server in servers]
    pool = MemcachedPool(addresses)
    ring = NodeRing([(address, address) for address in addresses])
    owners: set[str] = set()
    for n in range(30):
        pool.set(key(n), b"v", 60)
        owner = ring.node_for(key(n))
        assert pool.node_for(key(n)).address == owner
        owners.add(owner)
        holders = [a for a in addresses if raw_get(a, key(n)) is not None]
        assert holders == [owner]
    assert owners == set(addresses)
    pool.close()
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------- a failed node


def test_a_dead_nodes_keys_are_never_moved_to_the_survivor(pair: list[MemcachedProcess]) -> None:
    a, b = pair
    addresses = [a.address, b.address]
    pool = MemcachedPool(addresses, dead_timeout=30.0)
    on_a, on_b = keys_of(addresses, a.address, 5), keys_of(addresses, b.address, 5)
    for k in on_a + on_b:
        pool.set(k, b"old", 60)
    b.kill()
    sets_on_a = int(raw_stats(a.address)["cmd_set"])
    for k in on_b:
        with pytest.raises(CacheUnavailable):
            pool.get(k)
        with pytest.raises(CacheUnavailable):
            pool.set(k, b"new", 60)
        with pytest.raises(CacheUnavailable):
            pool.add(k, b"new", 60)
    with pytest.raises(CacheUnavailable):
        pool.set_many({k: b"new" for k in on_b}, 60)
    assert int(raw_stats(a.address)["cmd_set"]) == sets_on_a  # a never received them
    assert all(raw_get(a.address, k) is None for k in on_b)
    for k in on_a:  # the survivor's own keys work as before
        found = pool.get(k)
        assert found is not None and found[0] == b"old"
        pool.set(k, b"new", 60)
    pool.close()


def test_a_restarted_node_gets_its_keys_back(pair: list[MemcachedProcess]) -> None:
    a, b = pair
    addresses = [a.address, b.address]
    pool = MemcachedPool(addresses, dead_timeout=0.5)
    on_b = keys_of(addresses, b.address, 3)
    for k in on_b:
        pool.set(k, b"before the crash", 60)
    b.kill()
    for k in on_b:
        with pytest.raises(CacheUnavailable):
            pool.get(k)
    b.start()  # same port, empty

    def answers() -> bool:
        try:
            return all(pool.get(k) is None for k in on_b)
        except CacheUnavailable:
            return False

    assert until(answers, timeout=5.0)
    for k in on_b:
        pool.set(k, b"after", 60)
        assert raw_get(b.address, k) == (0, b"after")
        assert raw_get(a.address, k) is None
    pool.close()


def _frozen_node_timings(
    a: MemcachedProcess, b: MemcachedProcess, timeout: float
) -> tuple[list[float], float, float]:
    """Freeze b: each failing call's duration, then the best fast-fail and live-node times."""
    addresses = [a.address, b.address]
    pool = MemcachedPool(
        addresses, timeout=timeout, connect_timeout=timeout, failure_threshold=2, dead_timeout=60
    )
    on_a, on_b = keys_of(addresses, a.address, 1)[0], keys_of(addresses, b.address, 1)[0]
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
    finally:
        b.thaw()
    pool.close()
    return slow, fast, live


def test_a_frozen_node_costs_about_the_timeout_per_call_then_fails_fast(
    pair: list[MemcachedProcess],
) -> None:
    timeout = 0.3
    runs = [_frozen_node_timings(pair[0], pair[1], timeout) for _ in range(3)]
    assert all(duration >= timeout * 0.9 for slow, _, _ in runs for duration in slow)
    assert min(max(slow) for slow, _, _ in runs) < timeout * 3
    assert min(fast for _, fast, _ in runs) < 0.05
    assert min(live for _, _, live in runs) < 0.05


def test_a_late_reply_of_a_frozen_node_is_never_taken_for_the_next_answer(
    pair: list[MemcachedProcess],
) -> None:
    server = pair[0]
    pool = MemcachedPool([server.address], timeout=0.3, failure_threshold=100)
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


class HungServer:
    """Accepts TCP connections and never answers: a wedged memcached node."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(conn)  # held open, never read, never answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def hung_server() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def test_a_hung_node_is_given_up_after_the_threshold_and_not_reconnected(
    hung_server: HungServer,
) -> None:
    pool = MemcachedPool([hung_server.address], timeout=0.2, connect_timeout=0.2)
    outcome: dict[str, Any] = {}

    def worker() -> None:  # a hang fails the test instead of wedging the run
        errors: list[str] = []
        for _ in range(4):
            try:
                pool.get(key(1))
            except CacheUnavailable as exc:
                errors.append(str(exc))
        outcome["errors"] = errors
        pool.close()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join(10.0)
    assert not thread.is_alive(), "a call blocked: socket timeouts are not applied"
    errors = outcome["errors"]
    assert [("TimeoutError" in e, "marked dead" in e) for e in errors] == [
        (True, False),
        (True, False),
        (False, True),
        (False, True),
    ]
    assert len(hung_server.accepted) == 2  # once the breaker opened, no new connection


# --------------------------------------------------------------------------- refusals


def test_a_value_too_large_fails_and_the_connection_stays_usable(pool: MemcachedPool) -> None:
    with pytest.raises(CacheUnavailable, match="MemcacheServerError"):
        pool.set(key(1), b"x" * 2_000_000, 60)
    pool.set(key(1), b"small", 60)
    found = pool.get(key(1))
    assert found is not None and found[0] == b"small"


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param(lambda pool: pool.set(key(1), b"x" * 2_000_000, 60), id="too-large"),
        pytest.param(lambda pool: pool.get("a key with spaces"), id="illegal-key"),
    ],
)
def test_a_refused_request_does_not_mark_a_healthy_node_dead(
    memcached: MemcachedProcess, refused: Callable[[MemcachedPool], object]
) -> None:
    """The server answered: it is up, and the sessions on it should keep their cache."""
    pool = MemcachedPool([memcached.address], failure_threshold=2, dead_timeout=30.0)
    for _ in range(2):
        with pytest.raises(CacheUnavailable):
            refused(pool)
    assert pool.add(key(2), b"fine", 60)  # (set would be tried even on a node marked dead)
    found = pool.get(key(2))
    assert found is not None and found[0] == b"fine"
    pool.close()


# --------------------------------------------------------------------------- threads and fork


def test_each_thread_has_its_own_client(pool: MemcachedPool) -> None:
    node = pool.node_for(key(1))
    mine = node.client()
    assert node.client() is mine
    theirs: list[object] = []
    thread = threading.Thread(target=lambda: theirs.append(node.client()))
    thread.start()
    thread.join()
    assert theirs[0] is not mine


def test_a_forked_child_never_uses_the_parents_socket(pool: MemcachedPool) -> None:
    pool.set(key("parent"), b"parent", 60)
    node = pool.node_for(key("parent"))
    parent_port = node.client().sock.getsockname()[1]

    def child() -> bool:
        if node.client().sock is not None:
            return False  # an inherited client
        for n in range(200):
            pool.set(key(f"child-{n}"), f"child {n}".encode(), 60)
            found = pool.get(key(f"child-{n}"))
            if found is None or found[0] != f"child {n}".encode():
                return False
        return bool(node.client().sock.getsockname()[1] != parent_port)

    def parent() -> None:  # at the same time as the child, on the parent's socket
        for n in range(200):
            pool.set(key(f"parent-{n}"), f"parent {n}".encode(), 60)
            found = pool.get(key(f"parent-{n}"))
            assert found is not None and found[0] == f"parent {n}".encode()

    assert in_forked_child(child, parent)
    assert node.client().sock.getsockname()[1] == parent_port
    found = pool.get(key("parent"))
    assert found is not None and found[0] == b"parent"


# --------------------------------------------------------------------------- the guard


def test_the_guard_on_a_pool_with_a_dead_node_ends_what_it_can(
    pair: list[MemcachedProcess],
) -> None:
    a, b = pair
    pool = MemcachedPool([a.address, b.address], dead_timeout=30.0)
    cache = guard_on(pool)
    ring = NodeRing([(x, x) for x in (a.address, b.address)])
    ids = [hid(n) for n in range(20)]
    on_a = [h for h in ids if ring.node_for(cache.key(h)) == a.address]
    b.kill()
    assert cache.end_many(ids, EndReason.REVOKED, 1) is False
    assert all(cache.read(h) == Ended(EndReason.REVOKED) for h in on_a)
    assert cache.stats.errors == 1
    pool.close()


def test_repr_lists_the_servers() -> None:
    assert repr(MemcachedPool(["127.0.0.1:1", "[::1]:2"])) == (
        "MemcachedPool(['127.0.0.1:1', '[::1]:2'])"
    )


def test_a_publish_that_timed_out_on_a_frozen_node_leaves_a_whole_entry(
    pair: list[MemcachedProcess],
) -> None:
    """A timed-out write may still land when the node wakes up (it was sent): either way
    the entry there is a whole one, of the version it claims."""
    server = pair[0]
    pool = MemcachedPool([server.address], timeout=0.3, connect_timeout=0.3)
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
    again = guard_on(MemcachedPool([server.address])).read(hid(1))
    assert type(again) is CachedCopy
    assert (again.version, again.stamp_us, again.blob) in ((1, 1, b"v1" * 32), (2, 2, b"v2" * 32))


def test_a_forced_write_to_a_node_marked_dead_is_not_counted_as_refused(
    pair: list[Any],
) -> None:
    """``set`` is tried even on a node marked dead; only calls not made are refusals."""
    server = pair[0]
    pool = MemcachedPool([server.address], failure_threshold=1, dead_timeout=30.0)
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
