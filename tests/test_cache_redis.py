"""RedisPool against real redis-server processes.

The pool contract (tests/cache_contract.py) runs here on Redis; a plain redis-py client
looks behind the pool's back, so the tests see exactly what lands in Redis (bytes,
expiry, database) and on which server.  Below it: what only Redis does (millisecond
expiry, databases, value-named tokens, passwords in URLs).
"""

from __future__ import annotations

import pytest

from sa_sessions.cache.backend import CacheUnavailable
from sa_sessions.cache.guard import CachedCopy
from sa_sessions.cache.redis import RedisPool

from .cache_contract import REDIS
from .cache_contract import PoolContract
from .cache_contract import Refusal
from .cache_contract import Server
from .cache_contract import guard_on
from .cache_contract import hid
from .cache_contract import key
from .cache_contract import refusal_fixture
from .conftest import RedisProcess

pytestmark = pytest.mark.redis


def _push_a_list(server: Server) -> None:
    """A list under ``key("list")``: not a string, so every read of it is an error."""
    with REDIS.plain(server) as plain:
        plain.rpush(key("list"), b"x")


class TestRedisPool(PoolContract):
    """The pool contract on Redis, and what only a Redis pool does."""

    kind = REDIS
    refusal = refusal_fixture(
        {"wrong-type": Refusal(lambda pool: pool.get(key("list")), "ResponseError", _push_a_list)}
    )

    def test_every_write_carries_an_expiry_in_milliseconds(
        self, pool: RedisPool, server: RedisProcess
    ) -> None:
        pool.set(key(1), b"v", 0.3)
        assert pool.add(key(2), b"v", 2.5)
        pool.set_many({key(3): b"v"}, 3.5)
        found = pool.get(key(2))
        assert found is not None
        assert pool.cas(key(2), b"w", found[1], 2.5)
        with REDIS.plain(server) as plain:
            assert 0 < plain.pttl(key(1)) <= 301
            assert 2000 < plain.pttl(key(2)) <= 2501
            assert 3000 < plain.pttl(key(3)) <= 3501

    # ------------------------------------------------------------------ tokens

    def test_a_rewrite_of_the_same_bytes_keeps_the_token_valid(self, pool: RedisPool) -> None:
        """Documented: the token names the value, not the write (memcached names the write)."""
        pool.set(key(1), b"same bytes", 60)
        found = pool.get(key(1))
        assert found is not None
        pool.set(key(1), b"other bytes", 60)
        pool.set(key(1), b"same bytes", 60)
        assert pool.cas(key(1), b"swapped", found[1], 60) is True

    def test_two_session_copies_of_equal_length_never_share_a_token(self, pool: RedisPool) -> None:
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


def test_a_token_is_the_length_and_the_first_64_bytes() -> None:
    """Documented: enough for session entries, whose first 49 bytes carry a MAC."""
    pool = RedisPool(["redis://127.0.0.1:1/0"])
    with pytest.raises(TypeError, match="not a token"):
        pool.cas(key(1), b"v", b"1", 60)
    with pytest.raises(TypeError, match="not a token"):
        pool.cas(key(1), b"v", (1, b"v", 3), 60)


def test_the_database_of_the_url_is_used(redis_server: RedisProcess) -> None:
    pool = RedisPool([f"redis://127.0.0.1:{redis_server.port}/3"])
    pool.set(key(1), b"in db 3", 60)
    with REDIS.plain(redis_server, db=3) as in_3, REDIS.plain(redis_server, db=0) as in_0:
        assert in_3.get(key(1)) == b"in db 3"
        assert in_0.get(key(1)) is None
    pool.close()


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
