"""RedisPool against real redis-server processes.

A plain redis-py client looks behind the pool's back, so the tests see exactly what
lands in Redis (bytes, expiry, database) and on which server.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sa_sessions.cache.backend import CacheUnavailable
from sa_sessions.cache.entry import EndReason
from sa_sessions.cache.guard import Absent
from sa_sessions.cache.guard import CachedCopy
from sa_sessions.cache.guard import Ended
from sa_sessions.cache.guard import SessionCache
from sa_sessions.cache.nodes import NodeRing
from sa_sessions.cache.redis import RedisPool

from .conftest import SECRET
from .conftest import RedisProcess
from .test_cache_backends import best_of
from .test_cache_backends import in_forked_child
from .test_cache_backends import until
from .test_cache_memcached import MkdirGadget

pytestmark = pytest.mark.redis


def key(n: int | str) -> str:
    return "sas:" + hashlib.sha256(f"redis-{n}".encode()).hexdigest()


def hid(n: int | str) -> str:
    return hashlib.sha256(f"redis-session-{n}".encode()).hexdigest()


def raw(server: RedisProcess, db: int = 0) -> redis.Redis:
    """A plain client of ``server``: sees what the pool stored."""
    return redis.Redis(host="127.0.0.1", port=server.port, db=db)


def keys_of(urls: list[str], owner: str, count: int) -> list[str]:
    """``count`` keys that the ring over ``urls`` places on ``owner``."""
    ring = NodeRing([(url, url) for url in urls])
    found: list[str] = []
    n = 0
    while len(found) < count:
        if ring.node_for(key(n)) == owner:
            found.append(key(n))
        n += 1
    return found


def guard_on(pool: RedisPool) -> SessionCache:
    return SessionCache(pool, keys=SECRET, max_value_bytes=100_000, end_marker_ttl=60)


@pytest.fixture
def pool(redis_server: RedisProcess) -> Iterator[RedisPool]:
    made = RedisPool([redis_server.url])
    yield made
    made.close()


@pytest.fixture
def pair(redis_factory: Callable[[], RedisProcess]) -> Iterator[list[RedisProcess]]:
    """Two private servers the test may kill or freeze."""
    servers = [redis_factory(), redis_factory()]
    yield servers
    for server in servers:
        server.thaw()
        server.stop()


# --------------------------------------------------------------------------- what is stored


def test_values_are_stored_as_the_bytes_given(pool: RedisPool, redis_server: RedisProcess) -> None:
    payload = b"\x80\x04\x95sealed\xff\r\n$3\r\n"
    pool.set(key(1), payload, 60)
    assert pool.add(key(2), payload, 60)
    pool.set_many({key(3): payload}, 60)
    found = pool.get(key(1))
    assert found is not None
    assert pool.cas(key(1), payload + b"!", found[1], 60)
    plain = raw(redis_server)
    assert [plain.get(key(n)) for n in (1, 2, 3)] == [payload + b"!", payload, payload]
    plain.close()


def test_every_write_carries_an_expiry_in_milliseconds(
    pool: RedisPool, redis_server: RedisProcess
) -> None:
    pool.set(key(1), b"v", 0.3)
    assert pool.add(key(2), b"v", 2.5)
    pool.set_many({key(3): b"v"}, 3.5)
    found = pool.get(key(2))
    assert found is not None
    assert pool.cas(key(2), b"w", found[1], 2.5)
    plain = raw(redis_server)
    assert 0 < plain.pttl(key(1)) <= 301
    assert 2000 < plain.pttl(key(2)) <= 2501
    assert 3000 < plain.pttl(key(3)) <= 3501
    plain.close()


def test_the_pool_caps_every_expiry(redis_server: RedisProcess) -> None:
    pool = RedisPool([redis_server.url], max_ttl=60)
    pool.set(key(1), b"v", 10 * 365 * 24 * 3600.0)
    pool.set_many({key(2): b"v"}, 1e9)
    plain = raw(redis_server)
    assert 0 < plain.pttl(key(1)) <= 60_000
    assert 0 < plain.pttl(key(2)) <= 60_000
    plain.close()
    pool.close()


def test_the_database_of_the_url_is_used(redis_server: RedisProcess) -> None:
    pool = RedisPool([f"redis://127.0.0.1:{redis_server.port}/3"])
    pool.set(key(1), b"in db 3", 60)
    assert raw(redis_server, db=3).get(key(1)) == b"in db 3"
    assert raw(redis_server, db=0).get(key(1)) is None
    pool.close()


def test_a_pickle_planted_under_a_session_key_is_never_unpickled(
    pool: RedisPool, redis_server: RedisProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = guard_on(pool)
    marker = tmp_path / "gadget-ran"
    gadget = pickle.dumps(MkdirGadget(str(marker)))
    raw(redis_server).set(cache.key(hid(1)), gadget)
    found = pool.get(cache.key(hid(1)))
    assert found is not None and found[0] == gadget  # handed back as bytes, nothing more
    with caplog.at_level(logging.WARNING, logger="sa_sessions.cache"):
        seen = cache.read(hid(1))
    assert type(seen) is Absent and seen.token is not None
    assert "failed authentication" in caplog.text
    assert cache.fill(hid(1), 1, b"b" * 64, 1, 60, seen)  # the next refill replaces it
    assert type(cache.read(hid(1))) is CachedCopy
    assert not marker.exists()


# --------------------------------------------------------------------------- tokens


def test_a_token_is_the_length_and_the_first_64_bytes() -> None:
    """Documented: enough for session entries, whose first 49 bytes carry a MAC."""
    pool = RedisPool(["redis://127.0.0.1:1/0"])
    with pytest.raises(TypeError, match="not a token"):
        pool.cas(key(1), b"v", b"1", 60)
    with pytest.raises(TypeError, match="not a token"):
        pool.cas(key(1), b"v", (1, b"v", 3), 60)


def test_a_rewrite_of_the_same_bytes_keeps_the_token_valid(pool: RedisPool) -> None:
    """Documented: the token names the value, not the write (memcached names the write)."""
    pool.set(key(1), b"same bytes", 60)
    found = pool.get(key(1))
    assert found is not None
    pool.set(key(1), b"other bytes", 60)
    pool.set(key(1), b"same bytes", 60)
    assert pool.cas(key(1), b"swapped", found[1], 60) is True


def test_two_session_copies_of_equal_length_never_share_a_token(pool: RedisPool) -> None:
    """The entry tag covers the blob's MAC, so any change shows in the first 64 bytes."""
    cache = guard_on(pool)
    first = b"a" * 500 + b"m" * 32
    second = b"a" * 499 + b"b" + b"n" * 32  # same length, differs only near the end
    assert cache.fill(hid(1), 1, first, 1, 60)
    seen = cache.read(hid(1))
    assert type(seen) is CachedCopy
    assert cache.replace(hid(1), seen, second, 60)  # a quick write by another request
    assert cache.replace(hid(1), seen, first, 60) is False
    again = cache.read(hid(1))
    assert type(again) is CachedCopy and again.blob == second


