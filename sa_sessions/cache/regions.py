"""dogpile regions for the session cache, and what the store accepts as one.

The region is the user's configuration, as dogpile users know it: built by
:func:`memcached_region`, :func:`redis_region` or :func:`memory_region`, or by
``make_region().configure("sa_sessions.pymemcache", arguments={"url": ...})``,
or from a configuration file with ``configure_from_config`` (the backend names
are registered as dogpile entry points).  The store never calls the region's
get/set (whose serializer may be pickle); it asks :func:`session_cache_for` for
the backend's bytes-only session cache interface, and refuses regions that do
not have one.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from dogpile.cache import make_region
from dogpile.cache import register_backend
from dogpile.cache.backends.memory import MemoryBackend as DogpileMemoryBackend
from dogpile.cache.region import CacheRegion

from sa_sessions.exceptions import SessionConfigError

from .backend import SessionCacheBackend
from .memory import BACKEND_NAME as MEMORY_BACKEND
from .memory import MemoryCache

MEMCACHED_BACKEND = "sa_sessions.pymemcache"
REDIS_BACKEND = "sa_sessions.redis"

register_backend(MEMCACHED_BACKEND, "sa_sessions.cache.memcached", "MemcachedBackend")  # type: ignore[no-untyped-call]
register_backend(REDIS_BACKEND, "sa_sessions.cache.redis", "RedisBackend")  # type: ignore[no-untyped-call]
register_backend(MEMORY_BACKEND, "sa_sessions.cache.memory", "MemoryBackend")  # type: ignore[no-untyped-call]

_EXTRAS = {MEMCACHED_BACKEND: ("pymemcache", "memcached"), REDIS_BACKEND: ("redis", "redis")}


def _configured(name: str | None, backend: str, arguments: dict[str, Any]) -> CacheRegion:
    region = make_region(name=name)
    try:
        region.configure(backend, arguments=arguments)
    except ImportError as exc:
        package, extra = _EXTRAS.get(backend, ("?", "?"))
        raise SessionConfigError(
            f"the {backend} region needs the {package!r} package: "
            f"pip install 'sa_sessions[{extra}]'"
        ) from exc
    return region


def memcached_region(
    servers: str | Sequence[str],
    *,
    connect_timeout: float = 0.25,
    timeout: float = 0.25,
    memcached_expire_time: int = 7 * 24 * 3600,
    dead_timeout: float = 5.0,
    failure_threshold: int = 2,
    tls_context: ssl.SSLContext | None = None,
    name: str | None = None,
) -> CacheRegion:
    """A dogpile region on a pool of memcached servers, holding only bytes, safely.

    Each key lives on one server (rendezvous hashing over the fixed list; a failed
    server's keys are misses, never moved).  ``connect_timeout`` and ``timeout``
    bound every call; ``failure_threshold`` consecutive failures mark a server
    dead for ``dead_timeout`` seconds.  ``memcached_expire_time`` caps the TTL of
    every entry (each entry's own TTL follows its session's expiry).  Raises
    :class:`~sa_sessions.SessionConfigError` for any invalid setting.
    """
    return _configured(
        name,
        MEMCACHED_BACKEND,
        {
            "url": servers,
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "memcached_expire_time": memcached_expire_time,
            "dead_timeout": dead_timeout,
            "failure_threshold": failure_threshold,
            "tls_context": tls_context,
        },
    )


def redis_region(
    url: str | Sequence[str],
    *,
    socket_timeout: float = 0.25,
    socket_connect_timeout: float = 0.25,
    redis_expiration_time: int = 7 * 24 * 3600,
    dead_timeout: float = 5.0,
    failure_threshold: int = 2,
    max_connections: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    name: str | None = None,
) -> CacheRegion:
    """A dogpile region on Redis (one server, or several as a fixed pool), holding only bytes.

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL (credentials and
    database number as redis-py reads them) or a list of them.  Timeouts,
    ``dead_timeout`` and ``failure_threshold`` work as for :func:`memcached_region`;
    ``redis_expiration_time`` caps every entry's TTL.  Needs
    ``pip install 'sa_sessions[redis]'``.
    """
    return _configured(
        name,
        REDIS_BACKEND,
        {
            "url": url,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "redis_expiration_time": redis_expiration_time,
            "dead_timeout": dead_timeout,
            "failure_threshold": failure_threshold,
            "max_connections": max_connections,
            "ssl_context": ssl_context,
        },
    )


def memory_region(name: str | None = None, *, max_entries: int = 10_000) -> CacheRegion:
    """An in-process region: the embedded default for one process (demo, tests).

    Several worker processes each get their own copy; see
    :mod:`sa_sessions.cache.memory` for what that means.
    """
    return _configured(name, MEMORY_BACKEND, {"max_entries": max_entries})


def session_cache_for(region: object) -> SessionCacheBackend:
    """The bytes-only session cache interface behind ``region``, or SessionConfigError.

    Accepted: regions on this library's backends (``sa_sessions.pymemcache``,
    ``sa_sessions.redis``, ``sa_sessions.memory``), on dogpile's own
    ``dogpile.cache.memory`` (which stores objects as they are), and on any backend
    with a ``session_cache`` attribute implementing
    :class:`~sa_sessions.cache.backend.SessionCacheBackend`.  Everything else is
    refused: dogpile's memcached and Redis backends unpickle what they read.
    """
    if not isinstance(region, CacheRegion):
        raise SessionConfigError(
            f"region must be a dogpile CacheRegion, not {type(region).__name__}"
        )
    if not region.is_configured:
        raise SessionConfigError("the cache region is not configured yet (call configure())")
    backend = region.backend
    cache = getattr(backend, "session_cache", None)
    if isinstance(cache, SessionCacheBackend):
        return cache
    if type(backend) is DogpileMemoryBackend:
        return MemoryCache.over_dogpile_backend(backend)
    name = f"{type(backend).__module__}.{type(backend).__qualname__}"
    raise SessionConfigError(
        f"the region's backend {name} cannot hold sessions safely (it may unpickle what "
        "anyone with access to the cache wrote there): pass sa_sessions.memcached_region(...), "
        "redis_region(...) or memory_region(), or configure the region with the backend "
        f"{MEMCACHED_BACKEND!r}, {REDIS_BACKEND!r} or {MEMORY_BACKEND!r}"
    )
