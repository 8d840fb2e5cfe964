"""The session store's view of its cache: the coherence protocol, written once.

The row is the truth.  The cache holds copies of rows, each with the version
it copies and a stamp (a time at or after which the copy was current), plus
markers for sessions that ended.  The rules, whatever the backend:

* **Reads** (:meth:`SessionCache.read`) return what is stored, authenticated:
  a copy, a row-only marker, an end marker, or nothing usable.  Deciding
  whether a copy may be served (its version against the client's cookie, its
  stamp against ``max_staleness``) is the store's job.
* **Refills** after a database read (:meth:`SessionCache.fill`) only *add*
  (or replace the unusable value the read saw): a writer that committed after
  that read has published a newer copy, which a plain write would overwrite.
* **Publishing** a committed version (:meth:`SessionCache.publish`) replaces
  an older copy by compare-and-swap and never a newer one or an end marker, so
  writers whose cache writes arrive out of order leave the newest copy.
* **Quick writes** (:meth:`SessionCache.replace`) swap only the very copy the
  request read; if it changed or vanished the caller writes the row instead.
* **Ending** a session (:meth:`SessionCache.end`) writes an end marker that
  outlives ``max_staleness``: a refill in flight cannot ``add`` over it, and
  a read of it answers "gone" without asking the database.

Any cache failure is logged and counted, and turns into a miss or a skipped
write: the cache never fails a request.  Calls are counted exactly, for tests
and benchmarks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sa_sessions.exceptions import SessionConfigError
from sa_sessions.ids import is_hashed_id
from sa_sessions.signing import KeyInput

from .backend import CacheUnavailable
from .backend import SessionCacheBackend
from .backend import Token
from .entry import EndReason
from .entry import EntryCodec
from .entry import Kind

log = logging.getLogger("sa_sessions.cache")

#: Longest memcached key; Redis allows more, but one rule for both keeps keys portable.
MAX_KEY_BYTES = 250
_HASHED_ID_LENGTH = 64
#: Rounds of read-compare-swap before a publisher gives up.  A round fails only when
#: another writer changed the entry meanwhile, and publishers replace only older
#: versions, so the newest of N writers committing at once needs at most N rounds:
#: a small bound would leave an older copy cached after parallel writes.
PUBLISH_ROUNDS = 64
#: Seconds between two WARNINGs about cache failures (the others are DEBUG).
_REPORT_EVERY = 10.0


@dataclass
class CacheStats:
    """Round trips made to the cache (exact, for tests and benchmarks)."""

    gets: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0

    def reset(self) -> None:
        self.gets = self.sets = self.deletes = self.errors = 0


class CachedCopy(NamedTuple):
    """A copy of a row (``blob``), or a row-only marker (``blob is None``)."""

    version: int
    stamp_us: int
    blob: bytes | memoryview | None
    token: Token


class Ended(NamedTuple):
    """The session ended; ``reason`` says how."""

    reason: EndReason


class Absent(NamedTuple):
    """Nothing usable is cached; ``token`` names unusable bytes that a refill may replace."""

    token: Token | None = None


#: What :meth:`SessionCache.read` finds.
Lookup = CachedCopy | Ended | Absent

_NOTHING = Absent()


def check_key_prefix(prefix: object) -> str:
    """A prefix of printable ASCII without spaces that leaves room for a hashed id."""
    if not isinstance(prefix, str) or not all("!" <= ch <= "~" for ch in prefix):
        raise SessionConfigError("cache key prefix must be printable ASCII without spaces")
    if len(prefix) + _HASHED_ID_LENGTH > MAX_KEY_BYTES:
        raise SessionConfigError(f"cache key prefix too long: keys are limited to {MAX_KEY_BYTES}")
    return prefix


class SessionCache:
    """The protocol of the module docstring over one :class:`SessionCacheBackend`."""

    def __init__(
        self,
        backend: SessionCacheBackend,
        *,
        keys: KeyInput,
        prefix: str = "sas:",
        max_value_bytes: int,
        end_marker_ttl: float,
    ) -> None:
        self.backend = backend
        self.prefix = check_key_prefix(prefix)
        self.max_value_bytes = max_value_bytes
        self.end_marker_ttl = end_marker_ttl
        self.entries = EntryCodec(keys)
        self.stats = CacheStats()
        self._reported_at = -_REPORT_EVERY
        self._unreported = 0
        self._forged_reported_at = -_REPORT_EVERY
        self._forged = 0

    def __repr__(self) -> str:
        return f"SessionCache({self.backend!r}, prefix={self.prefix!r})"

    def key(self, hashed_id: str) -> str:
        """The cache key; ValueError unless ``hashed_id`` is 64 lowercase hex characters."""
        if not is_hashed_id(hashed_id):
            raise ValueError("hashed_id must be a 64-character lowercase SHA-256 hex digest")
        return self.prefix + hashed_id

    # ------------------------------------------------------------------ reading

    def read(self, hashed_id: str) -> Lookup:
        """What the cache holds for this session (never raises for a cache failure)."""
        key = self.key(hashed_id)
        self.stats.gets += 1
        try:
            found = self.backend.get(key)
        except CacheUnavailable as exc:
            self._failed("get", exc)
            return _NOTHING
        if found is None:
            return _NOTHING
        raw, token = found
        entry = self.entries.decode(hashed_id, raw)
        if entry is None:
            self._forged += 1
            now = time.monotonic()
            if now - self._forged_reported_at >= _REPORT_EVERY:
                log.warning(
                    "ignored %d cache entries that failed authentication (last: key %s); "
                    "written by an older release, under other secret keys, or by another program "
                    "(each is read as a miss; a distinct cache_prefix keeps them apart)",
                    self._forged,
                    hashed_id[:12],
                )
                self._forged_reported_at, self._forged = now, 0
            return Absent(token)
        if entry.kind is Kind.ENDED:
            try:
                return Ended(EndReason(entry.number))
            except ValueError:  # a reason a newer release knows: ended all the same
                return Ended(EndReason.ENDED)
        return CachedCopy(entry.number, entry.stamp_us, entry.blob, token)

    # ------------------------------------------------------------------ writing

    def _value(
        self, hashed_id: str, version: int, blob: bytes | memoryview, stamp_us: int
    ) -> bytes:
        value = self.entries.copy(hashed_id, version, stamp_us, blob)
        if len(value) > self.max_value_bytes:
            return self.entries.row_only(hashed_id, version, stamp_us)
        return value

    def fill(
        self,
        hashed_id: str,
        version: int,
        blob: bytes,
        stamp_us: int,
        ttl: float,
        over: Absent | CachedCopy = _NOTHING,
    ) -> bool:
        """After a database read: store the copy where the read found nothing usable.

        ``over`` is what the read found: its token lets the copy replace unusable
        or older bytes, and only those.  Returns True when stored.
        """
        value = self._value(hashed_id, version, blob, stamp_us)
        return self._store(hashed_id, value, over.token, ttl, "fill")

    def publish(
        self,
        hashed_id: str,
        version: int,
        blob: bytes,
        stamp_us: int,
        ttl: float,
        token: Token | None = None,
    ) -> bool:
        """After a commit: make ``version`` the cached copy unless a newer one or an end
        marker is already there.

        ``token`` is the one the request's own read returned, which makes the usual
        case a single compare-and-swap.  Returns True when this copy was stored.
        """
        key = self.key(hashed_id)
        value = self._value(hashed_id, version, blob, stamp_us)
        try:
            for _ in range(PUBLISH_ROUNDS):
                self.stats.sets += 1
                if token is None:
                    stored = self.backend.add(key, value, ttl)
                else:
                    stored = self.backend.cas(key, value, token, ttl)
                if stored:
                    return True
                self.stats.gets += 1
                found = self.backend.get(key)
                if found is None:
                    token = None
                    continue
                raw, token = found
                entry = self.entries.decode(hashed_id, raw)
                if entry is not None and (entry.kind is Kind.ENDED or entry.number >= version):
                    return False  # ended, or a newer (or the same) version is there
        except CacheUnavailable as exc:
            self._failed("publish", exc)
            return False
        log.warning(
            "gave up publishing session %s after %d rounds of contention; an older copy "
            "may be served to its other browsers for up to max_staleness",
            hashed_id[:12],
            PUBLISH_ROUNDS,
        )
        return False

    def restamp(self, hashed_id: str, copy: CachedCopy, stamp_us: int, ttl: float) -> bool:
        """After revalidating ``copy`` against the row: give it a fresh stamp."""
        if copy.blob is None:
            value = self.entries.row_only(hashed_id, copy.version, stamp_us)
        else:
            value = self._value(hashed_id, copy.version, copy.blob, stamp_us)
        return self._store(hashed_id, value, copy.token, ttl, "restamp")

    def replace(self, hashed_id: str, copy: CachedCopy, blob: bytes, ttl: float) -> bool:
        """A quick (cache-only) write: swap ``copy`` for ``blob`` of the same version.

        Only the very copy the request read is replaced, and only by a copy that fits;
        False tells the caller to write the row instead.  The stamp is kept: the new
        content is the old one plus this request's changes.
        """
        value = self.entries.copy(hashed_id, copy.version, copy.stamp_us, blob)
        if len(value) > self.max_value_bytes:
            return False
        return self._store(hashed_id, value, copy.token, ttl, "quick write")

    def replace_with(
        self,
        hashed_id: str,
        copy: CachedCopy,
        version: int,
        blob: bytes,
        stamp_us: int,
        ttl: float,
    ) -> bool:
        """A session that lives in the cache alone: swap ``copy`` for a new version."""
        value = self.entries.copy(hashed_id, version, stamp_us, blob)
        if len(value) > self.max_value_bytes:
            return False
        return self._store(hashed_id, value, copy.token, ttl, "write")

    def _store(
        self, hashed_id: str, value: bytes, token: Token | None, ttl: float, what: str
    ) -> bool:
        """One write: ``add`` where nothing was seen, else a swap of what was seen."""
        key = self.key(hashed_id)
        self.stats.sets += 1
        try:
            if token is None:
                return self.backend.add(key, value, ttl)
            return self.backend.cas(key, value, token, ttl)
        except CacheUnavailable as exc:
            self._failed(what, exc)
            return False

    def create(self, hashed_id: str, version: int, blob: bytes, stamp_us: int, ttl: float) -> bool:
        """Cache a session that lives only in the cache (``no_datastore``): add, never overwrite."""
        value = self.entries.copy(hashed_id, version, stamp_us, blob)
        if len(value) > self.max_value_bytes:
            return False
        return self._store(hashed_id, value, None, ttl, "create")

    def end(self, hashed_id: str, reason: EndReason, ended_us: int) -> bool:
        """Mark the session ended (after its row was deleted)."""
        return self.end_many([hashed_id], reason, ended_us)

    def end_many(self, hashed_ids: Sequence[str], reason: EndReason, ended_us: int) -> bool:
        """Mark several sessions ended, in one round trip per server."""
        if not hashed_ids:
            return True
        values = {self.key(h): self.entries.ended(h, reason, ended_us) for h in hashed_ids}
        self.stats.deletes += 1
        try:
            if len(values) == 1:
                [(key, value)] = values.items()
                self.backend.set(key, value, self.end_marker_ttl)
            else:
                self.backend.set_many(values, self.end_marker_ttl)
        except CacheUnavailable as exc:
            self._failed("end", exc)
            return False
        return True

    # ------------------------------------------------------------------ health

    def _failed(self, operation: str, exc: CacheUnavailable) -> None:
        """Count a failure; log a WARNING at most every few seconds, not once per call."""
        self.stats.errors += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._reported_at < _REPORT_EVERY:
            log.debug("cache %s failed (%s)", operation, exc)
            return
        log.warning(
            "cache %s failed (%s); using the database (%d cache failures since the last report)",
            operation,
            exc,
            self._unreported,
        )
        self._reported_at = now
        self._unreported = 0
