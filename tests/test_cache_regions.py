"""Region factories, configuration files, and which regions the session store accepts.

Settings are validated with messages that name the setting; a region configured from
an ini-style dict (every value a string) works end to end; backends that unpickle what
they read are refused; and what anyone with access to the cache plants there is never
unpickled.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import TypeVar

import pytest
from dogpile.cache import make_region
from dogpile.cache import register_backend
from dogpile.cache.api import NO_VALUE
from dogpile.cache.api import CacheBackend
from dogpile.cache.region import CacheRegion

from sa_sessions.cache import memcached_region
from sa_sessions.cache import memory_region
from sa_sessions.cache import redis_region
from sa_sessions.cache.backend import Token
from sa_sessions.cache.guard import Absent
from sa_sessions.cache.guard import CachedCopy
from sa_sessions.cache.guard import SessionCache
from sa_sessions.cache.memcached import BytesOnlySerde
from sa_sessions.cache.memcached import MemcachedPool
from sa_sessions.cache.memory import MemoryCache
from sa_sessions.cache.redis import RedisPool
from sa_sessions.cache.regions import session_cache_for
from sa_sessions.exceptions import SessionConfigError

from .cache_contract import MEMCACHED
from .cache_contract import POOL_KINDS
from .cache_contract import PoolKind
from .cache_contract import gadget
from .cache_contract import guard_on
from .cache_contract import hid
from .conftest import MemcachedProcess

WEEK = 7 * 24 * 3600

P = TypeVar("P", MemcachedPool, RedisPool)


def pool_of(region: CacheRegion, kind: type[P]) -> P:
    """The pool behind a region of ours, of the kind expected."""
    pool = region.backend.pool
    assert isinstance(pool, kind)
    return pool


def node_settings(pool: MemcachedPool | RedisPool) -> list[dict[str, object]]:
    """What each node of ``pool`` was built with, by the names of the backend's arguments."""
    if isinstance(pool, MemcachedPool):
        return [
            {
                "timeout": node.client().timeout,
                "connect_timeout": node.client().connect_timeout,
                "failure_threshold": node.breaker.failure_threshold,
                "dead_timeout": node.breaker.reset_after,
            }
            for node in pool.nodes()
        ]
    return [
        {
            "socket_timeout": node.client.connection_pool.connection_kwargs["socket_timeout"],
            "max_connections": node.client.connection_pool.max_connections,
            "failure_threshold": node.breaker.failure_threshold,
            "dead_timeout": node.breaker.reset_after,
        }
        for node in pool.nodes()
    ]


def refusal_of(backend: str, arguments: dict[str, Any]) -> str:
    """The message of the SessionConfigError that configuring ``backend`` raises."""
    with pytest.raises(SessionConfigError) as caught:
        make_region().configure(backend, arguments=arguments)
    return str(caught.value)


