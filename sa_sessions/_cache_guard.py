"""The store's view of the cache: never authoritative, never fatal.

Wraps a dogpile region so that every cache failure (refused, timeout, too
large, garbage) is logged and becomes a miss, a circuit breaker stops paying
timeouts to a dead server, and values carry the row version.  Calls are
counted for tests and benchmarks.

A write or delete that could not reach the cache leaves a possibly stale
entry behind (a hung server that wakes up still holds it).  Such keys are
remembered: they are never read from the cache, and their deletion is
replayed as soon as the cache answers again.  The memory is per process and
bounded; the memcached TTL bounds whatever it cannot cover.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dogpile.cache.api import NO_VALUE

from .cache import CircuitBreaker
from .cache import cache_key_function

if TYPE_CHECKING:
    from dogpile.cache import CacheRegion

log = logging.getLogger("sa_sessions.cache")

#: Most keys remembered for invalidation after a cache failure (per process).
MAX_PENDING_INVALIDATIONS = 10_000

_VERSION = struct.Struct(">q")

#: Makes add() on an in-process (memory) region atomic.
_ADD_LOCK = threading.Lock()


class _Skipped(Exception):
    """pymemcache skipped the call: its node is marked failed (see _skipped)."""

    def __init__(self) -> None:
        super().__init__("memcached node marked failed; call skipped")


@dataclass
class CacheStats:
    """Round trips made to the cache (exact, for tests and benchmarks)."""

    gets: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0

    def reset(self) -> None:
        self.gets = self.sets = self.deletes = self.errors = 0


class GuardedCache:
    """Get/set/delete of ``(version, blob)`` pairs under hashed-id keys.

    The key prefix is checked here, once: a bad one raises SessionConfigError.
    """

    def __init__(
        self,
        region: CacheRegion,
        *,
        prefix: str,
        max_value_bytes: int,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.region = region
        self._prefix = prefix
        self._key = cache_key_function(prefix)  # validates the prefix now, not per call
        self.max_value_bytes = max_value_bytes
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.stats = CacheStats()
        self._pending: dict[str, None] = {}  # insertion-ordered set of hashed ids
        self._in_outage = False  # one WARNING per outage, not one per failed call

    @property
    def prefix(self) -> str:
        """The key prefix (read-only: it was validated once, at construction)."""
        return self._prefix

    def key(self, hashed_id: str) -> str:
        """The memcached key; ValueError unless ``hashed_id`` is 64 lowercase hex chars."""
        return self._key(hashed_id)

    def get(self, hashed_id: str) -> tuple[int, bytes] | None:
        """The cached ``(version, blob)``, or None on a miss or any failure."""
        if hashed_id in self._pending or not self.breaker.allow():
            return None
        self.stats.gets += 1
        try:
            value = self.region.get(self.key(hashed_id))
        except Exception as exc:
            self._failed("get", exc, [hashed_id], remember=False)
            return None
        if value is NO_VALUE:
            if not self._skipped([hashed_id]):  # a skipped call proves nothing
                self._succeeded()
            return None
        self._succeeded()
        if not isinstance(value, bytes) or len(value) <= _VERSION.size:
            log.warning("cache entry of unexpected shape ignored (key %s)", hashed_id[:12])
            return None
        return _VERSION.unpack_from(value)[0], value[_VERSION.size :]

    def set(self, hashed_id: str, version: int, blob: bytes) -> bool:
        """Store a copy; too-large values and failures just leave no entry."""
        if len(blob) + _VERSION.size > self.max_value_bytes:
            # A bigger copy would be refused by memcached; make sure no stale one stays.
            return self.delete(hashed_id)
        if not self.breaker.allow():
            self._remember([hashed_id])
            return False
        self.stats.sets += 1
        try:
            self.region.set(self.key(hashed_id), _VERSION.pack(version) + blob)
            if self._skipped([hashed_id]):
                raise _Skipped
        except Exception as exc:
            self._failed("set", exc, [hashed_id])
            return False
        self._pending.pop(hashed_id, None)
        self._succeeded()
        return True

    def add(self, hashed_id: str, version: int, blob: bytes) -> bool:
        """Store a copy only where none is cached: the refill after a database read.

        A writer that committed after that read has already cached a newer
        version (under its row lock); a plain set would replace it with this
        older one, served until the next write.  True when stored.
        """
        if len(blob) + _VERSION.size > self.max_value_bytes:
            return self.delete(hashed_id)
        if not self.breaker.allow():
            self._remember([hashed_id])
            return False
        self.stats.sets += 1
        try:
            stored = self._add(self.key(hashed_id), _VERSION.pack(version) + blob)
        except Exception as exc:
            self._failed("set", exc, [hashed_id])
            return False
        if stored:
            self._pending.pop(hashed_id, None)
        elif self._skipped([hashed_id]):
            return False  # skipped, not refused: proves nothing
        self._succeeded()
        return stored

    def _add(self, key: str, value: bytes) -> bool:
        """memcached ``add`` through the region's backend (dogpile has no add)."""
        region = self.region
        backend = region.backend
        # The bytes region.set() would store: dogpile's metadata header, then the value.
        serialized = region._serialized_payload(value)  # dogpile < 1.6 (pinned)
        cache_dict = getattr(backend, "_cache", None)  # dogpile.cache.memory
        if isinstance(cache_dict, dict):
            with _ADD_LOCK:
                return cache_dict.setdefault(key, serialized) is serialized
        add = getattr(getattr(backend, "client", None), "add", None)  # pymemcache
        if add is None:
            region.set(key, value)  # no atomic add on this backend: best effort
            return True
        set_arguments = getattr(backend, "set_arguments", {})
        return bool(add(key, serialized, noreply=False, **set_arguments))

    def delete(self, hashed_id: str) -> bool:
        return self.delete_many([hashed_id])

    def delete_many(self, hashed_ids: list[str]) -> bool:
        if not hashed_ids:
            return True
        if not self.breaker.allow():
            self._remember(hashed_ids)
            return False
        if not self._delete(hashed_ids):
            return False
        for hashed_id in hashed_ids:
            self._pending.pop(hashed_id, None)
        self._succeeded()
        return True

    def _delete(self, hashed_ids: list[str]) -> bool:
        self.stats.deletes += 1
        try:
            if len(hashed_ids) == 1:
                self.region.delete(self.key(hashed_ids[0]))
            else:
                self.region.delete_multi([self.key(h) for h in hashed_ids])
            if self._skipped(hashed_ids):
                raise _Skipped
        except Exception as exc:
            self._failed("delete", exc, hashed_ids)
            return False
        return True

    def _skipped(self, hashed_ids: Sequence[str]) -> bool:
        """Whether this thread's memcached client skipped the call for any of these keys.

        Within ``retry_timeout`` of a failure, pymemcache's HashClient does not
        call that node and answers with a default instead: a miss for get, and
        nothing for delete or add, indistinguishable from real answers (a failed
        node's delete that "worked" would let a logged-out session come back when
        the node does).  So while a key's node is marked failed, such answers
        prove nothing: a delete counts as failed, a miss as no news.  Reads
        pymemcache internals (HashClient of pymemcache < 5, pinned); other
        backends never skip.  Runs after every set and delete; the usual case (no
        failed node) returns after three attribute reads (~0.18 µs), hashing nothing.
        """
        client = getattr(getattr(self.region, "backend", None), "client", None)  # one per thread
        failed = getattr(client, "_failed_clients", None)
        if not failed:
            return False
        hasher, clients = getattr(client, "hasher", None), getattr(client, "clients", None)
        if hasher is None or not isinstance(clients, dict):
            return True
        for hashed_id in hashed_ids:
            node = clients.get(hasher.get_node(self.key(hashed_id)))
            if node is None or getattr(node, "server", None) in failed:
                return True
        return False

    @property
    def pending_invalidations(self) -> int:
        """Keys whose cached copy may be stale and will be deleted once the cache answers."""
        return len(self._pending)

    def _remember(self, hashed_ids: list[str]) -> None:
        for hashed_id in hashed_ids:
            self._pending[hashed_id] = None
        while len(self._pending) > MAX_PENDING_INVALIDATIONS:
            del self._pending[next(iter(self._pending))]
            log.warning("too many cache entries awaiting invalidation; forgetting the oldest")

    def _succeeded(self) -> None:
        """The cache really answered (never called for a skipped call)."""
        self.breaker.record_success()
        if self._in_outage:
            self._in_outage = False
            log.info("cache answers again")
        if self._pending:
            replay = []
            for hashed_id in list(self._pending)[:1000]:
                if self._skipped([hashed_id]):
                    # Its node is skipped by this client: a delete would be skipped too.
                    # Waits at the back, so other keys get their turn.
                    self._pending.pop(hashed_id, None)
                    self._pending[hashed_id] = None
                else:
                    replay.append(hashed_id)
            if replay and self._delete(replay):
                for hashed_id in replay:
                    self._pending.pop(hashed_id, None)
                log.info("invalidated %d cache entries written during an outage", len(replay))

    def _failed(
        self,
        operation: str,
        exc: Exception,
        hashed_ids: Sequence[str] = (),
        *,
        remember: bool = True,
    ) -> None:
        """A call failed: remember its keys as possibly stale, and tell the breaker.

        The breaker exists to stop paying timeouts.  pymemcache's HashClient
        handles a refused or closed node itself, cheaply (it skips the node, then
        re-hashes its keys to the others), so with it only timeouts are counted:
        a dead node of a pool must not switch the whole cache off, nor starve
        the client's own detection of that node.  Other backends count every
        failure.
        """
        self.stats.errors += 1
        if remember:
            self._remember(list(hashed_ids))
        if not isinstance(exc, OSError) and hashed_ids and self._skipped(hashed_ids):
            log.debug("cache %s skipped (%s)", operation, type(exc).__name__)
            return
        client = getattr(getattr(self.region, "backend", None), "client", None)
        if isinstance(exc, TimeoutError) or not hasattr(client, "_failed_clients"):
            self.breaker.record_failure()
        level = logging.DEBUG if self._in_outage else logging.WARNING
        self._in_outage = True
        log.log(
            level,
            "cache %s failed (%s); falling back to the database",
            operation,
            type(exc).__name__,
        )
