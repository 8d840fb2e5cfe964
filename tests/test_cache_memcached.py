"""sa_sessions.cache against real memcached processes (and one deliberately hung socket).

Raw protocol helpers read and write items behind the client's back, so the tests see
exactly what lands in memcached (flags, bytes, expiry) rather than what pymemcache
chooses to report.
"""

from __future__ import annotations

import hashlib
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
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE
from dogpile.cache.region import CacheRegion
from pymemcache.exceptions import MemcacheError
from pymemcache.exceptions import MemcacheServerError
from pymemcache.exceptions import MemcacheUnexpectedCloseError

from sa_sessions.cache import cache_key
from sa_sessions.cache import memcached_region

# --------------------------------------------------------------------------- helpers


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=2)


def _read_until(sock: socket.socket, buf: bytearray, needed: int) -> None:
    while len(buf) < needed:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("memcached closed the connection")
        buf += chunk


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
        _read_until(sock, buf, int(size) + 2)
        data = bytes(buf[: int(size)])
        del buf[: int(size) + 2]
        assert _read_line(sock, buf) == b"END"
        return int(flags), data


def raw_set(address: str, key: str, flags: int, data: bytes, exptime: int = 0) -> None:
    """Write an item directly, as an attacker with network access could."""
    with _connect(address) as sock:
        header = f"set {key} {flags} {exptime} {len(data)}\r\n".encode("ascii")
        sock.sendall(header + data + b"\r\n")
        assert _read_line(sock, bytearray()) == b"STORED"


def some_key(n: int = 0) -> str:
    return cache_key(hashlib.sha256(f"session-{n}".encode()).hexdigest())


class MkdirGadget:
    """Unpickling this creates a directory: a visible, harmless stand-in for RCE."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (os.mkdir, (self.path,))


@pytest.fixture
def region(memcached: Any, regions: list[CacheRegion]) -> CacheRegion:
    made = memcached_region([memcached.address])
    regions.append(made)
    return made


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


# --------------------------------------------------------------------------- tests


@pytest.mark.memcached
def test_bytes_round_trip_and_raw_item_has_flags_zero_and_no_pickle(
    region: CacheRegion, memcached: Any
) -> None:
    key = some_key()
    payload = b"\x00\x01sealed-blob\xff|with a pipe"
    region.set(key, payload)

    assert region.get(key) == payload
    raw = raw_get(memcached.address, key)
    assert raw is not None
    flags, data = raw
    assert flags == 0
    # dogpile's JSON metadata header, then our bytes unchanged: no pickle anywhere.
    assert data.startswith(b'{"ct": ')
    assert data.endswith(b"|" + payload)
    assert not data.startswith(b"\x80")  # pickle protocol 2+ opcode
    assert b"dogpile.cache.api" not in data  # a pickled CachedValue would name its class

    region.delete(key)
    assert region.get(key) is NO_VALUE
    assert raw_get(memcached.address, key) is None


@pytest.mark.memcached
def test_get_multi_round_trip(region: CacheRegion) -> None:
    keys = [some_key(i) for i in range(3)]
    region.set_multi({keys[0]: b"a", keys[2]: b"c"})
    assert region.get_multi(keys) == [b"a", NO_VALUE, b"c"]


@pytest.mark.memcached
def test_pickle_gadget_with_flags_1_is_a_miss_and_never_runs(
    region: CacheRegion, memcached: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = some_key()
    marker = tmp_path / "gadget-ran"
    gadget = pickle.dumps(MkdirGadget(str(marker)))
    raw_set(memcached.address, key, 1, gadget)

    with caplog.at_level("WARNING", logger="sa_sessions.cache"):
        assert region.get(key) is NO_VALUE
        assert region.get_multi([key]) == [NO_VALUE]

    assert not marker.exists()
    assert "flags 1" in caplog.text


@pytest.mark.memcached
def test_control_stock_dogpile_backend_does_run_the_gadget(memcached: Any, tmp_path: Path) -> None:
    """Proves the gadget above is live: dogpile's stock backend unpickles flags-1 items."""
    stock = make_region(serializer=lambda v: v, deserializer=lambda b: b).configure(
        "dogpile.cache.pymemcache", arguments={"url": [memcached.address]}
    )
    key = some_key()
    marker = tmp_path / "gadget-ran"
    raw_set(memcached.address, key, 1, pickle.dumps(MkdirGadget(str(marker))))
    try:
        stock.get(key)
    finally:
        stock.backend.client.close()
    assert marker.is_dir()