def test_importing_sa_sessions_imports_no_cache_client() -> None:
    code = (
        "import sys, sa_sessions, sa_sessions.cache, sa_sessions.cache.regions;"
        "sys.exit(('pymemcache' in sys.modules) + 2 * ('redis' in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()


def test_factory_regions_have_no_soft_expiry_and_take_a_name() -> None:
    """The store checks expiry itself; dogpile's soft expiry would only add misses."""
    for region in (
        memcached_region("127.0.0.1:11211", name="sessions"),
        redis_region("redis://127.0.0.1:6379/0", name="sessions"),
        memory_region("sessions"),
    ):
        assert region.expiration_time is None
        assert region.name == "sessions"


# --------------------------------------------------------------------------- memcached_region


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ([], "at least one memcached server is required"),
        ("", "at least one memcached server is required"),
        ("localhost", "malformed memcached server 'localhost': expected 'host:port'"),
        ("localhost:", "expected 'host:port'"),
        (":11211", "expected 'host:port'"),
        ("localhost:0", "port out of range"),
        ("localhost:65536", "port out of range"),
        ("localhost:abc", "expected 'host:port'"),
        ("localhost:-1", "expected 'host:port'"),
        ("localhost:١٢", "expected 'host:port'"),  # Arabic-Indic digits
        (["local host:11211"], "bad host"),
        (["host\r\n:11211"], "bad host"),
        (["-host:11211"], "bad host"),
        (["hôst:11211"], "bad host"),
        ("::1:11211", "bad host"),  # IPv6 needs brackets
        ("[not-v6]:11211", "malformed memcached server '\\[not-v6\\]:11211'"),
        (["127.0.0.1:11211", "127.0.0.1:11211"], "duplicate memcached server"),
        ("127.0.0.1:11211, 127.0.0.1:11211", "duplicate memcached server"),
        ([b"127.0.0.1:11211"], "must be a 'host:port' string"),
        ([("127.0.0.1", 11211)], "must be a 'host:port' string"),
        (b"127.0.0.1:11211", "servers must be a string or a list of strings"),
        (None, "servers must be a string or a list of strings"),
        (11211, "servers must be a string or a list of strings"),
    ],
)
def test_bad_memcached_servers_are_refused_with_a_clear_message(servers: Any, message: str) -> None:
    with pytest.raises(SessionConfigError, match=message):
        memcached_region(servers)


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ("127.0.0.1:11211", ["127.0.0.1:11211"]),
        ("localhost:1", ["localhost:1"]),
        ("[::1]:11211", ["[::1]:11211"]),
        ("cache-1.internal:11211, cache_2:11212", ["cache-1.internal:11211", "cache_2:11212"]),
        ("a:1 b:2\n c:3", ["a:1", "b:2", "c:3"]),
        (["cache-1:11211", "cache-2:11211"], ["cache-1:11211", "cache-2:11211"]),
        (("a:1", "b:2"), ["a:1", "b:2"]),
    ],
)
def test_memcached_server_lists_as_users_write_them(servers: Any, expected: list[str]) -> None:
    assert pool_of(memcached_region(servers), MemcachedPool).servers == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connect_timeout": 0}, "connect_timeout must be a positive number of seconds, got 0"),
        ({"connect_timeout": -1}, "connect_timeout must be a positive number of seconds"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds, got nan"),
        ({"timeout": float("inf")}, "timeout must be a positive number of seconds, got inf"),
        ({"timeout": True}, "timeout must be a positive number of seconds, got True"),
        ({"timeout": "0.2"}, "timeout must be a positive number of seconds, got '0.2'"),
        ({"timeout": None}, "timeout must be a positive number of seconds, got None"),
        ({"dead_timeout": 0}, "dead_timeout must be a positive number of seconds"),
        ({"failure_threshold": 0}, "failure_threshold must be an int >= 1, got 0"),
        ({"failure_threshold": 1.5}, "failure_threshold must be an int >= 1, got 1.5"),
        ({"failure_threshold": True}, "failure_threshold must be an int >= 1, got True"),
        ({"memcached_expire_time": 0}, "memcached_expire_time must be an int of 1..2592000"),
        ({"memcached_expire_time": -1}, "memcached_expire_time must be an int of 1..2592000"),
        ({"memcached_expire_time": 2592001}, "reads larger values as a Unix timestamp"),
        ({"memcached_expire_time": 60.0}, "memcached_expire_time must be an int"),
        ({"memcached_expire_time": True}, "memcached_expire_time must be an int"),
        ({"tls_context": "yes"}, "tls_context must be an ssl.SSLContext"),
    ],
)
def test_bad_memcached_settings_are_refused_with_a_clear_message(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(SessionConfigError, match=message):
        memcached_region("127.0.0.1:11211", **kwargs)


@pytest.mark.parametrize(
    "argument",
    [
        "serde",
        "default_noreply",
        "ignore_exc",
        "retry_attempts",
        "retry_timeout",
        "hashclient_retry_attempts",
        "enable_retry_client",
        "distributed_lock",
    ],
)
def test_memcached_arguments_that_would_weaken_safety_are_refused(argument: str) -> None:
    message = refusal_of("sa_sessions.pymemcache", {"url": "127.0.0.1:11211", argument: True})
    assert f"unsupported sa_sessions.pymemcache argument(s) ['{argument}']" in message
    assert "fixed for safety" in message
    assert "known arguments: connect_timeout, dead_timeout, failure_threshold" in message


def test_memcached_needs_a_url() -> None:
    with pytest.raises(SessionConfigError, match="needs 'url': one 'host:port' or a list"):
        make_region().configure("sa_sessions.pymemcache", arguments={})


def test_memcached_defaults_and_safe_client_settings() -> None:
    pool = pool_of(memcached_region("127.0.0.1:11211"), MemcachedPool)
    assert pool.max_ttl == WEEK
    node = pool.node_for("k")
    assert (node.breaker.failure_threshold, node.breaker.reset_after) == (2, 5.0)
    client = node.client()  # built without connecting
    assert (client.connect_timeout, client.timeout) == (0.25, 0.25)
    assert client.default_noreply is False
    assert isinstance(client.serde, BytesOnlySerde)
    assert client.sock is None


def test_memcached_settings_reach_every_node() -> None:
    context = ssl.create_default_context()
    region = memcached_region(
        ["127.0.0.1:11211", "127.0.0.1:11212"],
        connect_timeout=0.3,
        timeout=0.4,
        memcached_expire_time=3600,
        dead_timeout=12.0,
        failure_threshold=4,
        tls_context=context,
    )
    pool = pool_of(region, MemcachedPool)
    assert pool.max_ttl == 3600
    nodes = {pool.node_for(f"key-{n}").address: pool.node_for(f"key-{n}") for n in range(20)}
    assert sorted(nodes) == ["127.0.0.1:11211", "127.0.0.1:11212"]
    for node in nodes.values():
        client = node.client()
        assert (client.connect_timeout, client.timeout) == (0.3, 0.4)
        assert client.tls_context is context
        assert (node.breaker.failure_threshold, node.breaker.reset_after) == (4, 12.0)


# --------------------------------------------------------------------------- redis_region


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ([], "at least one Redis URL is required"),
        ("", "at least one Redis URL is required"),
        ("127.0.0.1:6379", "Redis URL 127.0.0.1:6379 must start with redis://, rediss:// or unix"),
        ("http://cache:6379", "must start with redis://"),
        ("REDIS://cache:6379", "must start with redis://"),
        ([b"redis://cache:6379"], "Redis URL b'redis://cache:6379' must start with"),
        (["redis://a:1/0", "redis://a:1/0"], "duplicate Redis URL in the list"),
        (None, "servers must be a string or a list of strings"),
    ],
)
def test_bad_redis_urls_are_refused_with_a_clear_message(url: Any, message: str) -> None:
    with pytest.raises(SessionConfigError, match=message):
        redis_region(url)


