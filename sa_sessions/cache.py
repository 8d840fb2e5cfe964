"""dogpile.cache regions for the session cache, with the memcached traps closed.

The cache only ever holds sa_sessions' sealed blobs (bytes).  Everything here exists
because the stock ``dogpile.cache.pymemcache`` setup is unsafe for that job
(DEPENDENCIES.md §2-3, SECURITY.md R45-R52):

* pymemcache's default serde unpickles any item whose flags say "pickle", so anyone
  who can write to memcached gets code execution: :class:`BytesOnlySerde` never
  unpickles (R48).
* dogpile passes no socket timeouts, so a hung node blocks a request forever: the
  backend below adds ``connect_timeout``/``timeout`` (R49).
* without ``memcached_expire_time`` entries never expire; the server-side TTL is
  mandatory here (R51), and replies are always on so failed writes surface (R52).

The ``HashClient`` picks nodes with :class:`RendezvousHasher` rather than pymemcache's
pure-Python murmur3 ring, which cost ~11 µs per call even with a single server.

This is the only module that imports pymemcache, and only when a memcached region is
actually built.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from dogpile.cache import make_region
from dogpile.cache import register_backend
from dogpile.cache.backends.memcached import PyMemcacheBackend
from dogpile.cache.region import CacheRegion

from sa_sessions.exceptions import SessionConfigError

__all__ = [
    "BACKEND_NAME",
    "MAX_MEMCACHED_EXPIRE",
    "BytesOnlySerde",
    "CircuitBreaker",
    "RendezvousHasher",
    "SafePyMemcacheBackend",
    "cache_key",
    "cache_key_function",
    "memcached_region",
    "memory_region",
]

log = logging.getLogger("sa_sessions.cache")

#: dogpile backend name of :class:`SafePyMemcacheBackend`.
BACKEND_NAME = "sa_sessions.pymemcache"

#: memcached reads a larger relative expiry as an absolute Unix time (protocol.txt).
MAX_MEMCACHED_EXPIRE = 30 * 24 * 3600

#: Longest memcached key (protocol.txt).
MAX_KEY_BYTES = 250

#: Length of a hashed session id (SHA-256 hex).
_HASHED_ID_LENGTH = 64

_FLAG_BYTES = 0  # pymemcache.serde.FLAG_BYTES, spelled out to avoid importing pymemcache
# A precompiled fullmatch measured ~0.2 µs, faster than str.strip/len checks (~0.4 µs).
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BAD_HASHED_ID = "hashed_id must be a 64-character lowercase sha256 hex digest"
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")

# Backend arguments sa_sessions sets itself, with the parameter to use instead.
_OWNED_ARGUMENTS = {
    "url": "servers",
    "serde": "nothing (the serde is always BytesOnlySerde)",
    "memcached_expire_time": "memcached_expire_time",
    "hashclient_dead_timeout": "dead_timeout",
    "hashclient_retry_attempts": "retry_attempts",
    "hashclient_retry_timeout": "retry_timeout",
    "tls_context": "tls_context",
    "connect_timeout": "connect_timeout",
    "timeout": "timeout",
}
# dogpile pymemcache arguments that may be passed through unchanged.  Anything else
# is refused: dogpile silently ignores unknown names (e.g. "dead_timeout",
# "ignore_exc"), which would hide a misconfiguration.  The RetryingClient options are
# left out because dogpile's "retry_attempts" name is taken by the HashClient setting.
_PASSTHROUGH_ARGUMENTS = frozenset(
    {"default_noreply", "socket_keepalive", "distributed_lock", "lock_timeout"}
)


class BytesOnlySerde:
    """pymemcache serde that stores bytes as-is and never unpickles.

    Flags are chosen by whoever *wrote* the item, so a reader must not trust them:
    anything not written with flags 0 is treated as a miss (``None``), which dogpile
    turns into ``NO_VALUE`` and the store into a database read.  Raising instead
    would escape ``region.get`` (dogpile only wraps the region deserializer).
    """

    def serialize(self, key: Any, value: Any) -> tuple[bytes, int]:
        """Return ``(value, 0)``; refuse anything but bytes rather than pickle it."""
        if type(value) is not bytes:
            raise TypeError(f"sa_sessions cache stores bytes only, not {type(value).__name__}")
        return value, _FLAG_BYTES

    def deserialize(self, key: Any, value: bytes, flags: int) -> bytes | None:
        """Return the bytes of a flags-0 item; any other flags value is a miss."""
        if flags != _FLAG_BYTES:
            log.warning(
                "ignored a memcached item with flags %d (not written by sa_sessions)", flags
            )
            return None
        return value


def _bytes_only(value: Any) -> bytes:
    """Region serializer: the payload is already sealed bytes, store it unchanged."""
    if type(value) is not bytes:
        raise TypeError(f"sa_sessions cache stores bytes only, not {type(value).__name__}")
    return value


def _identity(data: bytes) -> bytes:
    """Region deserializer: hand the stored bytes back; the blob codec checks them."""
    return data


def _positive_number(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise SessionConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_expire_time(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SessionConfigError(f"memcached_expire_time must be an int, got {value!r}")
    if not 1 <= value <= MAX_MEMCACHED_EXPIRE:
        raise SessionConfigError(
            f"memcached_expire_time must be 1..{MAX_MEMCACHED_EXPIRE} seconds "
            f"(memcached reads larger values as a Unix timestamp), got {value}"
        )
    return value


def _check_server(spec: object) -> str:
    """Validate one "host:port" (or "[v6]:port") spec; a port is always required."""
    if not isinstance(spec, str):
        raise SessionConfigError(f"memcached server must be a 'host:port' string, got {spec!r}")
    host, sep, port_text = spec.rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit():
        raise SessionConfigError(f"malformed memcached server {spec!r}: expected 'host:port'")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise SessionConfigError(f"malformed memcached server {spec!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SessionConfigError(f"malformed memcached server {spec!r}") from None
    elif not host.isascii() or _HOSTNAME.fullmatch(host) is None:
        raise SessionConfigError(f"malformed memcached server {spec!r}: bad host")
    return spec


def _check_servers(servers: object) -> list[str]:
    if isinstance(servers, str):
        servers = [servers]
    if not isinstance(servers, Sequence) or isinstance(servers, (bytes, bytearray)):
        raise SessionConfigError("servers must be a 'host:port' string or a list of them")
    checked = [_check_server(spec) for spec in servers]
    if not checked:
        raise SessionConfigError("at least one memcached server is required")
    if len(set(checked)) != len(checked):
        raise SessionConfigError("duplicate memcached server in the list")
    return checked


def _check_retry_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SessionConfigError(f"retry_attempts must be an int >= 0, got {value!r}")
    return value


class RendezvousHasher:
    """Node choice for pymemcache's ``HashClient``: rendezvous hashing at C speed.

    Same interface and algorithm (highest random weight) as pymemcache's
    ``RendezvousHash``, whose pure-Python murmur3 costs ~11 µs per node on every
    call (measured: 11 µs for one server, 32 µs for three; this class: 0.06 µs and
    0.85 µs).  A pool of one node is returned without hashing.  Otherwise each node
    scores a key with the 8-byte BLAKE2b digest of the UTF-8 ``node + "\\0" + key``
    and the highest score (then the greater node name) wins, so removing a node
    moves only its own keys.

    BLAKE2b is standard and unsalted, unlike Python's ``hash()``: every process,
    host and Python version maps a key to the same node, which the cache needs (a
    process writing a session to another node than the one its peers read and
    delete would serve stale copies).

    The mapping differs from pymemcache's default: with several servers, keys move
    once when switching, so an upgrade re-warms the cache, and processes of both
    kinds must not share a pool (change the key prefix, or flush, when switching).
    Each ``HashClient`` (one per thread) owns its own instance.
    """

    def __init__(self) -> None:
        # (BLAKE2b state already fed "node NUL", node); replaced whole, never mutated.
        self._ring: tuple[tuple[Any, str], ...] = ()

    @property
    def nodes(self) -> list[str]:
        """The nodes in the pool, in the order they were added."""
        return [node for _, node in self._ring]

    def add_node(self, node: str) -> None:
        """Add a node (HashClient: a server joins or rejoins); a known node is ignored."""
        if node not in self.nodes:
            seeded = hashlib.blake2b(str(node).encode("utf-8") + b"\0", digest_size=8)
            self._ring = (*self._ring, (seeded, node))

    def remove_node(self, node: str) -> None:
        """Remove a node (HashClient: a server is dead); ValueError if unknown."""
        if node not in self.nodes:
            raise ValueError(f"no such node {node!r} to remove")
        self._ring = tuple(entry for entry in self._ring if entry[1] != node)

    def get_node(self, key: str | bytes) -> str | None:
        """The node that owns ``key``, or None when the pool is empty."""
        ring = self._ring
        if len(ring) == 1:
            return ring[0][1]
        data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        best: tuple[bytes, str] | None = None
        for seeded, node in ring:
            scorer = seeded.copy()
            scorer.update(data)
            entry = (scorer.digest(), node)  # equal-length digests compare as big-endian
            if best is None or entry > best:
                best = entry
        return None if best is None else best[1]


class SafePyMemcacheBackend(PyMemcacheBackend):
    """dogpile's pymemcache backend with socket timeouts and a pickle-free serde.

    dogpile (< 1.6) builds its ``HashClient`` without ``connect_timeout``/``timeout``,
    so a node that accepts and never answers blocks forever; the only hook is the
    private ``_create_client``, hence the version pin and the tests.  The safety
    settings are enforced here too, so configuring the backend by name directly
    cannot bring pickle or fire-and-forget writes back.
    """

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        if "serde" in arguments:
            raise SessionConfigError("the memcached serde is fixed to BytesOnlySerde")
        if arguments.get("default_noreply", False):
            raise SessionConfigError(
                "default_noreply=True hides failed writes (R52); it must stay False"
            )
        if arguments.get("enable_retry_client", False):
            raise SessionConfigError("enable_retry_client is not supported by sa_sessions")
        if "memcached_expire_time" not in arguments:
            raise SessionConfigError("memcached_expire_time is required (R51)")
        _check_expire_time(arguments["memcached_expire_time"])
        self.connect_timeout = _positive_number(
            "connect_timeout", arguments.get("connect_timeout", 0.25)
        )
        self.timeout = _positive_number("timeout", arguments.get("timeout", 0.25))
        super().__init__(arguments)  # type: ignore[no-untyped-call]
        self.serde = BytesOnlySerde()
        self.default_noreply = False

    def set(self, key: Any, value: Any) -> None:
        """Store, and raise when HashClient silently skipped a node it marked failed.

        Inside its retry window HashClient returns False instead of raising; a
        write the caller believes done would leave a stale entry behind.
        """
        if not self.client.set(key, value, **self.set_arguments):
            from pymemcache.exceptions import MemcacheError

            raise MemcacheError("memcached did not store the value (server marked failed)")

    def _create_client(self) -> Any:
        """Build the HashClient as dogpile 1.5 does, plus the timeouts and a C-speed hasher."""
        from pymemcache.client.hash import HashClient

        kwargs: dict[str, Any] = {
            "hasher": RendezvousHasher,
            "serde": self.serde,
            "default_noreply": self.default_noreply,
            "tls_context": self.tls_context,
            "retry_attempts": self.hashclient_retry_attempts,
            "retry_timeout": self.hashclient_retry_timeout,
            "dead_timeout": self.dead_timeout,
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
        }
        if self.socket_keepalive is not None:
            kwargs["socket_keepalive"] = self.socket_keepalive
        log.debug("creating memcached HashClient for %s", self.url)
        return HashClient(self.url, **kwargs)


register_backend(BACKEND_NAME, __name__, SafePyMemcacheBackend.__name__)  # type: ignore[no-untyped-call]


def memcached_region(
    servers: str | Sequence[str],
    *,
    connect_timeout: float = 0.25,
    timeout: float = 0.25,
    memcached_expire_time: int = 7 * 24 * 3600,
    dead_timeout: float = 30.0,
    retry_attempts: int = 2,
    retry_timeout: float = 1.0,
    tls_context: ssl.SSLContext | None = None,
    name: str | None = None,
    **backend_arguments: Any,
) -> CacheRegion:
    """A dogpile region on a memcached pool that stores only bytes, safely.

    Always a pymemcache ``HashClient``, one per thread, placing keys with
    :class:`RendezvousHasher` (whose mapping differs from pymemcache's default, see
    there).  ``memcached_expire_time`` is the server-side TTL sent with every set: it
    only bounds how long an entry (or a stale copy on a node that rejoins after
    ``dead_timeout``) can live.  dogpile's own ``expiration_time`` is deliberately not
    set: the database row is the truth and the session store checks expiry itself.

    ``dead_timeout``, ``retry_attempts`` and ``retry_timeout`` map to dogpile's
    ``hashclient_*`` arguments (dogpile's docstring says ``dead_timeout`` but its code
    reads ``hashclient_dead_timeout``).  Extra ``backend_arguments`` go to dogpile
    unchanged; unknown names, ``serde`` and ``default_noreply=True`` are refused.
    Raises :class:`SessionConfigError` for any invalid setting.
    """
    urls = _check_servers(servers)
    connect_timeout = _positive_number("connect_timeout", connect_timeout)
    timeout = _positive_number("timeout", timeout)
    dead_timeout = _positive_number("dead_timeout", dead_timeout)
    retry_timeout = _positive_number("retry_timeout", retry_timeout)
    retry_attempts = _check_retry_attempts(retry_attempts)
    memcached_expire_time = _check_expire_time(memcached_expire_time)
    if tls_context is not None and not isinstance(tls_context, ssl.SSLContext):
        raise SessionConfigError("tls_context must be an ssl.SSLContext")
    for key in backend_arguments:
        if key in _OWNED_ARGUMENTS:
            raise SessionConfigError(
                f"backend argument {key!r} is set by sa_sessions; use {_OWNED_ARGUMENTS[key]}"
            )
        if key not in _PASSTHROUGH_ARGUMENTS:
            raise SessionConfigError(f"unsupported memcached backend argument {key!r}")
    if backend_arguments.get("default_noreply", False) is not False:
        raise SessionConfigError(
            "default_noreply=True hides failed writes (R52); it must stay False"
        )

    arguments: dict[str, Any] = {
        **backend_arguments,
        "url": urls,
        "default_noreply": False,
        "memcached_expire_time": memcached_expire_time,
        "hashclient_dead_timeout": dead_timeout,
        "hashclient_retry_attempts": retry_attempts,
        "hashclient_retry_timeout": retry_timeout,
        "tls_context": tls_context,
        "connect_timeout": connect_timeout,
        "timeout": timeout,
    }
    region = make_region(name=name, serializer=_bytes_only, deserializer=_identity)
    region.configure(BACKEND_NAME, arguments=arguments)
    log.debug("memcached region %r configured for %d server(s)", name, len(urls))
    return region


def memory_region(
    name: str | None = None, *, cache_dict: dict[str, Any] | None = None
) -> CacheRegion:
    """An in-process region with the same byte layout as :func:`memcached_region`.

    The embedded default for the demo and the tests; entries live per process and
    never expire on their own.  Pass ``cache_dict`` to inspect or corrupt entries.
    """
    arguments: dict[str, Any] = {}
    if cache_dict is not None:
        arguments["cache_dict"] = cache_dict
    region = make_region(name=name, serializer=_bytes_only, deserializer=_identity)
    region.configure("dogpile.cache.memory", arguments=arguments)
    return region


def cache_key(hashed_id: str, prefix: str = "sas:") -> str:
    """The memcached key for a session: ``prefix`` + its SHA-256 hex id.

    Checked here because pymemcache accepts control characters such as ``\\x01``
    in keys (R46): only printable ASCII without spaces, at most 250 bytes.
    Raises ValueError for a bad id, :class:`SessionConfigError` for a bad prefix.
    """
    if not isinstance(hashed_id, str) or _HEX64.fullmatch(hashed_id) is None:
        raise ValueError(_BAD_HASHED_ID)
    return _check_key_prefix(prefix) + hashed_id


def cache_key_function(prefix: str = "sas:") -> Callable[[str], str]:
    """:func:`cache_key` with ``prefix`` checked once, for callers on the request path.

    The returned function still refuses any id but 64 lowercase hex characters
    (ValueError), since that check is what keeps the key well-formed.
    """
    checked = _check_key_prefix(prefix)
    fullmatch = _HEX64.fullmatch

    def key(hashed_id: str) -> str:
        if not isinstance(hashed_id, str) or fullmatch(hashed_id) is None:
            raise ValueError(_BAD_HASHED_ID)
        return checked + hashed_id

    return key


def _check_key_prefix(prefix: object) -> str:
    """A prefix of printable ASCII without spaces that leaves room for the id."""
    if not isinstance(prefix, str) or not all("!" <= ch <= "~" for ch in prefix):
        raise SessionConfigError("cache key prefix must be printable ASCII without spaces")
    if len(prefix) + _HASHED_ID_LENGTH > MAX_KEY_BYTES:
        raise SessionConfigError(f"cache key prefix too long: keys are limited to {MAX_KEY_BYTES}")
    return prefix


class CircuitBreaker:
    """Stop calling a failing cache for a while so requests do not pay its timeouts.

    Closed: calls pass.  After ``failure_threshold`` consecutive failures it opens:
    :meth:`allow` returns False for ``reset_after`` seconds.  Then it is half-open and
    lets a single trial call through; success closes it, failure re-opens it.  A trial
    that never reports back is replaced by a new one after another ``reset_after``.
    Thread-safe; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise SessionConfigError("failure_threshold must be an int >= 1")
        self.failure_threshold = failure_threshold
        self.reset_after = _positive_number("reset_after", reset_after)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None  # None while closed
        self._trial_at: float | None = None  # when the half-open trial was let through

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        with self._lock:
            return self._state(self._clock())

    def _state(self, now: float) -> str:
        if self._opened_at is None:
            return "closed"
        if self._trial_at is not None or now - self._opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether the caller may try the cache now."""
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "closed":
                return True
            if state == "open":
                return False
            if self._trial_at is not None and now - self._trial_at < self.reset_after:
                return False  # a trial call is already in flight
            self._trial_at = now
            return True

    def record_success(self) -> None:
        """A call worked: close the breaker and forget past failures."""
        with self._lock:
            if self._opened_at is not None:
                log.info("cache circuit closed: the cache answers again")
            self._failures = 0
            self._opened_at = None
            self._trial_at = None

    def record_failure(self) -> None:
        """A call failed: count it, and open (or re-open) the breaker when due."""
        with self._lock:
            now = self._clock()
            if self._opened_at is not None:
                self._opened_at = now  # a failed trial (or late failure) restarts the wait
                self._trial_at = None
                return
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._opened_at = now
                self._trial_at = None
                log.info(
                    "cache circuit opened after %d consecutive failures; retry in %.1f s",
                    self._failures,
                    self.reset_after,
                )