# --------------------------------------------------------------------------- failed nodes


def test_a_dead_servers_keys_are_never_moved_to_the_survivor(pair: list[RedisProcess]) -> None:
    a, b = pair
    urls = [a.url, b.url]
    pool = RedisPool(urls, dead_timeout=30.0)
    on_a, on_b = keys_of(urls, a.url, 5), keys_of(urls, b.url, 5)
    for k in on_a + on_b:
        pool.set(k, b"old", 60)
    b.kill()
    for k in on_b:
        with pytest.raises(CacheUnavailable):
            pool.get(k)
        with pytest.raises(CacheUnavailable):
            pool.set(k, b"new", 60)
        with pytest.raises(CacheUnavailable):
            pool.add(k, b"new", 60)
    with pytest.raises(CacheUnavailable):
        pool.set_many({k: b"new" for k in on_b}, 60)
    plain = raw(a)
    assert all(plain.get(k) is None for k in on_b)  # the survivor never received them
    assert sorted(plain.keys()) == sorted(k.encode() for k in on_a)
    plain.close()
    for k in on_a:
        found = pool.get(k)
        assert found is not None and found[0] == b"old"
    pool.close()


def test_a_restarted_server_gets_its_keys_back(pair: list[RedisProcess]) -> None:
    a, b = pair
    urls = [a.url, b.url]
    pool = RedisPool(urls, dead_timeout=0.5)
    on_b = keys_of(urls, b.url, 3)
    for k in on_b:
        pool.set(k, b"before the crash", 60)
    b.kill()
    for k in on_b:
        with pytest.raises(CacheUnavailable):
            pool.get(k)
    b.start()  # same port, empty (no persistence)

    def answers() -> bool:
        try:
            return all(pool.get(k) is None for k in on_b)
        except CacheUnavailable:
            return False

    assert until(answers, timeout=5.0)
    for k in on_b:
        pool.set(k, b"after", 60)
        assert raw(b).get(k) == b"after"
        assert raw(a).get(k) is None
    pool.close()