def test_a_refused_redis_url_never_shows_its_password() -> None:
    with pytest.raises(SessionConfigError) as caught:
        redis_region("http://user:s3cret-pw@cache:6379")
    assert "s3cret-pw" not in str(caught.value)
    assert "user:***@cache:6379" in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"socket_timeout": 0}, "socket_timeout must be a positive number of seconds, got 0"),
        ({"socket_timeout": "1"}, "socket_timeout must be a positive number of seconds"),
        ({"socket_connect_timeout": -1}, "socket_connect_timeout must be a positive number"),
        ({"dead_timeout": float("nan")}, "dead_timeout must be a positive number of seconds"),
        ({"failure_threshold": 0}, "failure_threshold must be an int >= 1, got 0"),
        ({"redis_expiration_time": 0}, "redis_expiration_time must be an int >= 1, got 0"),
        ({"redis_expiration_time": 1.5}, "redis_expiration_time must be an int >= 1"),
        ({"max_connections": 0}, "max_connections must be an int >= 1, got 0"),
        ({"max_connections": True}, "max_connections must be an int >= 1, got True"),
        ({"ssl_context": object()}, "ssl_context must be an ssl.SSLContext"),
    ],
)
def test_bad_redis_settings_are_refused_with_a_clear_message(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(SessionConfigError, match=message):
        redis_region("redis://127.0.0.1:6379/0", **kwargs)


@pytest.mark.parametrize("argument", ["retry_on_timeout", "decode_responses", "distributed_lock"])
def test_unknown_redis_arguments_are_refused(argument: str) -> None:
    message = refusal_of("sa_sessions.redis", {"url": "redis://127.0.0.1:1/0", argument: True})
    assert f"unsupported sa_sessions.redis argument(s) ['{argument}']" in message
    assert "known arguments: dead_timeout, failure_threshold, max_connections" in message


def test_redis_needs_a_url() -> None:
    with pytest.raises(SessionConfigError, match="needs 'url': one redis:// URL or a list"):
        make_region().configure("sa_sessions.redis", arguments={})


def test_redis_settings_reach_every_server() -> None:
    urls = ["redis://127.0.0.1:6379/0", "rediss://cache:6380/2", "unix:///tmp/redis.sock"]
    region = redis_region(
        urls, socket_timeout=0.4, socket_connect_timeout=0.3, max_connections=7, dead_timeout=9.0
    )
    pool = pool_of(region, RedisPool)
    assert pool.urls == urls
    assert pool.max_ttl == WEEK
    for node in pool.nodes():
        kwargs = node.client.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.4, 0.3)
        assert (kwargs["decode_responses"], kwargs["retry_on_timeout"]) == (False, False)
        assert node.client.connection_pool.max_connections == 7
        assert node.breaker.reset_after == 9.0


