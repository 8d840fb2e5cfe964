"""Redis behind the session cache interface, on redis-py.

One server, or several as a fixed :class:`~sa_sessions.cache.nodes.NodeRing`
(each key lives on one server; a failed server's keys are misses until it
answers again).  Values are raw bytes: redis-py hands back what was stored and
nothing here unpickles.  Expiry is Redis' own (``PX``), so an entry never
outlives the session it copies.

Compare-and-swap is a short Lua script run on the server, one round trip: the
token of a read is the value's length and first 64 bytes, which for the
session cache's entries (whose header carries a MAC over the whole entry)
identifies the value exactly.

Checked against redis-py 5 to 8 (only its public client API is used).  Also
registers the dogpile backend ``sa_sessions.redis`` (see :class:`RedisBackend`).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import redis

from sa_sessions._redact import redact_url
from sa_sessions.exceptions import SessionConfigError

from .backend import CacheUnavailable
from .backend import Token
from .backend import checked_max_ttl
from .breaker import CircuitBreaker
from .breaker import positive_seconds
from .nodes import ServerPool
from .plain import SessionCacheRegionBackend
from .servers import split_list

#: dogpile backend name of :class:`RedisBackend`.
BACKEND_NAME = "sa_sessions.redis"

_TOKEN_PREFIX = 64
_URL_SCHEMES = ("redis://", "rediss://", "unix://")

# KEYS[1]; ARGV: expected length, expected first bytes, new value, ttl in ms.
_CAS_SCRIPT = f"""
if redis.call('STRLEN', KEYS[1]) == tonumber(ARGV[1])
   and redis.call('GETRANGE', KEYS[1], 0, {_TOKEN_PREFIX - 1}) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return 1
