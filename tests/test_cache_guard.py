"""The store's cache guard: failures are misses, stale entries are never served."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

import pytest
from sqlalchemy import Engine

from sa_sessions import SessionStore
from sa_sessions import memcached_region
from sa_sessions import memory_region
from sa_sessions._cache_guard import GuardedCache
from sa_sessions.cache import CircuitBreaker
from sa_sessions.codec.blob import BlobMeta
from sa_sessions.ids import hash_session_id
from sa_sessions.ids import new_session_id

from .conftest import SECRET
from .conftest import MemcachedProcess

UTC = timezone.utc


def meta() -> BlobMeta:
    now = datetime.now(UTC)
    return BlobMeta(expires_at=now + timedelta(hours=1), touched_at=now)


@pytest.mark.parametrize("db_kind", ["sqlite"], indirect=True)
@pytest.mark.memcached
def test_entry_written_while_memcached_hung_is_never_served_stale(
    model: type[Any], engine: Engine, memcached_factory: Callable[[], MemcachedProcess]
) -> None:
    """A frozen memcached wakes up holding version 1; the store never serves it."""
    server = memcached_factory()
    region = memcached_region([server.address], timeout=0.2, connect_timeout=0.2, retry_timeout=0.3)
    store = SessionStore(model, engine, region=region, secret_keys=SECRET)
    sid = new_session_id()
    record = store.create(sid, {"step": 1}, meta())
    assert store.cache is not None
    assert store.cache.get(record.hashed_id) is not None

    server.freeze()
    try:
        started = time.monotonic()
        saved = store.update(record, {"step": 2}, meta())  # cache set times out
        assert saved is not None
        assert time.monotonic() - started < 1.0
        assert store.cache.pending_invalidations == 1
        loaded = store.load(sid)  # the suspect key is not read from the cache
        assert loaded is not None and loaded.data == {"step": 2}
    finally:
        server.thaw()

    time.sleep(0.4)  # past HashClient's retry window
    for _ in range(3):
        loaded = store.load(sid)
        assert loaded is not None and loaded.data == {"step": 2}
    assert store.cache.pending_invalidations == 0
    cached = store.cache.get(record.hashed_id)
    assert cached is not None and cached[0] == 2  # refilled with the fresh version


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _FailingRegion:
    """A region whose server refuses every call (stand-in for a dead socket)."""

    def __init__(self) -> None:
        self.calls = 0

    def get(self, key: str) -> Any:
        self.calls += 1
        raise ConnectionRefusedError("refused")

    set = delete = delete_multi = get


def test_breaker_stops_calling_a_failing_cache_then_retries() -> None:
    clock = _Clock()
    region = _FailingRegion()
    guard = GuardedCache(
        region,  # type: ignore[arg-type]
        prefix="sas:",
        max_value_bytes=1024,
        breaker=CircuitBreaker(failure_threshold=3, reset_after=5.0, clock=clock),
    )
    hashed = hash_session_id(new_session_id())
    for _ in range(10):
        assert guard.get(hashed) is None
    assert region.calls == 3  # then the breaker is open: no more calls
    clock.now = 5.1
    assert guard.get(hashed) is None
    assert region.calls == 4  # one half-open trial
    assert guard.get(hashed) is None
    assert region.calls == 4


def test_values_over_the_cache_limit_are_not_cached() -> None:
    guard = GuardedCache(memory_region(), prefix="sas:", max_value_bytes=100)
    hashed = hash_session_id(new_session_id())
    assert guard.set(hashed, 1, b"x" * 50)
    assert guard.get(hashed) == (1, b"x" * 50)
    guard.set(hashed, 2, b"x" * 200)  # too big: the stale small copy is removed too
    assert guard.get(hashed) is None


def test_garbage_in_the_cache_is_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    cache: dict[str, Any] = {}
    guard = GuardedCache(memory_region(cache_dict=cache), prefix="sas:", max_value_bytes=1024)
    hashed = hash_session_id(new_session_id())
    guard.set(hashed, 1, b"blob")
    key = next(iter(cache))
    cache[key] = b"not a dogpile value"
    assert guard.get(hashed) is None
    assert guard.stats.errors == 1