# --------------------------------------------------------------------------- memory_region


@pytest.mark.parametrize("bound", [0, -5, 2.5, True, "100"])
def test_bad_memory_bounds_are_refused(bound: Any) -> None:
    with pytest.raises(SessionConfigError, match="max_entries must be an int >= 1"):
        memory_region(max_entries=bound)


def test_unknown_memory_arguments_are_refused() -> None:
    with pytest.raises(SessionConfigError, match=r"unsupported sa_sessions.memory argument"):
        make_region().configure("sa_sessions.memory", arguments={"cache_dict": {}})


# --------------------------------------------------------------------------- configuration files


def ini(backend: str, **arguments: str) -> dict[str, str]:
    """What ``configure_from_config`` gets from an ini file section: strings only."""
    config = {"cache.sessions.backend": backend}
    config.update({f"cache.sessions.arguments.{name}": value for name, value in arguments.items()})
    return config


def from_config(config: Mapping[str, str]) -> CacheRegion:
    return make_region().configure_from_config(dict(config), "cache.sessions.")


@pytest.mark.parametrize(
    ("backend", "arguments", "servers", "max_ttl", "settings"),
    [
        pytest.param(
            "sa_sessions.pymemcache",
            {
                "url": "127.0.0.1:11211, 127.0.0.1:11212",
                "timeout": "0.5",
                "connect_timeout": "0.75",
                "dead_timeout": "2",
                "failure_threshold": "3",
                "memcached_expire_time": "3600",
            },
            ["127.0.0.1:11211", "127.0.0.1:11212"],
            3600,
            {"timeout": 0.5, "connect_timeout": 0.75, "failure_threshold": 3, "dead_timeout": 2.0},
            id="memcached",
        ),
        pytest.param(
            "sa_sessions.redis",
            {
                "url": "redis://127.0.0.1:6379/0, redis://127.0.0.1:6380/0",
                "socket_timeout": "0.5",
                "max_connections": "10",
                "failure_threshold": "4",
                "redis_expiration_time": "86400",
            },
            ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0"],
            86400,
            {"socket_timeout": 0.5, "max_connections": 10, "failure_threshold": 4},
            id="redis",
        ),
    ],
)
def test_pool_settings_from_an_ini_file(
    backend: str,
    arguments: dict[str, str],
    servers: list[str],
    max_ttl: int,
    settings: dict[str, object],
) -> None:
    pool = from_config(ini(backend, **arguments)).backend.pool
    assert (pool.servers if isinstance(pool, MemcachedPool) else pool.urls) == servers
    assert pool.max_ttl == max_ttl
    for node in node_settings(pool):  # every node
        assert {name: node[name] for name in settings} == settings


def test_memory_from_an_ini_file() -> None:
    region = from_config(ini("sa_sessions.memory", max_entries="2"))
    cache = session_cache_for(region)
    assert isinstance(cache, MemoryCache)
    for n in range(3):
        cache.set(f"k{n}", b"v", 60)
    assert len(cache) == 2


@pytest.mark.parametrize(
    ("backend", "arguments", "message"),
    [
        ("sa_sessions.pymemcache", {"url": "a:1", "timeout": "fast"}, "got 'fast'"),
        ("sa_sessions.pymemcache", {"url": "a:1", "timeout": "0"}, "got 0"),
        ("sa_sessions.pymemcache", {"url": "a:1", "failure_threshold": "2.5"}, "got 2.5"),
        ("sa_sessions.pymemcache", {"url": "a:1", "memcached_expire_time": "1e3"}, "got 1000.0"),
        ("sa_sessions.pymemcache", {"url": "a:1;b:2"}, "malformed memcached server"),
        ("sa_sessions.pymemcache", {"timeout": "0.5"}, "needs 'url'"),
        ("sa_sessions.redis", {"url": "cache:6379"}, "must start with redis://"),
        ("sa_sessions.redis", {"url": "redis://a:1", "max_connections": "none"}, "got 'none'"),
        ("sa_sessions.memory", {"max_entries": "many"}, "got 'many'"),
    ],
)
def test_bad_ini_values_are_refused_with_a_clear_message(
    backend: str, arguments: dict[str, str], message: str
) -> None:
    with pytest.raises(SessionConfigError, match=message):
        from_config(ini(backend, **arguments))