end
return 0
"""


def _milliseconds(ttl: float, cap: int) -> int:
    """``ttl`` in whole milliseconds, between 1 and ``cap`` seconds (NaN: 1; infinity: cap)."""
    if not ttl > 0:
        return 1
    if ttl >= cap:
        return cap * 1000
    return max(1, int(ttl * 1000) + 1)


class _Node:
    """One Redis server: a thread-safe redis-py client and a breaker."""

    __slots__ = ("breaker", "cas", "client", "url")

    def __init__(self, url: str, client: redis.Redis, breaker: CircuitBreaker) -> None:
        self.url = url
        self.client = client
        self.breaker = breaker
        self.cas = client.register_script(_CAS_SCRIPT)

    @property
    def label(self) -> str:
        return redact_url(self.url)


class RedisPool(ServerPool[_Node]):
    """One or more Redis servers implementing the session cache interface.

    ``failure_threshold`` consecutive failures of a server mark it dead for
    ``dead_timeout`` seconds, then one trial call decides whether it is back.
    ``max_ttl`` (seconds) caps every expiry.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        socket_timeout: float = 0.25,
        socket_connect_timeout: float = 0.25,
        dead_timeout: float = 5.0,
        failure_threshold: int = 2,
        max_ttl: int = 7 * 24 * 3600,
        max_connections: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.urls = list(urls)
        self.max_ttl = checked_max_ttl(max_ttl)
        nodes = []
        for url in self.urls:
            options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_connect_timeout,
                "max_connections": max_connections,
                "decode_responses": False,
                "retry_on_timeout": False,
            }
            if ssl_context is not None and url.startswith("rediss://"):
                options["ssl_context"] = ssl_context  # pragma: no cover (needs a TLS server)
            client = redis.Redis.from_url(url, **options)
            nodes.append((url, _Node(url, client, CircuitBreaker(failure_threshold, dead_timeout))))
        super().__init__(nodes)

    name = "redis"

    def __repr__(self) -> str:
        return f"RedisPool({[redact_url(url) for url in self.urls]!r})"

    def answered(self, exc: Exception) -> bool:
        """A reply of error (a key of another type, say): the server is alive."""
        return isinstance(exc, redis.ResponseError)

    def get(self, key: str) -> tuple[bytes, Token] | None:
        node = self.node_for(key)
        value = self.call(node, "get", node.client.get, key)
        if value is None:
            return None
        if type(value) is not bytes:
            raise CacheUnavailable("redis returned something other than bytes")
        return value, (len(value), value[:_TOKEN_PREFIX])

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        node = self.node_for(key)
        px = _milliseconds(ttl, self.max_ttl)
        return bool(self.call(node, "add", node.client.set, key, value, px=px, nx=True))

    def cas(self, key: str, value: bytes, token: Token, ttl: float) -> bool:
        if not (isinstance(token, tuple) and len(token) == 2):
            raise TypeError("not a token of this backend")
        length, prefix = token
        node = self.node_for(key)
        args = [length, prefix, value, _milliseconds(ttl, self.max_ttl)]
        return bool(self.call(node, "cas", node.cas, keys=[key], args=args))

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value``; tried even on a server marked dead (see the interface)."""
        node = self.node_for(key)
        px = _milliseconds(ttl, self.max_ttl)
        self.call(node, "set", node.client.set, key, value, px=px, force=True)

    def set_many(self, values: Mapping[str, bytes], ttl: float) -> None:
        """One pipeline per server; every server is tried (even one marked dead), and the
        first failure is raised."""
        px = _milliseconds(ttl, self.max_ttl)
        failure: CacheUnavailable | None = None
        for node, keys in self.group(values).items():
            pipe = node.client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, values[key], px=px)
            try:
                self.call(node, "set_many", pipe.execute, force=True)
            except CacheUnavailable as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def delete(self, key: str) -> None:
        node = self.node_for(key)
        self.call(node, "delete", node.client.delete, key)

    def close(self) -> None:
        """Close every connection of every server."""
        for node in self.nodes():
            node.client.close()


def check_urls(value: object) -> list[str]:
    """Validate one Redis URL, a list, or a comma-separated string of them."""
    urls = split_list(value)
    if not urls:
        raise SessionConfigError("at least one Redis URL is required")
    for url in urls:
        if not isinstance(url, str) or not url.startswith(_URL_SCHEMES):
            shown = redact_url(url) if isinstance(url, str) else repr(url)
            raise SessionConfigError(
                f"Redis URL {shown} must start with redis://, rediss:// or unix://"
            )
    checked = [str(url) for url in urls]
    if len(set(checked)) != len(checked):
        raise SessionConfigError("duplicate Redis URL in the list")
    return checked


def _pool_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    known = {
        "url",
        "socket_timeout",
        "socket_connect_timeout",
        "dead_timeout",
        "failure_threshold",
        "redis_expiration_time",
        "max_connections",
        "ssl_context",
    }
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise SessionConfigError(
            f"unsupported {BACKEND_NAME} argument(s) {unknown}; known arguments: "
            + ", ".join(sorted(known))
        )
    if "url" not in arguments:
        raise SessionConfigError(f"{BACKEND_NAME} needs 'url': one redis:// URL or a list of them")
    expire = arguments.get("redis_expiration_time", 7 * 24 * 3600)
    if isinstance(expire, bool) or not isinstance(expire, int) or expire < 1:
        raise SessionConfigError(f"redis_expiration_time must be an int >= 1, got {expire!r}")
    threshold = arguments.get("failure_threshold", 2)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise SessionConfigError(f"failure_threshold must be an int >= 1, got {threshold!r}")
    connections = arguments.get("max_connections")
    if connections is not None and (
        isinstance(connections, bool) or not isinstance(connections, int) or connections < 1
    ):
        raise SessionConfigError(f"max_connections must be an int >= 1, got {connections!r}")
    ssl_context = arguments.get("ssl_context")
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise SessionConfigError("ssl_context must be an ssl.SSLContext")
    return {
        "urls": check_urls(arguments["url"]),
        "socket_timeout": positive_seconds("socket_timeout", arguments.get("socket_timeout", 0.25)),
        "socket_connect_timeout": positive_seconds(
            "socket_connect_timeout", arguments.get("socket_connect_timeout", 0.25)
        ),
        "dead_timeout": positive_seconds("dead_timeout", arguments.get("dead_timeout", 5.0)),
        "failure_threshold": threshold,
        "max_ttl": expire,
        "max_connections": connections,
        "ssl_context": ssl_context,
    }


class RedisBackend(SessionCacheRegionBackend):
    """dogpile backend ``sa_sessions.redis``: a :class:`RedisPool` as a region.

    Arguments (all but ``url`` optional): ``url`` (one ``redis://`` URL, a list,
    or a comma-separated string), ``socket_timeout`` and ``socket_connect_timeout``
    (0.25 s), ``dead_timeout`` (5 s), ``failure_threshold`` (2),
    ``redis_expiration_time`` (the longest TTL, 7 days), ``max_connections``,
    ``ssl_context``.  The session store talks to :attr:`pool` directly.
    """

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        #: The :class:`RedisPool` built from the arguments: the session cache interface
        #: the store talks to, and where the region's own calls go.
        self.pool = self.session_cache = RedisPool(**_pool_arguments(arguments))
