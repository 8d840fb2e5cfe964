"""memcached behind the session cache interface, on pymemcache's plain ``Client``.

A pool of servers is a fixed :class:`~sa_sessions.cache.nodes.NodeRing`: a key
lives on one node only, and a failed node's keys are misses until it answers
again.  pymemcache's ``HashClient`` is not used because it re-hashes a failed
node's keys to the survivors, and each thread keeps its own idea of which
nodes failed: two copies of a key, and readers that disagree about which one
is current.

Each node has one pymemcache ``Client`` per thread (created on first use,
dropped in a forked child) and one :class:`~sa_sessions.cache.breaker.CircuitBreaker`
shared by the process, so a hung node costs a few timeouts, not one per request.
Items are raw bytes with flags 0; an item written with other flags (e.g. a
pickle by another client) reads as a value nothing can authenticate, so it is
never unpickled.  Replies are always awaited: a write reported as done was done.

Checked against pymemcache 4.0 (only its public ``Client`` API is used).

Also registers the dogpile backend ``sa_sessions.pymemcache`` (see
:class:`MemcachedBackend`), so a region configured by name or from a
configuration file gets the same pool.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import weakref
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError
from pymemcache.exceptions import MemcacheServerError
from pymemcache.exceptions import MemcacheUnexpectedCloseError

from sa_sessions.exceptions import SessionConfigError

from .backend import CacheUnavailable
from .backend import Token
from .backend import checked_max_ttl
from .backend import whole_seconds
from .breaker import CircuitBreaker
from .breaker import positive_seconds
from .nodes import ServerPool
from .plain import SessionCacheRegionBackend
from .servers import check_servers
from .servers import split_list

log = logging.getLogger("sa_sessions.cache")

#: dogpile backend name of :class:`MemcachedBackend`.
BACKEND_NAME = "sa_sessions.pymemcache"

#: memcached reads a larger relative expiry as an absolute Unix time.
MAX_EXPIRE = 30 * 24 * 3600

_FLAG_BYTES = 0

#: How a connection that the server closed while it sat idle (a restart, an idle
#: timeout) shows on its next command.  The command is sent once more on a new
#: connection instead of counting against the node: otherwise, after a restart,
#: each thread's first call would fail and re-open the node's breaker, keeping a
#: healthy node "dead" for a ``dead_timeout`` per thread.  Every command this pool
#: sends is safe to repeat (a read, an ``add`` or ``cas`` that a repeat can only
#: refuse, a ``set`` or ``delete`` of the same value).
_CLOSED_WHILE_IDLE = (
    MemcacheUnexpectedCloseError,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


class BytesOnlySerde:
    """pymemcache serde that stores bytes as they are and never unpickles.

    Flags are chosen by whoever wrote the item, so they are not trusted: an item
    with flags other than 0 comes back as empty bytes, which no reader can
    authenticate (it is then overwritten by the next fill).
    """

    def serialize(self, key: Any, value: Any) -> tuple[bytes, int]:
        if type(value) is not bytes:
            raise TypeError(f"the session cache stores bytes only, not {type(value).__name__}")
        return value, _FLAG_BYTES

    def deserialize(self, key: Any, value: bytes, flags: int) -> bytes:
        if flags != _FLAG_BYTES:
            log.warning(
                "ignored a memcached item with flags %d (not written by sa_sessions)", flags
            )
            return b""
        return value


_POOLS: weakref.WeakSet[MemcachedPool] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for pool in list(_POOLS):
        pool.reset_connections()


os.register_at_fork(after_in_child=_forget_connections_after_fork)


class _Node:
    """One memcached server: per-thread clients and a breaker shared by the process."""

    __slots__ = ("_local", "_options", "address", "breaker", "server")

    def __init__(self, address: str, options: dict[str, Any], breaker: CircuitBreaker) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.server = (host.strip("[]"), int(port))
        self._options = options
        self._local = threading.local()
        self.breaker = breaker

    @property
    def label(self) -> str:
        return self.address

    def client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = Client(self.server, **self._options)
            self._local.client = client
        return client

    def reset(self) -> None:
        self._local = threading.local()

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()


class MemcachedPool(ServerPool[_Node]):
    """A fixed pool of memcached servers implementing the session cache interface.

    ``failure_threshold`` consecutive failures of a node mark it dead for
    ``dead_timeout`` seconds (its calls fail at once), then one trial call
    decides whether it is back.  ``max_ttl`` caps every expiry.
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        connect_timeout: float = 0.25,
        timeout: float = 0.25,
        dead_timeout: float = 5.0,
        failure_threshold: int = 2,
        max_ttl: int = 7 * 24 * 3600,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "serde": BytesOnlySerde(),
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "no_delay": True,
            "default_noreply": False,
            "tls_context": tls_context,
        }
        self.servers = list(servers)
        self.max_ttl = checked_max_ttl(max_ttl, MAX_EXPIRE)
        super().__init__(
            [
                (address, _Node(address, options, CircuitBreaker(failure_threshold, dead_timeout)))
                for address in self.servers
            ]
        )
        _POOLS.add(self)

    name = "memcached"

    def __repr__(self) -> str:
        return f"MemcachedPool({self.servers!r})"

    def answered(self, exc: Exception) -> bool:
        """pymemcache reports a refused command, and a connection closed mid-reply too,
        as a server error: only the former proves the server is alive."""
        return isinstance(exc, (MemcacheClientError, MemcacheServerError)) and not isinstance(
            exc, MemcacheUnexpectedCloseError
        )

    @staticmethod
    def _send(node: _Node, operation: str, *args: Any, **kwargs: Any) -> Any:
        """``operation`` on this thread's client; once more on a new connection when the
        old one turns out closed (see :data:`_CLOSED_WHILE_IDLE`)."""
        try:
            return getattr(node.client(), operation)(*args, **kwargs)
        except _CLOSED_WHILE_IDLE:
            node.close()  # the client reconnects on its next command
            return getattr(node.client(), operation)(*args, **kwargs)

    def _call(self, key: str, operation: str, *args: Any, **kwargs: Any) -> Any:
        node = self.node_for(key)
        return self.call(node, operation, self._send, node, operation, key, *args, **kwargs)

    def get(self, key: str) -> tuple[bytes, Token] | None:
        value, cas = self._call(key, "gets")
        if value is None:
            return None
        return value, cas

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        expire = whole_seconds(ttl, self.max_ttl)
        return bool(self._call(key, "add", value, expire=expire, noreply=False))

    def cas(self, key: str, value: bytes, token: Token, ttl: float) -> bool:
        expire = whole_seconds(ttl, self.max_ttl)
        return bool(self._call(key, "cas", value, token, expire=expire, noreply=False))

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value``; tried even on a node marked dead (see the interface)."""
        expire = whole_seconds(ttl, self.max_ttl)
        if not self._call(key, "set", value, expire=expire, noreply=False, force=True):
            raise CacheUnavailable("memcached did not store the value")

    def set_many(self, values: Mapping[str, bytes], ttl: float) -> None:
        """One pipelined ``set`` per node; every node is tried (even one marked dead),
        and the first failure is raised."""
        expire = whole_seconds(ttl, self.max_ttl)
        failure: CacheUnavailable | None = None
        for node, keys in self.group(values).items():
            batch = {key: values[key] for key in keys}
            try:
                failed = self.call(
                    node, "set_many", self._send, node, "set_many", batch, expire=expire,
                    noreply=False, force=True,
                )  # fmt: skip
            except CacheUnavailable as exc:
                failure = failure or exc
                continue
            if failed:
                failure = failure or CacheUnavailable("memcached did not store every value")
        if failure is not None:
            raise failure

    def delete(self, key: str) -> None:
        self._call(key, "delete", noreply=False)

    def reset_connections(self) -> None:
        """Forget every connection (a forked child must not share its parent's sockets)."""
        for node in self.nodes():
            node.reset()

    def close(self) -> None:
        """Close this thread's connections."""
        for node in self.nodes():
            node.close()


def _pool_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validate dogpile-style backend arguments into :class:`MemcachedPool` keywords."""
    known = {
        "url",
        "connect_timeout",
        "timeout",
        "dead_timeout",
        "failure_threshold",
        "memcached_expire_time",
        "tls_context",
    }
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise SessionConfigError(
            f"unsupported {BACKEND_NAME} argument(s) {unknown}: the serde, noreply and "
            "re-hashing behaviour are fixed for safety; known arguments: "
            + ", ".join(sorted(known))
        )
    if "url" not in arguments:
        raise SessionConfigError(f"{BACKEND_NAME} needs 'url': one 'host:port' or a list of them")
    expire = arguments.get("memcached_expire_time", 7 * 24 * 3600)
    if isinstance(expire, bool) or not isinstance(expire, int) or not 1 <= expire <= MAX_EXPIRE:
        raise SessionConfigError(
            f"memcached_expire_time must be an int of 1..{MAX_EXPIRE} seconds "
            f"(memcached reads larger values as a Unix timestamp), got {expire!r}"
        )
    threshold = arguments.get("failure_threshold", 2)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise SessionConfigError(f"failure_threshold must be an int >= 1, got {threshold!r}")
    tls_context = arguments.get("tls_context")
    if tls_context is not None and not isinstance(tls_context, ssl.SSLContext):
        raise SessionConfigError("tls_context must be an ssl.SSLContext")
    return {
        "servers": check_servers(split_list(arguments["url"])),
        "connect_timeout": positive_seconds(
            "connect_timeout", arguments.get("connect_timeout", 0.25)
        ),
        "timeout": positive_seconds("timeout", arguments.get("timeout", 0.25)),
        "dead_timeout": positive_seconds("dead_timeout", arguments.get("dead_timeout", 5.0)),
        "failure_threshold": threshold,
        "max_ttl": expire,
        "tls_context": tls_context,
    }


class MemcachedBackend(SessionCacheRegionBackend):
    """dogpile backend ``sa_sessions.pymemcache``: a :class:`MemcachedPool` as a region.

    Arguments (all but ``url`` optional): ``url`` (``"host:port"``, a list, or a
    comma-separated string as in a configuration file), ``connect_timeout`` and
    ``timeout`` (0.25 s), ``dead_timeout`` (5 s), ``failure_threshold`` (2),
    ``memcached_expire_time`` (the longest TTL, 7 days), ``tls_context``.
    The session store talks to :attr:`pool` directly; the dogpile methods below
    let the region be used for plain bytes too.
    """

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        #: The :class:`MemcachedPool` built from the arguments: the session cache
        #: interface the store talks to, and where the region's own calls go.
        self.pool = self.session_cache = MemcachedPool(**_pool_arguments(arguments))