def _fill_many(cache: SessionCache, count: int) -> list[str]:
    ids = [hid(n) for n in range(count)]
    for n, hashed_id in enumerate(ids):
        assert cache.fill(hashed_id, n + 1, b"blob %d " % n + b"m" * 32, 1, 60)
    for n, hashed_id in enumerate(ids):
        found = cache.read(hashed_id)
        assert type(found) is CachedCopy and found.version == n + 1
    return ids


def _serves_plain_use(region: CacheRegion) -> None:
    """The region still serves plain use (of bytes) next to the sessions."""
    region.set("plain-key", b"plain bytes")
    assert region.get("plain-key") == b"plain bytes"
    region.delete("plain-key")
    assert region.get("plain-key") is NO_VALUE
    region.set_multi({"plain-1": b"one", "plain-2": b"two"})
    found = region.get_multi(["plain-1", "plain-2", "plain-3"])  # type: ignore[no-untyped-call]
    assert found == [b"one", b"two", NO_VALUE]
    region.delete_multi(["plain-1", "plain-2"])
    assert region.get("plain-1") is NO_VALUE


@pytest.mark.parametrize("kind", POOL_KINDS)
def test_an_ini_pool_works_end_to_end(kind: PoolKind, request: pytest.FixtureRequest) -> None:
    other = request.getfixturevalue(kind.factory_fixture)()
    servers = [request.getfixturevalue(kind.server_fixture), other]
    url = ", ".join(kind.name_of(server) for server in servers)
    region = from_config(ini(kind.region_backend, url=url, **{kind.timeout_options[0]: "0.5"}))
    cache = guard_on(session_cache_for(region))
    ids = _fill_many(cache, 20)
    held = [sum(kind.raw_get(server, cache.key(h)) is not None for h in ids) for server in servers]
    assert sum(held) == 20 and min(held) > 0  # on both servers, once each
    _serves_plain_use(region)
    region.backend.pool.close()
    other.stop()


def test_an_ini_memory_region_works_end_to_end() -> None:
    region = from_config(ini("sa_sessions.memory", max_entries="100"))
    _fill_many(guard_on(session_cache_for(region)), 20)
    _serves_plain_use(region)


# --------------------------------------------------------------------------- what the store accepts


def test_our_backends_hand_over_their_own_session_cache() -> None:
    for region in (
        memcached_region("127.0.0.1:1"),
        redis_region("redis://127.0.0.1:1/0"),
        memory_region(),
    ):
        assert session_cache_for(region) is region.backend.session_cache


def test_dogpile_memory_regions_are_adapted() -> None:
    region = make_region().configure("dogpile.cache.memory")
    cache = session_cache_for(region)
    assert isinstance(cache, MemoryCache)
    cache.set("k", b"v", 60)
    found = session_cache_for(region).get("k")
    assert found is not None and found[0] == b"v"


class CustomSessionBackend(CacheBackend):
    """A backend of someone else's with a session cache of its own."""

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        self.session_cache = MemoryCache()

    def get(self, key: Any) -> Any:
        return NO_VALUE

    def set(self, key: Any, value: Any) -> None:
        pass

    def delete(self, key: Any) -> None:
        pass


class NotQuiteASessionCache:
    """Has get and set, but not the whole interface."""

    def get(self, key: str) -> tuple[bytes, Token] | None:
        return None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        pass


register_backend(  # type: ignore[no-untyped-call]
    "tests.custom-session-backend", __name__, "CustomSessionBackend"
)


def test_a_backend_with_a_session_cache_of_its_own_is_accepted() -> None:
    region = make_region().configure("tests.custom-session-backend")
    assert session_cache_for(region) is region.backend.session_cache


def test_a_backend_with_half_an_interface_is_refused() -> None:
    region = make_region().configure("tests.custom-session-backend")
    region.backend.session_cache = NotQuiteASessionCache()
    with pytest.raises(SessionConfigError, match="cannot hold sessions safely"):
        session_cache_for(region)


