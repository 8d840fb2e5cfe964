"""Session: the per-request dictionary, lazy, with per-key change tracking.

Nothing is parsed, verified or loaded until the application touches the
session.  Every write is recorded per key so that, when a concurrent request
saved first, this request's changes are re-applied to the fresh data instead
of overwriting it.  Saving happens once, when the response starts (see
:mod:`sa_sessions.wsgi`); :mod:`sa_sessions._persist` decides cookie or server.

Changing a nested mutable value in place (``session["cart"].append(x)``) is not
seen; assign the key again, call :meth:`Session.mark_changed`, or set
``session.modified = True``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from collections.abc import MutableMapping
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

from ._clock import UTC
from ._clock import from_micros
from .codec.blob import Packed
from .cookies import CookieState
from .cookies import read_cookie_values
from .exceptions import CodecError
from .exceptions import SessionError
from .ids import hash_session_id
from .ids import log_id
from .ids import new_session_id

if TYPE_CHECKING:
    from .settings import SessionSettings
    from .store import StoredSession

log = logging.getLogger("sa_sessions.session")
security_log = logging.getLogger("sa_sessions.security")

CLEAN, QUICK, FULL = 0, 1, 2

#: Expiry accepted by start()/regenerate_id(): absolute aware datetime, a duration, or None.
Expiration = datetime | timedelta | None


class Deleted:
    """Marker in the change log: this request deleted the key."""

    __slots__ = ()


class Increment:
    """Change-log entry of :meth:`Session.increment`: re-applied as an addition on merge."""

    __slots__ = ("delta",)

    def __init__(self, delta: int | float) -> None:
        self.delta = delta


DELETED = Deleted()
_MISSING = object()


class Session(MutableMapping[str, Any]):
    """One request's session: a ``MutableMapping`` plus the lifecycle API."""

    # Per-request state starts at these class-level defaults, so that a request
    # which never touches its session pays for two attributes, not eighteen.
    _loaded = False
    _sid: str | None = None
    _dirty = CLEAN
    _record: StoredSession | None = None
    _in_cookie = False
    _cookie_current = False  # the incoming id cookie needs no re-issue
    _had_cookie = False
    _cookie_delete = False
    _touch_due = False
    _resign = False
    _expires_at: datetime | None = None
    _touched_at: datetime | None = None
    _ssl_only = False
    _headers: list[tuple[str, str]] | None = None
    _data: dict[str, Any]
    _changes: dict[str, Any]

    def __init__(self, settings: SessionSettings, environ: dict[str, Any]) -> None:
        self._settings = settings
        self._environ = environ

    # ---------------------------------------------------------------- loading

    @property
    def https(self) -> bool:
        return self._environ.get("wsgi.url_scheme") == "https"

    @property
    def accessed(self) -> bool:
        """True once the application has looked at the session in this request."""
        return self._loaded

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        self._data = {}  # created here, not in __init__: an untouched session never needs them
        self._changes = {}
        header = self._environ.get("HTTP_COOKIE")
        if not header:
            return
        settings = self._settings
        try:
            name = settings.policy.name_to_read(https=self.https)
            values = read_cookie_values(
                header, name, max_header_bytes=settings.max_cookie_header_bytes
            )
            if not values:
                return
            if len(values) > 1:  # R13: e.g. one planted by a sibling subdomain
                security_log.info(
                    "%d %s cookies in one request; using the first that verifies",
                    len(values),
                    name,
                )
            now = settings.clock()
            for value in values:
                self._had_cookie = True
                state = settings.cookies.decode(value, now=now)
                if state is not None and self._adopt(state, now):
                    return
        except BaseException:
            self._loaded = False  # e.g. database down: retry on next access, never start afresh
            raise

    def _adopt(self, state: CookieState, now: datetime) -> bool:
        if state.ssl_only and not self.https:
            return False
        if state.kind == "data":
            touched = state.extra.get("t")
            touched_at = from_micros(touched) if isinstance(touched, int) else state.issued_at
            if self._idle_expired(touched_at, now):
                return False
            self._set_loaded(
                state.session_id, state.data or {}, state.expires_at, touched_at, state.ssl_only
            )
            self._in_cookie = True
        else:
            store = self._settings.store
            record = (
                store.load(state.session_id, cache_only=self._settings.no_datastore, lazy=True)
                if store is not None
                else None
            )
            if record is None:
                return False
            meta = record.meta
            if (meta.ssl_only and not self.https) or self._idle_expired(meta.touched_at, now):
                return False
            self._set_loaded(
                state.session_id, record.data, meta.expires_at, meta.touched_at, meta.ssl_only
            )
            self._record = record
            self._cookie_current = state.key_index == 0
        self._resign = state.key_index > 0
        if self._resign:
            log.info("session %s signed with an older key; re-signing", self._log_id)
        idle = self._settings.idle_timeout
        self._touch_due = idle is not None and now - self._touched_at_or(now) > (
            idle * self._settings.idle_touch_fraction
        )
        return True

    def _set_loaded(
        self,
        sid: str,
        data: dict[str, Any],
        expires_at: datetime,
        touched_at: datetime,
        ssl_only: bool,
    ) -> None:
        self._sid, self._data = sid, data
        self._expires_at, self._touched_at, self._ssl_only = expires_at, touched_at, ssl_only

    def _touched_at_or(self, now: datetime) -> datetime:
        return self._touched_at if self._touched_at is not None else now

    def _idle_expired(self, touched_at: datetime, now: datetime) -> bool:
        idle = self._settings.idle_timeout
        if idle is not None and now - touched_at > idle:
            log.debug("session idle for longer than %s; starting a new one", idle)
            return True
        return False

    @property
    def _log_id(self) -> str:
        return log_id(hash_session_id(self._sid)) if self._sid else "-"

    # ---------------------------------------------------------------- mapping API

    def __getitem__(self, key: str) -> Any:
        self._load()
        value = self._data[key]
        if type(value) is Packed:
            value = self._unpack(key, value)
            if value is _MISSING:
                raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        self._load()
        for key, value in list(self._data.items()):  # iterating yields values soon after
            if type(value) is Packed:
                self._unpack(key, value)
        return iter(list(self._data))

    def __len__(self) -> int:
        self._load()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._load()
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        value = self._data.get(key, _MISSING)
        if type(value) is Packed:
            value = self._unpack(key, value)
        return default if value is _MISSING else value

    def _unpack(self, key: str, packed: Packed) -> Any:
        """Decode a value on first use; an undecodable one is dropped (``_MISSING``).

        Only authentic bytes get here (the blob's MAC checked out), so a failure
        means the allow-list or the code changed since they were written, or a
        leaked key: the key is treated as absent and the next save leaves it out.
        """
        try:
            value = packed.value()
        except CodecError as exc:
            security_log.error(
                "session %s: a stored value cannot be decoded (%s); dropped", self._log_id, exc
            )
            del self._data[key]
            return _MISSING
        self._data[key] = value
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._write(key, value, FULL)

    def __delitem__(self, key: str) -> None:
        self._load()
        del self._data[key]
        self._changes[key] = DELETED
        self._dirty = FULL

    def clear(self) -> None:
        self._load()
        if self._data:
            self._changes.update(dict.fromkeys(self._data, DELETED))
            self._data.clear()
            self._dirty = FULL

    def __repr__(self) -> str:
        state = "active" if self._sid else "inactive"
        return f"<Session {state} {self._log_id} keys={len(self._data) if self._loaded else '?'}>"

    def _write(self, key: str, value: Any, level: int) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        self._load()
        if self._sid is None:
            self._begin(None, ssl_only=False)
            self._dirty = CLEAN  # begun by set_quick(): a cache-only session (ORIGIN §6.31)
        self._data[key] = value
        self._changes[key] = value
        self._dirty = max(self._dirty, level)

    def set_quick(self, key: str, value: Any) -> None:
        """Set a value that is written to the cache only (fast; lost on eviction)."""
        self._write(key, value, QUICK)

    def pop_quick(self, key: str, default: Any = None) -> Any:
        """Remove a value with a cache-only write; returns ``default`` when missing."""
        self._load()
        if key not in self._data:
            return default
        value = self._data.pop(key)
        self._changes[key] = DELETED
        self._dirty = max(self._dirty, QUICK)
        if type(value) is Packed:
            try:
                return value.value()
            except CodecError:
                return default
        return value

    def increment(self, key: str, delta: int | float = 1) -> int | float:
        """Add ``delta`` to a number, so concurrent increments are never lost.

        On a version conflict the addition (not the resulting value) is re-applied
        to the fresh data, so 50 parallel ``increment("hits")`` make 50.
        """
        self._load()
        current = self.get(key, 0)
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise TypeError(f"cannot increment a {type(current).__name__}")
        previous = self._changes.get(key, _MISSING)
        self._write(key, current + delta, FULL)
        if previous is _MISSING or isinstance(previous, Increment):
            total = delta + (previous.delta if isinstance(previous, Increment) else 0)
            self._changes[key] = Increment(total)
        result: int | float = self._data[key]
        return result

    def mark_changed(self, key: str) -> None:
        """Declare that the value under ``key`` was changed in place."""
        self._load()
        if key in self._data:
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                self._changes[key] = value
                self._dirty = FULL

    @property
    def modified(self) -> bool:
        """True when a full save is pending; set it to force one (every key counts as set)."""
        return self._dirty == FULL

    @modified.setter
    def modified(self, value: bool) -> None:
        self._load()
        if value and self._sid is not None:
            self._changes.update(self._data)
            self._dirty = FULL

    # ---------------------------------------------------------------- lifecycle

    @property
    def sid(self) -> str | None:
        """The session id, or None while no session is active."""
        self._load()
        return self._sid

    @property
    def expires_at(self) -> datetime | None:
        """The absolute expiry (aware UTC), or None while no session is active."""
        self._load()
        return self._expires_at

    def is_active(self) -> bool:
        """True when this request has a live session (loads it to be sure)."""
        self._load()
        return self._sid is not None

    def is_ssl_only(self) -> bool:
        self._load()
        return self._sid is not None and self._ssl_only

    def start(self, expiration: Expiration = None, ssl_only: bool = False) -> None:
        """Begin a new empty session, discarding (and deleting) any active one."""
        self._load()
        if ssl_only:
            self._settings.policy.is_secure(https=self.https, ssl_only=True)  # config check
        if self._sid is not None:
            self._discard_server_copy()
            self._cookie_delete = True  # the old cookie must not outlive it, even if unused
        self._begin(expiration, ssl_only=ssl_only)

    def regenerate_id(self, expiration: Expiration = None) -> None:
        """Move the data to a new id and delete the old one at once (call it at login)."""
        self._load()
        if self._sid is None:
            if expiration is not None:
                self.start(expiration)
            return
        old = self._log_id
        self._discard_server_copy()
        self._cookie_delete = True  # used only if the session ends up empty
        self._sid = new_session_id()
        self._record = None
        self._in_cookie = self._cookie_current = False
        self._changes = dict(self._data)
        self._dirty = FULL
        if expiration is not None:
            self._expires_at = self._resolve_expiration(expiration)
        log.info("session %s regenerated as %s", old, self._log_id)

    def terminate(self) -> None:
        """End the session: server copy deleted now, cookie expired in the response."""
        self._load()
        if self._sid is not None:
            log.info("session %s terminated", self._log_id)
            self._discard_server_copy()
        self._cookie_delete = self._had_cookie or self._sid is not None
        self._sid = None
        self._data = {}
        self._changes = {}
        self._dirty = CLEAN
        self._in_cookie = self._cookie_current = self._touch_due = False
        self._expires_at = self._touched_at = None
        self._ssl_only = False

    def _begin(self, expiration: Expiration, *, ssl_only: bool) -> None:
        self._sid = new_session_id()
        self._data = {}
        self._changes = {}
        self._record = None
        self._in_cookie = self._cookie_current = self._touch_due = False
        self._ssl_only = ssl_only
        self._touched_at = self._settings.clock()
        self._expires_at = self._resolve_expiration(expiration)
        self._dirty = FULL
        log.debug("session %s started", self._log_id)

    def _resolve_expiration(self, expiration: Expiration) -> datetime:
        now = self._settings.clock()
        if expiration is None:
            return now + self._settings.lifetime
        if isinstance(expiration, timedelta):
            return now + expiration
        if isinstance(expiration, datetime):
            if expiration.tzinfo is None:
                raise SessionError("expiration must be an aware datetime (e.g. in UTC)")
            return expiration.astimezone(UTC)
        raise TypeError("expiration must be a datetime, a timedelta or None")

    def _discard_server_copy(self) -> None:
        store = self._settings.store
        if store is not None and self._sid is not None and self._record is not None:
            store.delete(self._sid)
        self._record = None

    # ---------------------------------------------------------------- response

    def finalize(self) -> list[tuple[str, str]]:
        """Save if needed (once) and return the response headers to add.

        Called by the middleware when the response starts; later calls return
        the same headers.  A failed save leaves no headers behind.
        """
        if self._headers is not None:
            return self._headers
        self._headers = []
        if not self._loaded:
            return self._headers
        headers = save_session(self)
        if headers:
            headers.append(("Cache-Control", "no-store"))
        self._headers = headers
        return headers


# At the end: _persist needs the names above, and finalize() needs save_session.
from ._persist import save_session  # noqa: E402
