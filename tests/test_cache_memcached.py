"""MemcachedPool against real memcached processes (and one deliberately hung socket).

The pool contract (tests/cache_contract.py) runs here on memcached; a raw protocol view
reads and writes items behind the pool's back, so the tests see exactly what lands in
memcached (flags, bytes) and on which node, rather than what pymemcache chooses to
report.  Below it: what only memcached does (serde, flags, a hung node, threads).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sa_sessions.cache.backend import CacheUnavailable
from sa_sessions.cache.memcached import BytesOnlySerde
from sa_sessions.cache.memcached import MemcachedPool
from sa_sessions.exceptions import SessionConfigError

from .cache_contract import MEMCACHED
from .cache_contract import PoolContract
from .cache_contract import Refusal
from .cache_contract import gadget
from .cache_contract import key
from .cache_contract import refusal_fixture

pytestmark = pytest.mark.memcached


class TestMemcachedPool(PoolContract):
    """The pool contract on memcached, and what only a memcached pool does."""

    kind = MEMCACHED
    refusal = refusal_fixture(
        {
            "too-large": Refusal(
                lambda pool: pool.set(key(1), b"x" * 2_000_000, 60), "MemcacheServerError"
            ),
            "illegal-key": Refusal(
                lambda pool: pool.get("a key with spaces"), "MemcacheIllegalInputError"
            ),
        }
    )

    def test_a_value_too_large_fails_and_the_connection_stays_usable(
        self, pool: MemcachedPool
    ) -> None:
        with pytest.raises(CacheUnavailable, match="MemcacheServerError"):
            pool.set(key(1), b"x" * 2_000_000, 60)
        pool.set(key(1), b"small", 60)
        found = pool.get(key(1))
        assert found is not None and found[0] == b"small"

    def test_each_thread_has_its_own_client(self, pool: MemcachedPool) -> None:
        node = pool.node_for(key(1))
        mine = node.client()
        assert node.client() is mine
        theirs: list[object] = []
        thread = threading.Thread(target=lambda: theirs.append(node.client()))
        thread.start()
        thread.join()
        assert theirs[0] is not mine


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
    with caplog.at_level(logging.WARNING, logger="sa_sessions.cache"):
        assert BytesOnlySerde().deserialize("k", gadget(marker), flags) == b""
    assert not marker.exists()
    assert f"flags {flags}" in caplog.text


# --------------------------------------------------------------------------- a hung node


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


def test_a_max_ttl_past_30_days_is_refused() -> None:
    """memcached reads an expiry over 30 days as a Unix time, long past: gone at once."""
    MemcachedPool(["127.0.0.1:11211"], max_ttl=30 * 24 * 3600)
    with pytest.raises(SessionConfigError, match="at most 2592000 seconds"):
        MemcachedPool(["127.0.0.1:11211"], max_ttl=30 * 24 * 3600 + 1)


def test_repr_lists_the_servers() -> None:
    assert repr(MemcachedPool(["127.0.0.1:1", "[::1]:2"])) == (
        "MemcachedPool(['127.0.0.1:1', '[::1]:2'])"
    )