@pytest.mark.parametrize(
    ("backend", "arguments"),
    [
        ("dogpile.cache.redis", {"url": "redis://127.0.0.1:1/0"}),
        ("dogpile.cache.pymemcache", {"url": ["127.0.0.1:1"]}),
        ("dogpile.cache.memory_pickle", {}),
        ("dogpile.cache.null", {}),
    ],
)
def test_backends_that_unpickle_or_store_nothing_are_refused(
    backend: str, arguments: dict[str, Any]
) -> None:
    region = make_region().configure(backend, arguments=arguments)
    with pytest.raises(SessionConfigError) as caught:
        session_cache_for(region)
    message = str(caught.value)
    assert f"the region's backend {type(region.backend).__module__}." in message
    assert "cannot hold sessions safely (it may unpickle what anyone with access" in message
    assert "pass sa_sessions.memcached_region(...), redis_region(...) or memory_region()" in message
    assert "'sa_sessions.pymemcache', 'sa_sessions.redis' or 'sa_sessions.memory'" in message


@pytest.mark.parametrize("region", [None, "sa_sessions.memory", object(), MemoryCache()])
def test_anything_but_a_region_is_refused(region: Any) -> None:
    with pytest.raises(SessionConfigError, match="region must be a dogpile CacheRegion, not"):
        session_cache_for(region)


def test_an_unconfigured_region_is_refused() -> None:
    with pytest.raises(SessionConfigError, match=r"not configured yet \(call configure\(\)\)"):
        session_cache_for(make_region())


def test_a_missing_client_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now fails
    monkeypatch.delitem(sys.modules, "sa_sessions.cache.redis")
    with pytest.raises(SessionConfigError) as caught:
        redis_region("redis://127.0.0.1:6379/0")
    assert str(caught.value) == (
        "the sa_sessions.redis region needs the 'redis' package: pip install 'sa_sessions[redis]'"
    )
    assert isinstance(caught.value.__cause__, ImportError)


# --------------------------------------------------------------------------- planted pickles


FRAMING = b'{"ct": 1e10, "v": 2}|'  # dogpile's metadata header for a serialized value


@pytest.mark.parametrize("kind", POOL_KINDS)
def test_a_pickle_planted_in_the_cache_never_runs_through_the_session_cache(
    kind: PoolKind, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue(kind.server_fixture)
    region = from_config(ini(kind.region_backend, url=kind.name_of(server)))
    cache = guard_on(session_cache_for(region))
    marker = tmp_path / "gadget-ran"
    for n, data in enumerate((gadget(marker), FRAMING + gadget(marker))):
        kind.plant(server, cache.key(hid(2 * n)), data)  # as pickled (memcached: flags 1)
        kind.raw_set(server, cache.key(hid(2 * n + 1)), data)  # as bytes (memcached: flags 0)
    for n in range(4):
        assert type(cache.read(hid(n))) is Absent
    assert not marker.exists()
    region.backend.pool.close()


@pytest.mark.memcached
def test_control_dogpiles_own_memcached_backend_does_run_the_gadget(
    memcached: MemcachedProcess, tmp_path: Path
) -> None:
    """Proves the gadget is live: dogpile's stock backend unpickles a flags-1 item."""
    stock = make_region(serializer=lambda v: v, deserializer=lambda b: b).configure(
        "dogpile.cache.pymemcache", arguments={"url": [memcached.address]}
    )
    marker = tmp_path / "gadget-ran"
    MEMCACHED.plant(memcached, "planted", gadget(marker))
    try:
        stock.get("planted")
    finally:
        stock.backend.client.close()
    assert marker.is_dir()


#: The region factory of each kind of pool.
FACTORIES: dict[str, Callable[..., CacheRegion]] = {
    "memcached": memcached_region,
    "redis": redis_region,
}


@pytest.mark.parametrize("kind", [pytest.param(None, id="memory"), *POOL_KINDS])
def test_a_pickle_planted_in_the_cache_never_runs_through_the_regions_own_get(
    kind: PoolKind | None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The factories promise regions "holding only bytes, safely": plain use included."""
    marker = tmp_path / "gadget-ran"
    planted = FRAMING + gadget(marker)
    if kind is None:
        region = memory_region()
        session_cache_for(region).set("app:key", planted, 60)
    else:  # written behind the region's back
        server = request.getfixturevalue(kind.server_fixture)
        region = FACTORIES[kind.name](kind.name_of(server))
        kind.raw_set(server, "app:key", planted)
    with contextlib.suppress(Exception):  # refusing the value loudly is fine; running it is not
        region.get("app:key")
    assert not marker.exists(), "region.get() unpickled what was planted in the cache"