@pytest.mark.memcached
def test_non_bytes_values_are_refused_not_pickled(region: CacheRegion, memcached: Any) -> None:
    key = some_key()
    with pytest.raises(TypeError, match="bytes only"):
        region.set(key, {"user": 1})
    # Below the region serializer, the pymemcache serde refuses too.
    with pytest.raises(TypeError, match="bytes only"):
        region.backend.client.set(key, {"user": 1})
    with pytest.raises(TypeError, match="bytes only"):
        region.backend.client.set(key, "text")
    assert raw_get(memcached.address, key) is None


@pytest.mark.memcached
@pytest.mark.slow
def test_server_side_ttl_is_sent_with_every_set(memcached: Any, regions: list[CacheRegion]) -> None:
    region = memcached_region([memcached.address], memcached_expire_time=1)
    regions.append(region)
    key = some_key()
    region.set(key, b"short-lived")
    assert raw_get(memcached.address, key) is not None
    time.sleep(2.1)
    assert raw_get(memcached.address, key) is None
    assert region.get(key) is NO_VALUE


@pytest.mark.memcached
def test_oversized_value_raises_because_replies_are_on(region: CacheRegion, memcached: Any) -> None:
    key = some_key()
    with pytest.raises(MemcacheServerError, match="too large"):
        region.set(key, b"x" * 2_000_000)
    assert raw_get(memcached.address, key) is None
    # The connection is still usable afterwards.
    region.set(key, b"small")
    assert region.get(key) == b"small"


def test_hung_node_fails_within_the_timeout(hung_server: HungServer) -> None:
    """A node that accepts and never answers.

    Observed (pymemcache 4.0.0, timeout=0.2): the first ``get`` raises ``TimeoutError``
    (an ``OSError``) after ~0.2 s and the node is marked failed; calls within
    ``retry_timeout`` then return ``NO_VALUE`` at once without touching the socket.
    Without the backend's timeouts the first call blocks forever, so it runs in a
    worker thread and a hang fails the test instead of wedging the run.
    """
    region = memcached_region(
        [hung_server.address], timeout=0.2, connect_timeout=0.2, retry_timeout=30.0
    )
    outcome: dict[str, Any] = {}

    def worker() -> None:
        started = time.monotonic()
        try:
            region.get(some_key())
        except BaseException as exc:
            outcome["error"] = exc
        outcome["first"] = time.monotonic() - started
        started = time.monotonic()
        outcome["second_value"] = region.get(some_key())
        outcome["second"] = time.monotonic() - started
        try:
            region.set(some_key(), b"dropped")  # HashClient skips it: the backend says so
        except MemcacheError as exc:
            outcome["set_error"] = exc
        region.backend.client.close()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join(3.0)
    assert not thread.is_alive(), "region.get blocked: socket timeouts are not applied"
    assert isinstance(outcome.get("error"), TimeoutError)
    assert outcome["first"] < 1.0
    assert outcome["second_value"] is NO_VALUE
    assert outcome["second"] < 0.1
    assert isinstance(outcome.get("set_error"), MemcacheError)  # never a silent drop
    assert len(hung_server.accepted) == 1  # the second call never reconnected


def _owner(region: CacheRegion, key: str) -> str:
    node: str = region.backend.client.hasher.get_node(key)
    return node


@pytest.mark.memcached
def test_pool_spreads_keys_across_both_servers(
    memcached_factory: Callable[[], Any], regions: list[CacheRegion]
) -> None:
    a, b = memcached_factory(), memcached_factory()
    region = memcached_region([a.address, b.address])
    regions.append(region)
    keys = [some_key(i) for i in range(40)]
    for key in keys:
        region.set(key, key.encode())

    on_a = {k for k in keys if raw_get(a.address, k) is not None}
    on_b = {k for k in keys if raw_get(b.address, k) is not None}
    assert on_a
    assert on_b
    assert on_a.isdisjoint(on_b)
    assert on_a | on_b == set(keys)
    assert all(region.get(k) == k.encode() for k in keys)


@pytest.mark.memcached
def test_server_dying_under_an_open_connection(
    memcached_factory: Callable[[], Any], regions: list[CacheRegion]
) -> None:
    """Observed: the first call on the stale socket raised MemcacheUnexpectedCloseError.

    That error is not an ``OSError``, so HashClient does *not* count it as a node
    failure; the next call reconnects and gets ``ConnectionRefusedError``.  (If the
    peer's RST wins the race the first error is an ``OSError`` instead.)
    """
    server = memcached_factory()
    region = memcached_region([server.address], retry_timeout=30.0)
    regions.append(region)
    key = some_key()
    region.set(key, b"v")
    server.stop()
    with pytest.raises((MemcacheUnexpectedCloseError, OSError)):
        region.get(key)