def _frozen_server_timings(
    a: RedisProcess, b: RedisProcess, timeout: float
) -> tuple[list[float], float, float, float]:
    """Freeze b: the failing calls' durations, the best fast-fail, live-server and set times."""
    urls = [a.url, b.url]
    pool = RedisPool(
        urls,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        failure_threshold=2,
        dead_timeout=60.0,
    )
    on_a, on_b = keys_of(urls, a.url, 1)[0], keys_of(urls, b.url, 1)[0]
    pool.set(on_a, b"a", 60)
    pool.set(on_b, b"b", 60)
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
        forced = best_of(2, lambda: pool.set(on_b, b"ended", 60))  # tried even when dead
    finally:
        b.thaw()
    pool.close()
    return slow, fast, live, forced


def test_a_frozen_server_costs_about_the_timeout_per_call_then_fails_fast(
    pair: list[RedisProcess],
) -> None:
    timeout = 0.3
    runs = [_frozen_server_timings(pair[0], pair[1], timeout) for _ in range(3)]
    assert all(duration >= timeout * 0.9 for slow, _, _, _ in runs for duration in slow)
    assert min(max(slow) for slow, _, _, _ in runs) < timeout * 3
    assert min(fast for _, fast, _, _ in runs) < 0.05
    assert min(live for _, _, live, _ in runs) < 0.05
    # End markers are written even to a server marked dead, at the cost of one timeout.
    assert all(forced >= timeout * 0.9 for _, _, _, forced in runs)
    assert min(forced for _, _, _, forced in runs) < timeout * 3


def test_a_late_reply_of_a_frozen_server_is_never_taken_for_the_next_answer(
    pair: list[RedisProcess],
) -> None:
    server = pair[0]
    pool = RedisPool([server.url], socket_timeout=0.3, failure_threshold=100)
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


def test_a_server_error_does_not_mark_a_healthy_server_dead(
    pool: RedisPool, redis_server: RedisProcess
) -> None:
    """WRONGTYPE is an answer: the server is up, and the sessions on it keep their cache."""
    raw(redis_server).rpush(key("list"), b"x")  # not a string: every read is an error
    for _ in range(2):  # failure_threshold
        with pytest.raises(CacheUnavailable, match="ResponseError"):
            pool.get(key("list"))
    assert pool.add(key(1), b"fine", 60)
    found = pool.get(key(1))
    assert found is not None and found[0] == b"fine"


# --------------------------------------------------------------------------- passwords and fork


