"""sa_sessions.cache without a memcached server: config checks, keys, serde, breaker."""

from __future__ import annotations

import os
import pickle
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE

from sa_sessions.cache import BACKEND_NAME
from sa_sessions.cache import BytesOnlySerde
from sa_sessions.cache import CircuitBreaker
from sa_sessions.cache import cache_key
from sa_sessions.cache import memcached_region
from sa_sessions.cache import memory_region
from sa_sessions.exceptions import SessionConfigError

HEX = "0123456789abcdef" * 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MkdirGadget:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


# --------------------------------------------------------------------------- import


def test_importing_the_module_does_not_import_pymemcache() -> None:
    code = "import sys, sa_sessions.cache; sys.exit('pymemcache' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "servers",
    [
        [],
        "",
        "localhost",  # a port is required
        "localhost:",
        ":11211",
        "localhost:0",
        "localhost:65536",
        "localhost:abc",
        "localhost:-1",
        "local host:11211",
        "host\r\n:11211",
        "::1:11211",  # IPv6 needs brackets
        "[not-v6]:11211",
        "127.0.0.1:11211,127.0.0.2:11211",
        ["127.0.0.1:11211", "127.0.0.1:11211"],
        [b"127.0.0.1:11211"],
        b"127.0.0.1:11211",
        None,
    ],
)
def test_bad_servers_are_rejected(servers: Any) -> None:
    with pytest.raises(SessionConfigError):
        memcached_region(servers)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connect_timeout": 0},
        {"connect_timeout": -1},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"timeout": True},
        {"timeout": "0.2"},
        {"dead_timeout": 0},
        {"retry_timeout": -0.5},
        {"retry_attempts": -1},
        {"retry_attempts": 1.5},
        {"memcached_expire_time": 0},
        {"memcached_expire_time": -1},
        {"memcached_expire_time": 30 * 24 * 3600 + 1},
        {"memcached_expire_time": 60.0},
        {"memcached_expire_time": True},
        {"tls_context": "yes"},
        {"serde": None},
        {"default_noreply": True},
        {"default_noreply": 1},
        {"url": ["127.0.0.1:1"]},
        {"hashclient_dead_timeout": 5},
        {"hashclient_retry_attempts": 5},
        {"ignore_exc": True},  # dogpile would silently ignore it
        {"enable_retry_client": True},
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(SessionConfigError):
        memcached_region("127.0.0.1:11211", **kwargs)


@pytest.mark.parametrize(
    "servers",
    ["127.0.0.1:11211", "localhost:1", "[::1]:11211", ["cache-1.internal:11211", "cache_2:11212"]],
)
def test_good_servers_are_accepted(servers: Any) -> None:
    region = memcached_region(servers)
    expected = [servers] if isinstance(servers, str) else servers
    assert region.backend.url == expected


def test_backend_builds_hash_client_with_timeouts_and_safe_settings() -> None:
    from pymemcache.client.hash import HashClient

    ctx = ssl.create_default_context()
    region = memcached_region(
        ["127.0.0.1:11211", "127.0.0.1:11212"],
        connect_timeout=0.3,
        timeout=0.4,
        memcached_expire_time=3600,
        dead_timeout=12.0,
        retry_attempts=3,
        retry_timeout=0.7,
        tls_context=ctx,
        name="sessions",
        default_noreply=False,
    )
    assert region.name == "sessions"
    assert region.backend.set_arguments == {"expire": 3600}
    client = region.backend.client  # built lazily, without connecting
    assert isinstance(client, HashClient)
    assert client.dead_timeout == 12.0  # not dogpile's silent default of 60
    assert client.retry_attempts == 3
    assert client.retry_timeout == 0.7
    assert client.ignore_exc is False
    kw = client.default_kwargs
    assert kw["connect_timeout"] == 0.3
    assert kw["timeout"] == 0.4
    assert kw["default_noreply"] is False
    assert isinstance(kw["serde"], BytesOnlySerde)
    assert kw["tls_context"] is ctx
    for node in client.clients.values():
        assert node.timeout == 0.4
        assert node.connect_timeout == 0.3
        assert node.default_noreply is False
    assert region.backend.client is client  # one client per thread

    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(region.backend.client))
    thread.start()
    thread.join()
    assert other[0] is not client


def test_defaults_set_timeouts_and_a_seven_day_ttl() -> None:
    region = memcached_region("127.0.0.1:11211")
    assert region.backend.set_arguments == {"expire": 7 * 24 * 3600}
    kw = region.backend.client.default_kwargs
    assert kw["connect_timeout"] == 0.25
    assert kw["timeout"] == 0.25
    assert region.backend.client.dead_timeout == 30.0


def test_backend_configured_by_name_still_enforces_the_safety_settings() -> None:
    base = {"url": ["127.0.0.1:11211"], "memcached_expire_time": 60}
    with pytest.raises(SessionConfigError, match="memcached_expire_time"):
        make_region().configure(BACKEND_NAME, arguments={"url": ["127.0.0.1:11211"]})
    with pytest.raises(SessionConfigError, match="serde"):
        make_region().configure(BACKEND_NAME, arguments={**base, "serde": object()})
    with pytest.raises(SessionConfigError, match="noreply"):
        make_region().configure(BACKEND_NAME, arguments={**base, "default_noreply": True})
    with pytest.raises(SessionConfigError, match="timeout"):
        make_region().configure(BACKEND_NAME, arguments={**base, "timeout": None})
    region = make_region().configure(BACKEND_NAME, arguments=base)
    assert region.backend.client.default_kwargs["timeout"] == 0.25
    assert isinstance(region.backend.client.default_kwargs["serde"], BytesOnlySerde)


