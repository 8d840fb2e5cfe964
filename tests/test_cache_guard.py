"""The coherence protocol of SessionCache, against the in-process cache, memcached and Redis.

Every rule of :mod:`sa_sessions.cache.guard` is checked on each backend, with the exact
number of round trips counted in ``CacheStats``.  Failing backends are real: closed
ports and killed servers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from sa_sessions.cache import guard as guard_module
from sa_sessions.cache.backend import CacheUnavailable
from sa_sessions.cache.backend import SessionCacheBackend
from sa_sessions.cache.backend import Token
from sa_sessions.cache.entry import HEADER_SIZE
from sa_sessions.cache.entry import EndReason
from sa_sessions.cache.guard import Absent
from sa_sessions.cache.guard import CachedCopy
from sa_sessions.cache.guard import CacheStats
from sa_sessions.cache.guard import Ended
from sa_sessions.cache.guard import SessionCache
from sa_sessions.cache.guard import check_key_prefix
from sa_sessions.cache.memcached import MemcachedPool
from sa_sessions.cache.memory import MemoryCache
from sa_sessions.cache.nodes import NodeRing
from sa_sessions.cache.redis import RedisPool
from sa_sessions.exceptions import SessionConfigError

from .conftest import OTHER_SECRET
from .conftest import SECRET
from .conftest import MemcachedProcess
from .conftest import RedisProcess
from .conftest import free_port

STAMP = 1_700_000_000_000_000
TTL = 600.0
LIMIT = 10_000


def hid(n: int | str) -> str:
    """A hashed session id."""
    return hashlib.sha256(f"guard-{n}".encode()).hexdigest()


def blob(label: str, size: int = 200) -> bytes:
    """Stand-in for a sealed blob: the protocol only needs its last 32 bytes (its MAC)."""
    seed = hashlib.sha256(label.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def stats(gets: int = 0, sets: int = 0, deletes: int = 0, errors: int = 0) -> CacheStats:
    return CacheStats(gets=gets, sets=sets, deletes=deletes, errors=errors)


def guard_on(
    backend: SessionCacheBackend,
    *,
    keys: Any = SECRET,
    max_value_bytes: int = LIMIT,
    end_marker_ttl: float = TTL,
    prefix: str = "sas:",
) -> SessionCache:
    return SessionCache(
        backend,
        keys=keys,
        prefix=prefix,
        max_value_bytes=max_value_bytes,
        end_marker_ttl=end_marker_ttl,
    )


@dataclass
class Setup:
    """A backend under test and a guard over it."""

    kind: str
    backend: SessionCacheBackend
    #: The guard under test (its stats are checked).
    cache: SessionCache
    #: A second guard on the same backend, to look without touching those stats.
    peek: SessionCache
    #: An end-marker TTL the backend keeps for a moment (memcached counts whole seconds).
    short_ttl: float

    def copy(self, hashed_id: str) -> CachedCopy:
        """What a read finds, which must be a copy."""
        found = self.peek.read(hashed_id)
        assert type(found) is CachedCopy, found
        return found

    def lookup(self, hashed_id: str) -> Any:
        """What a read finds."""
        return self.peek.read(hashed_id)


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    kind: str = request.param
    backend: SessionCacheBackend
    if kind == "memory":
        backend, short = MemoryCache(), 0.5
    elif kind == "memcached":
        server: MemcachedProcess = request.getfixturevalue("memcached")
        backend, short = MemcachedPool([server.address]), 2.0
    else:
        redis: RedisProcess = request.getfixturevalue("redis_server")
        backend, short = RedisPool([redis.url]), 0.5
    yield Setup(kind, backend, guard_on(backend), guard_on(backend), short)
    if isinstance(backend, (MemcachedPool, RedisPool)):
        backend.close()


# --------------------------------------------------------------------------- reading


def test_a_read_of_nothing_is_absent_without_a_token(setup: Setup) -> None:
    assert setup.cache.read(hid(1)) == Absent(None)
    assert setup.cache.stats == stats(gets=1)


def test_a_read_returns_the_copy_with_its_version_stamp_and_blob(setup: Setup) -> None:
    assert setup.cache.fill(hid(1), 4, blob("v4"), STAMP, TTL)
    found = setup.cache.read(hid(1))
    assert type(found) is CachedCopy
    assert (found.version, found.stamp_us, found.blob) == (4, STAMP, blob("v4"))
    assert found.token is not None
    assert setup.cache.stats == stats(gets=1, sets=1)


def test_garbage_reads_as_absent_with_a_token_and_a_warning(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.backend.set(setup.cache.key(hid(1)), b"garbage" * 20, TTL)
    with caplog.at_level(logging.WARNING, logger="sa_sessions.cache"):
        found = setup.cache.read(hid(1))
    assert type(found) is Absent and found.token is not None
    assert "failed authentication" in caplog.text
    assert hid(1) not in caplog.text  # at most a short prefix of the hashed id
    assert setup.cache.stats == stats(gets=1)  # not a cache failure


def test_an_entry_of_another_session_reads_as_absent(setup: Setup) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    found = setup.backend.get(setup.cache.key(hid(1)))
    assert found is not None
    setup.backend.set(setup.cache.key(hid(2)), found[0], TTL)  # moved under another key
    assert type(setup.lookup(hid(2))) is Absent


def test_an_entry_made_with_another_secret_reads_as_absent(setup: Setup) -> None:
    guard_on(setup.backend, keys=OTHER_SECRET).fill(hid(1), 1, blob("v1"), STAMP, TTL)
    assert type(setup.lookup(hid(1))) is Absent


def test_entries_of_the_previous_key_are_read_after_a_rotation(setup: Setup) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    setup.cache.end(hid(2), EndReason.REVOKED, STAMP)
    rotated = guard_on(setup.backend, keys=[SECRET, OTHER_SECRET])
    found = rotated.read(hid(1))
    assert type(found) is CachedCopy and found.blob == blob("v1")
    assert rotated.read(hid(2)) == Ended(EndReason.REVOKED)


# --------------------------------------------------------------------------- fill


def test_fill_adds_where_nothing_is_stored(setup: Setup) -> None:
    assert setup.cache.fill(hid(1), 2, blob("v2"), STAMP, TTL) is True
    assert setup.copy(hid(1)).version == 2
    assert setup.cache.stats == stats(sets=1)


def test_fill_never_overwrites_a_copy_published_after_the_read(setup: Setup) -> None:
    seen = setup.cache.read(hid(1))  # nothing yet
    assert setup.cache.publish(hid(1), 3, blob("v3"), STAMP + 1, TTL)  # a writer commits
    assert type(seen) is Absent
    assert setup.cache.fill(hid(1), 2, blob("v2"), STAMP, TTL, seen) is False
    copy = setup.copy(hid(1))
    assert (copy.version, copy.blob) == (3, blob("v3"))
    assert setup.cache.stats == stats(gets=1, sets=2)


def test_fill_replaces_the_garbage_its_read_saw(setup: Setup) -> None:
    setup.backend.set(setup.cache.key(hid(1)), b"garbage" * 20, TTL)
    seen = setup.cache.read(hid(1))
    assert type(seen) is Absent and seen.token is not None
    assert setup.cache.fill(hid(1), 2, blob("v2"), STAMP, TTL, seen) is True
    assert setup.copy(hid(1)).blob == blob("v2")
    assert setup.cache.stats == stats(gets=1, sets=1)


def test_fill_does_not_replace_garbage_that_changed_since_the_read(setup: Setup) -> None:
    setup.backend.set(setup.cache.key(hid(1)), b"garbage" * 20, TTL)
    seen = setup.cache.read(hid(1))
    assert type(seen) is Absent
    assert setup.cache.publish(hid(1), 3, blob("v3"), STAMP, TTL, seen.token)
    assert setup.cache.fill(hid(1), 2, blob("v2"), STAMP, TTL, seen) is False
    assert setup.copy(hid(1)).version == 3


def test_fill_replaces_the_older_copy_its_read_saw(setup: Setup) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    seen = setup.copy(hid(1))
    assert setup.cache.fill(hid(1), 2, blob("v2"), STAMP + 5, TTL, seen) is True
    copy = setup.copy(hid(1))
    assert (copy.version, copy.stamp_us, copy.blob) == (2, STAMP + 5, blob("v2"))


def test_an_end_marker_blocks_refills(setup: Setup) -> None:
    seen = setup.cache.read(hid(1))
    assert type(seen) is Absent
    assert setup.cache.end(hid(1), EndReason.ENDED, STAMP)  # logout while the row was read
    assert setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL, seen) is False
    assert setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL) is False
    assert setup.lookup(hid(1)) == Ended(EndReason.ENDED)


def test_a_copy_too_large_for_the_cache_becomes_a_row_only_marker(setup: Setup) -> None:
    big = blob("big", LIMIT)
    assert setup.cache.fill(hid(1), 5, big, STAMP, TTL) is True
    copy = setup.copy(hid(1))
    assert (copy.version, copy.stamp_us, copy.blob) == (5, STAMP, None)
    raw = setup.backend.get(setup.cache.key(hid(1)))
    assert raw is not None and len(raw[0]) == HEADER_SIZE
    assert setup.cache.publish(hid(2), 6, big, STAMP, TTL) is True
    assert setup.copy(hid(2)).blob is None


def test_the_size_limit_counts_the_entry_header(setup: Setup) -> None:
    fits = blob("fits", LIMIT - HEADER_SIZE)
    setup.cache.fill(hid(1), 1, fits, STAMP, TTL)
    assert setup.copy(hid(1)).blob == fits
    setup.cache.fill(hid(2), 1, fits + b"!", STAMP, TTL)
    assert setup.copy(hid(2)).blob is None


# --------------------------------------------------------------------------- publish


def test_publish_adds_where_nothing_is_stored(setup: Setup) -> None:
    assert setup.cache.publish(hid(1), 1, blob("v1"), STAMP, TTL) is True
    assert setup.copy(hid(1)).version == 1
    assert setup.cache.stats == stats(sets=1)


def test_publish_with_the_requests_token_is_one_swap(setup: Setup) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    seen = setup.copy(hid(1))
    setup.cache.stats.reset()
    assert setup.cache.publish(hid(1), 2, blob("v2"), STAMP + 1, TTL, seen.token) is True
    copy = setup.copy(hid(1))
    assert (copy.version, copy.stamp_us, copy.blob) == (2, STAMP + 1, blob("v2"))
    assert setup.cache.stats == stats(sets=1)


def test_publish_replaces_an_older_copy_it_did_not_read(setup: Setup) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    setup.cache.stats.reset()
    assert setup.cache.publish(hid(1), 2, blob("v2"), STAMP, TTL) is True
    assert setup.copy(hid(1)).version == 2
    assert setup.cache.stats == stats(gets=1, sets=2)  # add, get, swap


def test_publish_never_overwrites_a_newer_version(setup: Setup) -> None:
    setup.cache.publish(hid(1), 5, blob("v5"), STAMP, TTL)
    setup.cache.stats.reset()
    assert setup.cache.publish(hid(1), 4, blob("v4"), STAMP + 9, TTL) is False
    assert setup.copy(hid(1)).version == 5
    assert setup.cache.stats == stats(gets=1, sets=1)


def test_publish_with_a_stale_token_never_overwrites_a_newer_version(setup: Setup) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    seen = setup.copy(hid(1))
    setup.cache.publish(hid(1), 3, blob("v3"), STAMP, TTL, seen.token)  # the faster writer
    setup.cache.stats.reset()
    assert setup.cache.publish(hid(1), 2, blob("v2"), STAMP, TTL, seen.token) is False
    assert setup.copy(hid(1)).version == 3
    assert setup.cache.stats == stats(gets=1, sets=1)


def test_publish_of_the_version_already_cached_changes_nothing(setup: Setup) -> None:
    setup.cache.publish(hid(1), 2, blob("v2"), STAMP, TTL)
    assert setup.cache.publish(hid(1), 2, blob("other"), STAMP + 1, TTL) is False
    copy = setup.copy(hid(1))
    assert (copy.stamp_us, copy.blob) == (STAMP, blob("v2"))


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "stale-token"])
def test_publish_never_overwrites_an_end_marker(setup: Setup, with_token: bool) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    seen = setup.copy(hid(1))
    setup.cache.end(hid(1), EndReason.REVOKED, STAMP)
    token = seen.token if with_token else None
    assert setup.cache.publish(hid(1), 2, blob("v2"), STAMP, TTL, token) is False
    assert setup.lookup(hid(1)) == Ended(EndReason.REVOKED)


def test_publish_replaces_garbage(setup: Setup) -> None:
    setup.backend.set(setup.cache.key(hid(1)), b"\x80\x04garbage" * 10, TTL)
    assert setup.cache.publish(hid(1), 1, blob("v1"), STAMP, TTL) is True
    assert setup.copy(hid(1)).version == 1


def test_out_of_order_publishers_leave_the_newest(setup: Setup) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    seen = setup.copy(hid(1))  # both writers read version 1
    assert setup.cache.publish(hid(1), 3, blob("v3"), STAMP, TTL, seen.token)
    assert not setup.cache.publish(hid(1), 2, blob("v2"), STAMP, TTL, seen.token)
    assert setup.copy(hid(1)).version == 3

    assert setup.cache.publish(hid(2), 2, blob("v2"), STAMP, TTL)  # in order this time
    assert setup.cache.publish(hid(2), 3, blob("v3"), STAMP, TTL)
    assert setup.copy(hid(2)).version == 3


def test_concurrent_publishers_never_leave_a_version_older_than_a_reported_one(
    setup: Setup,
) -> None:
    """A publisher may give up under contention, but what it reported stored stays covered."""
    versions = list(range(1, 9))
    barrier = threading.Barrier(len(versions))
    stored: list[int] = []
    lock = threading.Lock()

    def publish(version: int) -> None:
        barrier.wait()
        if setup.cache.publish(hid(1), version, blob(f"v{version}"), STAMP, TTL):
            with lock:
                stored.append(version)

    threads = [threading.Thread(target=publish, args=(v,)) for v in versions[::-1]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = setup.copy(hid(1))
    assert stored
    assert final.version == max(stored)
    assert final.blob == blob(f"v{final.version}")


class RivalWrites:
    """A real backend whose every write is preceded by a rival writer's (older) version.

    The interleaving only the scheduler would otherwise produce, made deterministic.
    """

    def __init__(self, backend: SessionCacheBackend, rival: Callable[[], None]) -> None:
        self.backend = backend
        self.rival = rival

    def get(self, key: str) -> tuple[bytes, Token] | None:
        return self.backend.get(key)

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        self.rival()
        return self.backend.add(key, value, ttl)

    def cas(self, key: str, value: bytes, token: Token, ttl: float) -> bool:
        self.rival()
        return self.backend.cas(key, value, token, ttl)

    def set(self, key: str, value: bytes, ttl: float) -> None:
        self.backend.set(key, value, ttl)

    def set_many(self, values: Mapping[str, bytes], ttl: float) -> None:
        self.backend.set_many(values, ttl)

    def delete(self, key: str) -> None:
        self.backend.delete(key)


def _rival_writes_older_versions(setup: Setup, rounds: int | None) -> SessionCache:
    """A guard whose every add/cas is preceded by a rival storing an older version
    (the first ``rounds`` times; always when ``rounds`` is None)."""
    versions = iter(range(1, 10_000))
    left = [rounds]

    def rival() -> None:
        if left[0] is not None:
            if left[0] == 0:
                return
            left[0] -= 1
        version = next(versions)
        raw = setup.cache.entries.copy(hid(1), version, STAMP, blob(f"v{version}"))
        setup.backend.set(setup.cache.key(hid(1)), raw, TTL)

    return guard_on(RivalWrites(setup.backend, rival))


def test_publish_outlasts_as_many_rivals_as_parallel_writers(setup: Setup) -> None:
    """Forty older versions land between our reads and swaps: the newest still ends up
    cached (each failed round is another writer's success)."""
    contended = _rival_writes_older_versions(setup, 40)
    assert contended.publish(hid(1), 10_000, blob("newest"), STAMP, TTL) is True
    assert contended.stats == stats(gets=40, sets=41)
    assert setup.copy(hid(1)).version == 10_000


def test_publish_gives_up_only_after_its_bound(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    rounds = guard_module.PUBLISH_ROUNDS
    contended = _rival_writes_older_versions(setup, None)
    with caplog.at_level(logging.WARNING, logger="sa_sessions.cache"):
        assert contended.publish(hid(1), 10_000, blob("newest"), STAMP, TTL) is False
    assert contended.stats == stats(gets=rounds, sets=rounds)
    assert "gave up publishing session" in caplog.text
    assert setup.copy(hid(1)).version == rounds  # the rival's last write


def test_the_newest_of_parallel_writers_is_the_copy_left_cached(setup: Setup) -> None:
    """Forty writers committed versions 2..41 of a session they all read at version 1,
    and publish at once from the same token: the cache ends with version 41."""
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    token = setup.copy(hid(1)).token
    writers = 40
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def publish(version: int) -> None:
        try:
            start.wait(10)
            setup.cache.publish(hid(1), version, blob(f"v{version}"), STAMP, TTL, token)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(v,)) for v in range(2, writers + 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    copy = setup.copy(hid(1))
    assert (copy.version, copy.blob) == (writers + 1, blob(f"v{writers + 1}"))


# --------------------------------------------------------------------------- quick writes


def test_replace_swaps_the_very_copy_read_and_keeps_version_and_stamp(setup: Setup) -> None:
    setup.cache.fill(hid(1), 3, blob("v3"), STAMP, TTL)
    seen = setup.copy(hid(1))
    setup.cache.stats.reset()
    assert setup.cache.replace(hid(1), seen, blob("v3+quick"), TTL) is True
    copy = setup.copy(hid(1))
    assert (copy.version, copy.stamp_us, copy.blob) == (3, STAMP, blob("v3+quick"))
    assert setup.cache.stats == stats(sets=1)


def test_replace_fails_once_the_copy_changed(setup: Setup) -> None:
    setup.cache.fill(hid(1), 3, blob("v3"), STAMP, TTL)
    first, second = setup.copy(hid(1)), setup.copy(hid(1))  # two parallel requests
    assert setup.cache.replace(hid(1), first, blob("first"), TTL)
    assert setup.cache.replace(hid(1), second, blob("second"), TTL) is False
    assert setup.copy(hid(1)).blob == blob("first")
    assert setup.cache.replace(hid(1), first, blob("again"), TTL) is False  # token spent


def test_replace_fails_after_a_newer_version_or_an_end(setup: Setup) -> None:
    setup.cache.fill(hid(1), 3, blob("v3"), STAMP, TTL)
    seen = setup.copy(hid(1))
    setup.cache.publish(hid(1), 4, blob("v4"), STAMP, TTL, seen.token)
    assert setup.cache.replace(hid(1), seen, blob("lost"), TTL) is False
    assert setup.copy(hid(1)).version == 4
    now = setup.copy(hid(1))
    setup.cache.end(hid(1), EndReason.ENDED, STAMP)
    assert setup.cache.replace(hid(1), now, blob("lost"), TTL) is False
    assert setup.lookup(hid(1)) == Ended(EndReason.ENDED)


def test_replace_with_a_copy_that_does_not_fit_writes_nothing(setup: Setup) -> None:
    setup.cache.fill(hid(1), 3, blob("v3"), STAMP, TTL)
    seen = setup.copy(hid(1))
    setup.cache.stats.reset()
    assert setup.cache.replace(hid(1), seen, blob("huge", LIMIT), TTL) is False
    assert setup.cache.replace_with(hid(1), seen, 4, blob("huge", LIMIT), STAMP, TTL) is False
    assert setup.cache.stats == stats()
    assert setup.copy(hid(1)).blob == blob("v3")


def test_replace_after_the_copy_vanished_fails(setup: Setup) -> None:
    setup.cache.fill(hid(1), 3, blob("v3"), STAMP, TTL)
    seen = setup.copy(hid(1))
    setup.backend.delete(setup.cache.key(hid(1)))
    assert setup.cache.replace(hid(1), seen, blob("lost"), TTL) is False
    assert setup.lookup(hid(1)) == Absent(None)


def test_restamp_gives_the_copy_a_fresh_stamp(setup: Setup) -> None:
    setup.cache.fill(hid(1), 3, blob("v3"), STAMP, TTL)
    seen = setup.copy(hid(1))
    setup.cache.stats.reset()
    assert setup.cache.restamp(hid(1), seen, STAMP + 60, TTL) is True
    copy = setup.copy(hid(1))
    assert (copy.version, copy.stamp_us, copy.blob) == (3, STAMP + 60, blob("v3"))
    assert setup.cache.stats == stats(sets=1)
    assert setup.cache.restamp(hid(1), seen, STAMP + 120, TTL) is False  # stale token
    assert setup.copy(hid(1)).stamp_us == STAMP + 60


def test_restamp_keeps_a_row_only_marker_row_only(setup: Setup) -> None:
    setup.cache.fill(hid(1), 3, blob("big", LIMIT), STAMP, TTL)
    seen = setup.copy(hid(1))
    assert seen.blob is None
    assert setup.cache.restamp(hid(1), seen, STAMP + 60, TTL)
    copy = setup.copy(hid(1))
    assert (copy.version, copy.stamp_us, copy.blob) == (3, STAMP + 60, None)


def test_create_adds_and_never_overwrites(setup: Setup) -> None:
    assert setup.cache.create(hid(1), 1, blob("v1"), STAMP, TTL) is True
    assert setup.cache.create(hid(1), 1, blob("other"), STAMP, TTL) is False
    assert setup.copy(hid(1)).blob == blob("v1")
    assert setup.cache.stats == stats(sets=2)
    assert setup.cache.create(hid(2), 1, blob("huge", LIMIT), STAMP, TTL) is False
    assert setup.cache.stats == stats(sets=2)  # too large: not even tried
    assert setup.lookup(hid(2)) == Absent(None)


def test_replace_with_moves_a_cache_only_session_to_its_next_version(setup: Setup) -> None:
    setup.cache.create(hid(1), 1, blob("v1"), STAMP, TTL)
    seen = setup.copy(hid(1))
    assert setup.cache.replace_with(hid(1), seen, 2, blob("v2"), STAMP + 1, TTL) is True
    copy = setup.copy(hid(1))
    assert (copy.version, copy.stamp_us, copy.blob) == (2, STAMP + 1, blob("v2"))
    assert setup.cache.replace_with(hid(1), seen, 2, blob("racer"), STAMP, TTL) is False
    assert setup.cache.stats == stats(sets=3)


# --------------------------------------------------------------------------- ending


@pytest.mark.parametrize("reason", list(EndReason))
def test_end_writes_a_marker_with_its_reason(setup: Setup, reason: EndReason) -> None:
    setup.cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    setup.cache.stats.reset()
    assert setup.cache.end(hid(1), reason, STAMP) is True
    assert setup.cache.stats == stats(deletes=1)
    assert setup.cache.read(hid(1)) == Ended(reason)
    assert setup.cache.create(hid(1), 1, blob("v1"), STAMP, TTL) is False


def test_end_many_marks_every_session_in_one_call(setup: Setup) -> None:
    ids = [hid(n) for n in range(20)]
    for hashed_id in ids[:10]:
        setup.cache.fill(hashed_id, 1, blob("v1"), STAMP, TTL)
    setup.cache.stats.reset()
    assert setup.cache.end_many(ids, EndReason.REVOKED, STAMP) is True
    assert setup.cache.stats == stats(deletes=1)
    assert all(setup.lookup(hashed_id) == Ended(EndReason.REVOKED) for hashed_id in ids)
    assert setup.cache.end_many([], EndReason.REVOKED, STAMP) is True
    assert setup.cache.stats == stats(deletes=1)


def test_an_end_marker_expires_after_its_ttl_then_a_refill_works(setup: Setup) -> None:
    cache = guard_on(setup.backend, end_marker_ttl=setup.short_ttl)
    cache.end(hid(1), EndReason.ENDED, STAMP)
    assert cache.fill(hid(1), 1, blob("v1"), STAMP, TTL) is False
    deadline = setup.short_ttl + 4
    started = time.monotonic()
    while type(cache.read(hid(1))) is Ended:
        assert time.monotonic() - started < deadline, "the end marker never expired"
        time.sleep(0.05)
    assert cache.fill(hid(1), 1, blob("v1"), STAMP, TTL) is True


# --------------------------------------------------------------------------- pools


POOLS = [
    pytest.param("memcached", id="memcached-pool", marks=pytest.mark.memcached),
    pytest.param("redis", id="redis-pool", marks=pytest.mark.redis),
]


@pytest.fixture(params=POOLS)
def pool_setup(
    request: pytest.FixtureRequest,
    memcached_factory: Callable[[], MemcachedProcess],
    redis_factory: Callable[[], RedisProcess],
) -> Iterator[tuple[SessionCache, list[Any], list[str]]]:
    """A guard over a private two-server pool (the test may kill a server)."""
    backend: MemcachedPool | RedisPool
    if request.param == "memcached":
        servers: list[Any] = [memcached_factory(), memcached_factory()]
        names = [server.address for server in servers]
        backend = MemcachedPool(names, dead_timeout=30.0)
    else:
        servers = [redis_factory(), redis_factory()]
        names = [server.url for server in servers]
        backend = RedisPool(names, dead_timeout=30.0)
    yield guard_on(backend), servers, names
    backend.close()
    for server in servers:
        server.stop()


def test_end_many_reaches_every_node_of_a_pool(
    pool_setup: tuple[SessionCache, list[Any], list[str]],
) -> None:
    cache, _, names = pool_setup
    ring = NodeRing([(name, name) for name in names])
    ids = [hid(n) for n in range(30)]
    assert {ring.node_for(cache.key(h)) for h in ids} == set(names)
    assert cache.end_many(ids, EndReason.REVOKED, STAMP)
    assert all(cache.read(h) == Ended(EndReason.REVOKED) for h in ids)


def test_one_dead_node_costs_only_its_own_sessions(
    pool_setup: tuple[SessionCache, list[Any], list[str]],
) -> None:
    cache, servers, names = pool_setup
    ring = NodeRing([(name, name) for name in names])
    ids = [hid(n) for n in range(30)]
    on_dead = [h for h in ids if ring.node_for(cache.key(h)) == names[1]]
    on_live = [h for h in ids if ring.node_for(cache.key(h)) == names[0]]
    for h in ids:
        cache.fill(h, 1, blob("v1"), STAMP, TTL)
    servers[1].kill()
    cache.stats.reset()
    assert all(cache.read(h) == Absent(None) for h in on_dead)
    assert all(type(cache.read(h)) is CachedCopy for h in on_live)
    assert cache.end_many(ids, EndReason.REVOKED, STAMP) is False  # reported, never raised
    assert all(cache.read(h) == Ended(EndReason.REVOKED) for h in on_live)
    assert cache.stats.errors == len(on_dead) + 1
    assert cache.stats.gets == len(ids) + len(on_live)


# --------------------------------------------------------------------------- failures


def _failing(kind: str) -> SessionCacheBackend:
    port = free_port()  # nothing listens there
    if kind == "memcached":
        return MemcachedPool([f"127.0.0.1:{port}"], dead_timeout=30.0)
    return RedisPool([f"redis://user:s3cret-pw@127.0.0.1:{port}/0"], dead_timeout=30.0)


FAILING = ["memcached", "redis"]


@pytest.mark.parametrize("kind", FAILING)
def test_a_failing_backend_never_raises_and_every_failure_is_counted(kind: str) -> None:
    cache = guard_on(_failing(kind))
    copy = CachedCopy(1, STAMP, blob("v1"), b"1" if kind == "memcached" else (1, b"x"))
    assert cache.read(hid(1)) == Absent(None)
    assert cache.fill(hid(1), 1, blob("v1"), STAMP, TTL) is False
    assert cache.fill(hid(1), 1, blob("v1"), STAMP, TTL, Absent(copy.token)) is False
    assert cache.publish(hid(1), 2, blob("v2"), STAMP, TTL) is False
    assert cache.publish(hid(1), 2, blob("v2"), STAMP, TTL, copy.token) is False
    assert cache.restamp(hid(1), copy, STAMP, TTL) is False
    assert cache.replace(hid(1), copy, blob("q"), TTL) is False
    assert cache.replace_with(hid(1), copy, 2, blob("v2"), STAMP, TTL) is False
    assert cache.create(hid(1), 1, blob("v1"), STAMP, TTL) is False
    assert cache.end(hid(1), EndReason.ENDED, STAMP) is False
    assert cache.end_many([hid(1), hid(2)], EndReason.REVOKED, STAMP) is False
    assert cache.stats == stats(gets=1, sets=8, deletes=2, errors=11)


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_a_killed_server_never_raises_out_of_the_guard(
    kind: str,
    memcached_factory: Callable[[], MemcachedProcess],
    redis_factory: Callable[[], RedisProcess],
) -> None:
    backend: MemcachedPool | RedisPool
    if kind == "memcached":
        server: Any = memcached_factory()
        backend = MemcachedPool([server.address])
    else:
        server = redis_factory()
        backend = RedisPool([server.url])
    cache = guard_on(backend)
    cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    seen = cache.read(hid(1))
    assert type(seen) is CachedCopy
    server.kill()
    cache.stats.reset()
    for _ in range(3):  # the open connection breaks, then refusals, then the breaker
        assert cache.read(hid(1)) == Absent(None)
        assert cache.replace(hid(1), seen, blob("q"), TTL) is False
        assert cache.publish(hid(1), 2, blob("v2"), STAMP, TTL, seen.token) is False
    assert cache.stats == stats(gets=3, sets=6, errors=9)
    backend.close()


class FakeTime:
    """Stands in for the ``time`` module inside guard.py: a clock the test moves."""

    def __init__(self) -> None:
        self.now = 5000.0

    def monotonic(self) -> float:
        return self.now


def test_failures_are_logged_as_one_warning_every_ten_seconds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeTime()
    monkeypatch.setattr(guard_module, "time", clock)
    cache = guard_on(_failing("memcached"))
    with caplog.at_level(logging.DEBUG, logger="sa_sessions.cache"):
        for _ in range(5):
            cache.read(hid(1))
            clock.now += 1.0
        clock.now += 5.0  # ten seconds after the first warning
        cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
        cache.read(hid(1))
    records = [r for r in caplog.records if r.name == "sa_sessions.cache"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("cache get failed (memcached gets failed (")
    assert warnings[0].endswith("using the database (1 cache failures since the last report)")
    assert warnings[1].startswith("cache fill failed (")
    assert warnings[1].endswith("(5 cache failures since the last report)")
    debug = [r.getMessage() for r in records if r.levelno == logging.DEBUG]
    assert len(debug) == 5  # four reads between the warnings, the read right after the second
    assert cache.stats.errors == 7


def test_failure_messages_never_show_a_redis_password(caplog: pytest.LogCaptureFixture) -> None:
    backend = _failing("redis")
    cache = guard_on(backend)
    with caplog.at_level(logging.DEBUG, logger="sa_sessions"):
        for _ in range(4):  # refused, refused, then "marked dead" with the URL
            cache.read(hid(1))
    assert "marked dead" in caplog.text
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in repr(cache)
    with pytest.raises(CacheUnavailable) as caught:
        backend.get("k")
    assert "s3cret-pw" not in str(caught.value)


# --------------------------------------------------------------------------- keys


def test_keys_are_the_prefix_and_the_hashed_id() -> None:
    cache = guard_on(MemoryCache(), prefix="app1:sess:")
    assert cache.key(hid(1)) == "app1:sess:" + hid(1)
    assert len(guard_on(MemoryCache(), prefix="p" * 186).key(hid(1))) == 250


@pytest.mark.parametrize(
    "hashed_id",
    [
        hid(1)[:-1],
        hid(1) + "0",
        hid(1).upper(),
        "g" * 64,
        hid(1)[:-1] + " ",
        hid(1)[:-1] + "\n",
        "é" * 64,
        b"0" * 64,
        None,
    ],
)
def test_anything_but_a_sha256_hex_digest_is_refused_as_a_key(hashed_id: Any) -> None:
    cache = guard_on(MemoryCache())
    with pytest.raises(ValueError, match="64-character lowercase SHA-256"):
        cache.key(hashed_id)
    with pytest.raises(ValueError, match="64-character lowercase SHA-256"):
        cache.read(hashed_id)
    with pytest.raises(ValueError, match="64-character lowercase SHA-256"):
        cache.end_many([hid(2), hashed_id], EndReason.ENDED, STAMP)
    assert cache.stats == stats()


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("a b:", "printable ASCII without spaces"),
        ("a\tb", "printable ASCII without spaces"),
        ("\x01:", "printable ASCII without spaces"),
        ("é:", "printable ASCII without spaces"),
        ("p\r\n", "printable ASCII without spaces"),
        (b"sas:", "printable ASCII without spaces"),
        ("p" * 187, "too long: keys are limited to 250"),
    ],
)
def test_bad_prefixes_are_refused(prefix: Any, message: str) -> None:
    with pytest.raises(SessionConfigError, match=message):
        check_key_prefix(prefix)
    with pytest.raises(SessionConfigError, match=message):
        guard_on(MemoryCache(), prefix=prefix)


@pytest.mark.parametrize("prefix", ["", "sas:", "app1:sess:", "p" * 186, "!~"])
def test_good_prefixes_are_accepted(prefix: str) -> None:
    assert check_key_prefix(prefix) == prefix


def test_the_longest_prefix_works_on_every_backend(setup: Setup) -> None:
    cache = guard_on(setup.backend, prefix="p" * 186)
    assert cache.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    assert cache.end(hid(2), EndReason.ENDED, STAMP)
    assert type(cache.read(hid(1))) is CachedCopy
    assert cache.read(hid(2)) == Ended(EndReason.ENDED)
    assert cache.stats.errors == 0


def test_guards_with_other_prefixes_do_not_see_each_other(setup: Setup) -> None:
    first = guard_on(setup.backend, prefix="app1:")
    second = guard_on(setup.backend, prefix="app2:")
    first.fill(hid(1), 1, blob("v1"), STAMP, TTL)
    assert second.read(hid(1)) == Absent(None)


def test_repr_names_the_backend_and_the_prefix() -> None:
    assert repr(guard_on(MemoryCache(), prefix="x:")).endswith(", prefix='x:')")


def test_stats_reset() -> None:
    counted = stats(gets=1, sets=2, deletes=3, errors=4)
    counted.reset()
    assert counted == CacheStats()
