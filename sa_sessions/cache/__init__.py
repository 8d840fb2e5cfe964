"""The session cache: dogpile regions, the backends behind them, and the coherence protocol.

Layout, from the bottom up:

* :mod:`~sa_sessions.cache.backend`: the five-operation bytes interface a cache server must offer;
* :mod:`~sa_sessions.cache.memcached`, :mod:`~sa_sessions.cache.redis`,
  :mod:`~sa_sessions.cache.memory`: its implementations (the only modules that import a cache
  client), with :mod:`~sa_sessions.cache.nodes` (which server holds a key) and
  :mod:`~sa_sessions.cache.breaker` (stop calling a failing server);
* :mod:`~sa_sessions.cache.entry`: the authenticated bytes of an entry;
* :mod:`~sa_sessions.cache.guard`: the coherence protocol the store follows, written once;
* :mod:`~sa_sessions.cache.regions`: the region factories and what the store accepts.
"""

from __future__ import annotations

from .breaker import CircuitBreaker as CircuitBreaker
from .guard import CacheStats as CacheStats
from .regions import memcached_region as memcached_region
from .regions import memory_region as memory_region
from .regions import redis_region as redis_region

__all__ = ["CacheStats", "CircuitBreaker", "memcached_region", "memory_region", "redis_region"]