def test_a_password_never_shows_in_repr_or_errors(redis_server: RedisProcess) -> None:
    url = f"redis://user:s3cret-pw@127.0.0.1:{redis_server.port}/0"
    both = RedisPool([url, f"redis://:0nly-pw@127.0.0.1:{redis_server.port}/1"])
    assert "s3cret-pw" not in repr(both) and "0nly-pw" not in repr(both)
    assert "user:***@127.0.0.1" in repr(both)
    pool = RedisPool([url])
    messages = []
    for _ in range(3):  # the server has no such user: refused, refused, marked dead
        with pytest.raises(CacheUnavailable) as caught:
            pool.get(key(1))
        messages.append(str(caught.value))
    assert "marked dead" in messages[-1]
    assert "user:***@127.0.0.1" in messages[-1]
    assert not any("s3cret" in message for message in messages)
    pool.close()
    both.close()


def test_a_forked_child_never_uses_the_parents_connection(pool: RedisPool) -> None:
    pool.set(key("parent"), b"parent", 60)
    client = pool.nodes()[0].client
    parent_id = client.client_id()

    def child() -> bool:
        for n in range(200):
            pool.set(key(f"child-{n}"), f"child {n}".encode(), 60)
            found = pool.get(key(f"child-{n}"))
            if found is None or found[0] != f"child {n}".encode():
                return False
        return bool(client.client_id() != parent_id)

    def parent() -> None:  # at the same time as the child, on the parent's connection
        for n in range(200):
            pool.set(key(f"parent-{n}"), f"parent {n}".encode(), 60)
            found = pool.get(key(f"parent-{n}"))
            assert found is not None and found[0] == f"parent {n}".encode()

    assert in_forked_child(child, parent)
    assert client.client_id() == parent_id
    found = pool.get(key("parent"))
    assert found is not None and found[0] == b"parent"


# --------------------------------------------------------------------------- the guard


def test_the_guard_on_a_pool_with_a_dead_server_ends_what_it_can(
    pair: list[RedisProcess],
) -> None:
    a, b = pair
    pool = RedisPool([a.url, b.url], dead_timeout=30.0)
    cache = guard_on(pool)
    ring = NodeRing([(url, url) for url in (a.url, b.url)])
    ids = [hid(n) for n in range(20)]
    on_a = [h for h in ids if ring.node_for(cache.key(h)) == a.url]
    b.kill()
    assert cache.end_many(ids, EndReason.REVOKED, 1) is False
    assert all(cache.read(h) == Ended(EndReason.REVOKED) for h in on_a)
    assert cache.stats.errors == 1
    pool.close()


def test_a_publish_that_timed_out_on_a_frozen_server_leaves_a_whole_entry(
    pair: list[RedisProcess],
) -> None:
    """A timed-out write may still land when the server wakes up (it was sent): either way
    the entry there is a whole one, of the version it claims."""
    server = pair[0]
    pool = RedisPool([server.url], socket_timeout=0.3, socket_connect_timeout=0.3)
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
    again = guard_on(RedisPool([server.url])).read(hid(1))
    assert type(again) is CachedCopy
    assert (again.version, again.stamp_us, again.blob) in ((1, 1, b"v1" * 32), (2, 2, b"v2" * 32))


def test_a_forced_write_to_a_node_marked_dead_is_not_counted_as_refused(
    pair: list[Any],
) -> None:
    """``set`` is tried even on a node marked dead; only calls not made are refusals."""
    server = pair[0]
    pool = RedisPool([server.url], failure_threshold=1, dead_timeout=30.0)
    server.kill()
    with pytest.raises(CacheUnavailable):
        pool.get(key(1))  # opens the breaker
    breaker = pool.nodes()[0].breaker
    with pytest.raises(CacheUnavailable, match="marked dead"):
        pool.get(key(1))
    assert breaker.refused == 1
    with pytest.raises(CacheUnavailable, match="failed"):
        pool.set(key(1), b"end marker", 60)  # tried: the connection is refused
    assert breaker.refused == 1
    pool.close()