@pytest.mark.memcached
@pytest.mark.slow
def test_dead_node_failover_then_rejoin(
    memcached_factory: Callable[[], Any], regions: list[CacheRegion]
) -> None:
    """Exact HashClient behaviour when one of two nodes is refused (retry_attempts=2).

    Observed with pymemcache 4.0.0, per thread (each thread has its own HashClient):

    1. first call for a key on the dead node: ``ConnectionRefusedError``; node marked
       failed (attempt 0);
    2. calls within ``retry_timeout``: ``get`` silently returns ``NO_VALUE``; HashClient's
       ``set`` silently stores nothing anywhere, which the sa_sessions backend turns
       into a ``MemcacheError`` so the caller knows the entry may be stale;
    3. after ``retry_timeout``: one retry, ``ConnectionRefusedError`` again (attempt 1),
       quiet misses again, and after the next ``retry_timeout`` a third
       ``ConnectionRefusedError`` (attempt 2 = ``retry_attempts``);
    4. the very next call (no quiet window now) removes the node from the hash ring
       but still runs on the dead client: a fourth ``ConnectionRefusedError``.  So a
       dead node costs ``retry_attempts + 2`` raised errors per thread, spread over
       ``retry_attempts * retry_timeout`` seconds;
    5. from then on its keys rehash to the survivor: ``set``/``get`` work there;
    6. after ``dead_timeout`` the node rejoins and its keys route back to it; the copy
       written to the survivor meanwhile stays there (until its TTL) and would
       resurface if the node failed again: the stale-copy risk bounded by R51.

    Keys owned by the surviving node work normally throughout.
    """
    a, b = memcached_factory(), memcached_factory()
    retry_timeout = 0.5
    region = memcached_region(
        [a.address, b.address], retry_attempts=2, retry_timeout=retry_timeout, dead_timeout=1.0
    )
    regions.append(region)
    keys = [some_key(i) for i in range(40)]
    for key in keys:
        region.set(key, b"old")
    on_a = next(k for k in keys if _owner(region, k) == a.address)
    on_b = next(k for k in keys if _owner(region, k) == b.address)
    region.backend.client.close()  # no stale sockets: the next connect is refused
    b.stop()

    with pytest.raises(ConnectionRefusedError):
        region.get(on_b)  # 1
    assert region.get(on_b) is NO_VALUE  # 2
    with pytest.raises(MemcacheError):
        region.set(on_b, b"lost")
    assert raw_get(a.address, on_b) is None
    assert region.get(on_a) == b"old"

    time.sleep(retry_timeout + 0.1)  # 3
    with pytest.raises(ConnectionRefusedError):
        region.get(on_b)  # attempt 1
    assert region.get(on_b) is NO_VALUE
    time.sleep(retry_timeout + 0.1)
    with pytest.raises(ConnectionRefusedError):
        region.get(on_b)  # attempt 2 = retry_attempts
    with pytest.raises(ConnectionRefusedError):
        region.get(on_b)  # 4: no quiet window any more; removed, yet still tried

    assert _owner(region, on_b) == a.address  # 5
    region.set(on_b, b"new")
    assert region.get(on_b) == b"new"
    assert raw_get(a.address, on_b) is not None
    assert region.get(on_a) == b"old"

    b.start()  # 6: same port, empty
    time.sleep(1.1)
    assert region.get(on_b) is NO_VALUE
    assert _owner(region, on_b) == b.address
    stale = raw_get(a.address, on_b)
    assert stale is not None
    assert stale[1].endswith(b"|new")


@pytest.mark.memcached
def test_all_nodes_dead_raises_memcache_error(
    memcached_factory: Callable[[], Any], regions: list[CacheRegion]
) -> None:
    """With the only node removed, calls fail fast with MemcacheError until dead_timeout."""
    server = memcached_factory()
    region = memcached_region([server.address], retry_attempts=0, dead_timeout=60.0)
    regions.append(region)
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        region.get(some_key())  # retry_attempts=0: removed on the first failure
    started = time.monotonic()
    with pytest.raises(MemcacheError, match="All servers seem to be down"):
        region.get(some_key())
    assert time.monotonic() - started < 0.1