def test_no_soft_expiry_is_configured() -> None:
    """The store checks expiry itself; dogpile's soft expiry would only add misses."""
    assert memcached_region("127.0.0.1:11211").expiration_time is None
    assert memory_region().expiration_time is None


# --------------------------------------------------------------------------- keys


def test_cache_key_format() -> None:
    key = cache_key(HEX)
    assert key == "sas:" + HEX
    assert key.isascii()
    assert cache_key(HEX, prefix="app1:sess:") == "app1:sess:" + HEX
    assert len(cache_key(HEX, prefix="p" * 186).encode()) == 250


@pytest.mark.parametrize(
    "hashed_id",
    [HEX[:-1], HEX + "0", HEX.upper(), "g" * 64, HEX[:-1] + " ", HEX[:-1] + "\x01", "é" * 64],
)
def test_cache_key_rejects_anything_but_sha256_hex(hashed_id: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        cache_key(hashed_id)


@pytest.mark.parametrize("prefix", ["a b:", "a\tb", "\x01:", "é:", "p\r\n", "p" * 187])
def test_cache_key_rejects_bad_prefixes(prefix: str) -> None:
    with pytest.raises(SessionConfigError):
        cache_key(HEX, prefix=prefix)


# --------------------------------------------------------------------------- serde


def test_serde_passes_bytes_with_flags_zero() -> None:
    serde = BytesOnlySerde()
    assert serde.serialize("k", b"\x80\x04payload") == (b"\x80\x04payload", 0)
    assert serde.deserialize("k", b"\x80\x04payload", 0) == b"\x80\x04payload"


@pytest.mark.parametrize("value", ["text", 1, 1.5, None, bytearray(b"x"), memoryview(b"x"), {}])
def test_serde_refuses_non_bytes(value: Any) -> None:
    with pytest.raises(TypeError, match="bytes only"):
        BytesOnlySerde().serialize("k", value)


class BytesSubclass(bytes):
    pass


def test_serde_refuses_bytes_subclasses() -> None:
    with pytest.raises(TypeError):
        BytesOnlySerde().serialize("k", BytesSubclass(b"x"))


@pytest.mark.parametrize("flags", [1, 2, 4, 8, 16, 17, 0xFFFF])
def test_serde_treats_other_flags_as_a_miss_and_never_unpickles(
    flags: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "gadget-ran"
    gadget = pickle.dumps(MkdirGadget(str(marker)))
    with caplog.at_level("WARNING", logger="sa_sessions.cache"):
        assert BytesOnlySerde().deserialize("k", gadget, flags) is None
    assert not marker.exists()
    assert f"flags {flags}" in caplog.text


# --------------------------------------------------------------------------- memory region


def test_memory_region_round_trip_with_the_memcached_byte_layout() -> None:
    store: dict[str, Any] = {}
    region = memory_region("mem", cache_dict=store)
    key = cache_key(HEX)
    assert region.get(key) is NO_VALUE
    region.set(key, b"blob|with|pipes")
    assert region.get(key) == b"blob|with|pipes"
    stored = store[key]
    assert isinstance(stored, bytes)
    assert stored.startswith(b'{"ct": ')
    assert stored.endswith(b"|blob|with|pipes")
    region.delete(key)
    assert region.get(key) is NO_VALUE


def test_memory_region_refuses_non_bytes() -> None:
    region = memory_region()
    with pytest.raises(TypeError, match="bytes only"):
        region.set("k", {"a": 1})
    assert region.get("k") is NO_VALUE


# --------------------------------------------------------------------------- breaker


def test_breaker_full_cycle() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after=10.0, clock=clock)
    assert breaker.state == "closed"
    assert breaker.allow()

    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()

    clock.now += 9.9
    assert breaker.state == "open"
    assert not breaker.allow()

    clock.now += 0.1
    assert breaker.state == "half-open"
    assert breaker.allow()  # the single trial
    assert not breaker.allow()  # others wait for it
    assert breaker.state == "half-open"

    breaker.record_failure()  # trial failed: open again for a full period
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.allow()

    breaker.record_failure()  # the failure count restarted after closing
    breaker.record_failure()
    assert breaker.state == "closed"


def test_breaker_counts_only_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    for _ in range(5):
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state == "closed"
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open"


def test_breaker_replaces_a_trial_that_never_reports() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5.0, clock=clock)
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_breaker_logs_transitions(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=FakeClock())
    with caplog.at_level("INFO", logger="sa_sessions.cache"):
        breaker.record_failure()
        breaker.record_success()
    assert "opened" in caplog.text
    assert "closed" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"failure_threshold": 1.5},
        {"failure_threshold": True},
        {"reset_after": 0},
        {"reset_after": -1.0},
        {"reset_after": float("nan")},
    ],
)
def test_breaker_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(SessionConfigError):
        CircuitBreaker(**kwargs)


def test_breaker_is_thread_safe_with_one_trial_in_half_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=50, reset_after=1.0, clock=clock)

    def fail() -> None:
        for _ in range(10):
            breaker.record_failure()

    threads = [threading.Thread(target=fail) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.state == "open"

    clock.now += 1.0
    allowed: list[bool] = []
    barrier = threading.Barrier(16)

    def probe() -> None:
        barrier.wait()
        allowed.append(breaker.allow())

    threads = [threading.Thread(target=probe) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1
