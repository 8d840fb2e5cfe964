"""An in-process cache behind the session cache interface.

The embedded default of the demo and the quick starts: no server, entries live
in a dict of this process, with expiry and a size bound.  Each process has its
own, so with several worker processes a copy in one process does not see what
another process wrote or ended; the coherence rules still hold (the client's
cookie names the version it was last shown, and every copy is revalidated
against the row after ``max_staleness``), but memcached or Redis serve a pool
of processes better.  A forked child starts empty: a copy inherited from the
parent would be a stale copy.

Also registers the dogpile backend ``sa_sessions.memory``, and adapts regions
on dogpile's own ``dogpile.cache.memory`` backend (which stores objects as they
are, so nothing is pickled there either).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from dogpile.cache.api import CacheBackend

from sa_sessions.exceptions import SessionConfigError

from .backend import Token
from .plain import SessionCacheRegionBackend

#: dogpile backend name of :class:`MemoryBackend`.
BACKEND_NAME = "sa_sessions.memory"

#: Default bound on the number of entries: the oldest are dropped first.
DEFAULT_MAX_ENTRIES = 10_000

_tokens = itertools.count(1)
_CACHES: weakref.WeakSet[MemoryCache] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for cache in list(_CACHES):
        cache.clear()


os.register_at_fork(after_in_child=_forget_after_fork)

#: (token, value, deadline on the monotonic clock)
_Item = tuple[int, bytes, float]


class _ItemStore:
    """The storage under :class:`MemoryCache`: a plain dict, or a dogpile memory backend."""

    def read(self, key: str) -> _Item | None:
        raise NotImplementedError

    def write(self, key: str, item: _Item) -> None:
        raise NotImplementedError

    def remove(self, key: str) -> None:
        raise NotImplementedError


class _DictStore(_ItemStore):
    def __init__(self, max_entries: int) -> None:
        self.items: dict[str, _Item] = {}
        self.max_entries = max_entries

    def read(self, key: str) -> _Item | None:
        return self.items.get(key)

    def write(self, key: str, item: _Item) -> None:
        items = self.items
        items.pop(key, None)  # re-inserted last: the dict's order is the age order
        items[key] = item
        while len(items) > self.max_entries:
            del items[next(iter(items))]

    def remove(self, key: str) -> None:
        self.items.pop(key, None)


class _DogpileStore(_ItemStore):
    """Items kept in a ``dogpile.cache.memory`` backend through its public get/set/delete."""

    def __init__(self, backend: CacheBackend) -> None:
        self.backend = backend

    def read(self, key: str) -> _Item | None:
        stored = self.backend.get(key)
        # Items carry the process id: a forked child must not use its parent's copies,
        # and the dict it inherited cannot be cleared from here.
        if (
            type(stored) is tuple
            and len(stored) == 4
            and stored[3] == os.getpid()
            and type(stored[0]) is int
            and type(stored[1]) is bytes
            and type(stored[2]) is float
        ):
            return stored[0], stored[1], stored[2]
        return None

    def write(self, key: str, item: _Item) -> None:
        self.backend.set(key, (*item, os.getpid()))  # type: ignore[arg-type]  # any object

    def remove(self, key: str) -> None:
        self.backend.delete(key)


#: One lock for every adapter of a dogpile memory backend: two stores may share a region.
_SHARED_LOCK = threading.Lock()


class MemoryCache:
    """The session cache interface over a dict of this process (see the module docstring)."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        _store: _ItemStore | None = None,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise SessionConfigError(f"max_entries must be an int >= 1, got {max_entries!r}")
        self._items = _store if _store is not None else _DictStore(max_entries)
        self._lock = _SHARED_LOCK if _store is not None else threading.Lock()
        self._clock = clock
        _CACHES.add(self)

    @classmethod
    def over_dogpile_backend(cls, backend: CacheBackend) -> MemoryCache:
        """Adapt a region configured with ``dogpile.cache.memory``."""
        return cls(_store=_DogpileStore(backend))

    def _live(self, key: str) -> _Item | None:
        item = self._items.read(key)
        if item is not None and item[2] <= self._clock():
            self._items.remove(key)
            return None
        return item

    def get(self, key: str) -> tuple[bytes, Token] | None:
        with self._lock:
            item = self._live(key)
        return None if item is None else (item[1], item[0])

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._items.write(key, (next(_tokens), value, self._clock() + ttl))
            return True

    def cas(self, key: str, value: bytes, token: Token, ttl: float) -> bool:
        with self._lock:
            item = self._live(key)
            if item is None or item[0] != token:
                return False
            self._items.write(key, (next(_tokens), value, self._clock() + ttl))
            return True

    def set(self, key: str, value: bytes, ttl: float) -> None:
        with self._lock:
            self._items.write(key, (next(_tokens), value, self._clock() + ttl))

    def set_many(self, values: Mapping[str, bytes], ttl: float) -> None:
        with self._lock:
            deadline = self._clock() + ttl
            for key, value in values.items():
                self._items.write(key, (next(_tokens), value, deadline))

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.remove(key)

    def clear(self) -> None:
        """Drop every entry (after a fork; also handy in tests)."""
        with self._lock:
            if isinstance(self._items, _DictStore):
                self._items.items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items.items) if isinstance(self._items, _DictStore) else 0


class MemoryBackend(SessionCacheRegionBackend):
    """dogpile backend ``sa_sessions.memory``: a :class:`MemoryCache` as a region.

    Argument: ``max_entries`` (default 10,000; the oldest entries are dropped first).
    """

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        unknown = sorted(set(arguments) - {"max_entries"})
        if unknown:
            raise SessionConfigError(f"unsupported {BACKEND_NAME} argument(s) {unknown}")
        self.cache = self.session_cache = MemoryCache(
            max_entries=arguments.get("max_entries", DEFAULT_MAX_ENTRIES)
        )
