"""Session: one request's session, a lazy dictionary with per-key change tracking.

Nothing is parsed, verified or loaded until the application touches the
session (:mod:`sa_sessions.loading`).  Every write is recorded per key
(:mod:`sa_sessions.changes`), so that when a parallel request saved first only
this request's changes are applied to the fresh data.  Saving happens once,
when the response starts (:mod:`sa_sessions.saving`), or earlier with
:meth:`Session.save`; where the session stands is one
:class:`~sa_sessions.state.SessionState`.

Changing a nested mutable value in place (``session["cart"].append(x)``) is not
seen; assign the key again, call :meth:`Session.mark_changed`, or set
``session.modified = True``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Iterator
from collections.abc import MutableMapping
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

from ._clock import UTC
from ._clock import from_micros
from .cache.entry import EndReason
from .changes import DELETED
from .changes import Increment
from .codec.blob import Packed
from .exceptions import CodecError
from .exceptions import SessionError
from .hooks import call_hook
from .ids import hash_session_id
from .ids import log_id
from .ids import new_session_id
from .loading import load_session
from .saving import Saver
from .state import Dirty
from .state import Phase
from .state import SessionState

if TYPE_CHECKING:
    from .settings import SessionSettings

log = logging.getLogger("sa_sessions.session")
security_log = logging.getLogger("sa_sessions.security")

#: Expiry accepted by start()/regenerate_id(): an aware datetime, a duration from now,
#: Unix seconds (int or float), or None for the application's lifetime.
Expiration = datetime | timedelta | int | float | None

_MISSING = object()

#: Where :meth:`Session.flash` keeps messages (Flask's key: the two can share a session).
_FLASHES_KEY = "_flashes"
#: Where :meth:`Session.csrf_token` keeps the token.
_CSRF_KEY = "_csrf_token"
_CSRF_LENGTH = 43


class _Keep:
    """``regenerate_id(idle_timeout=...)`` left out: keep the session's own."""


_KEEP = _Keep()


def _check_idle(value: object) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, timedelta) or value < timedelta(seconds=1):
        raise SessionError("idle_timeout must be a timedelta of at least one second, or None")
    return value


class Session(MutableMapping[str, Any]):
    """One request's session: a ``MutableMapping`` plus the lifecycle API."""

    # A request that never touches its session pays for two attributes: the rest
    # is created on first access.
    _state: SessionState | None = None
    _headers: list[tuple[str, str]] | None = None
    _saved_headers: list[tuple[str, str]] | None = None
    _data: dict[str, Any]
    _changes: dict[str, Any]

    def __init__(self, settings: SessionSettings, environ: dict[str, Any]) -> None:
        self._settings = settings
        self._environ = environ

    # ---------------------------------------------------------------- loading

    @property
    def https(self) -> bool:
        """Whether this request came over https (as the WSGI server reports it)."""
        return self._environ.get("wsgi.url_scheme") == "https"

    @property
    def accessed(self) -> bool:
        """True once the application has looked at the session in this request."""
        return self._state is not None

    def _load(self) -> SessionState:
        state = self._state
        if state is not None:
            return state
        state = SessionState()
        # Set only once loaded: a failure (database down) retries on the next access
        # instead of starting afresh.
        self._data = load_session(self._settings, self._environ, state)
        self._changes = {}
        self._state = state
        return state

    @property
    def _log_id(self) -> str:
        sid = self._state.sid if self._state is not None else None
        return log_id(hash_session_id(sid)) if sid else "-"

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
            value = packed.value(key)
        except CodecError as exc:
            security_log.error(
                "session %s: a stored value cannot be decoded (%s); dropped", self._log_id, exc
            )
            del self._data[key]
            return _MISSING
        self._data[key] = value
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._write(key, value, Dirty.FULL)

    def __delitem__(self, key: str) -> None:
        state = self._load()
        del self._data[key]
        self._changes[key] = DELETED
        state.dirty = Dirty.FULL

    def clear(self) -> None:
        state = self._load()
        if self._data:
            self._changes.update(dict.fromkeys(self._data, DELETED))
            self._data.clear()
            state.dirty = Dirty.FULL

    def __repr__(self) -> str:
        active = self._state is not None and self._state.active
        size = len(self._data) if self._state is not None else "?"
        return f"<Session {'active' if active else 'inactive'} {self._log_id} keys={size}>"

    def _write(self, key: str, value: Any, level: Dirty) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        state = self._load()
        if not state.active:
            self._begin(None, ssl_only=False)
        self._data[key] = value
        self._changes[key] = value
        if level > state.dirty:
            state.dirty = level

    def set_quick(self, key: str, value: Any) -> None:
        """Set a value written to the cached copy only (fast; lost if the cache drops it).

        A session not stored server-side yet (or not cached) is saved in full.
        """
        self._write(key, value, Dirty.QUICK)

    def pop_quick(self, key: str, default: Any = None) -> Any:
        """Remove a value with a cache-only write; returns ``default`` when missing."""
        state = self._load()
        if key not in self._data:
            return default
        value = self._data.pop(key)
        self._changes[key] = DELETED
        if state.dirty < Dirty.QUICK:
            state.dirty = Dirty.QUICK
        if type(value) is Packed:
            try:
                return value.value(key)
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
        self._write(key, current + delta, Dirty.FULL)
        if previous is _MISSING or type(previous) is Increment:
            total = delta + (previous.delta if type(previous) is Increment else 0)
            self._changes[key] = Increment(total)
        result: int | float = self._data[key]
        return result

    def mark_changed(self, key: str) -> None:
        """Declare that the value under ``key`` was changed in place."""
        state = self._load()
        if key in self._data:
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                self._changes[key] = value
                state.dirty = Dirty.FULL

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser (Flask's name for it).

        False sends a browser-session cookie (no ``Expires``/``Max-Age``) for this
        session from now on; the session's own expiry still applies.  The default is
        the middleware's ``persistent`` option.
        """
        state = self._load()
        return state.persistent if state.active else self._settings.persistent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        state = self._load()
        if not state.active:
            self._begin(None, ssl_only=False)
        if bool(value) != state.persistent:
            state.persistent = bool(value)
            state.reissue = True

    @property
    def new(self) -> bool:
        """True when the session was begun in this request (Flask's ``SessionMixin.new``)."""
        return self._state is not None and self._state.created

    @property
    def modified(self) -> bool:
        """True when a full save is pending; set it to force one (every key counts as set)."""
        return self._state is not None and self._state.dirty is Dirty.FULL

    @modified.setter
    def modified(self, value: bool) -> None:
        state = self._load()
        if value and state.active:
            for key in list(self._data):
                self.get(key)  # decode stored values: each now counts as set
            self._changes.update(self._data)
            state.dirty = Dirty.FULL

    # ---------------------------------------------------------------- helpers

    def no_touch(self) -> None:
        """Keep this request from extending the idle timer (a polling endpoint, say).

        The request still reads and writes the session; it just does not count as
        activity, so an idle timeout ends a session that only polls.
        """
        state = self._load()
        state.no_touch = True
        state.touch_due = False

    def flash(self, message: Any, category: str = "message") -> None:
        """Keep a message for the next page that calls :meth:`pop_flashed` (after a
        redirect, say); several can wait, in order."""
        if not isinstance(category, str):
            raise TypeError("a flash category must be a str")
        self._load()
        waiting = list(self.get(_FLASHES_KEY) or [])
        waiting.append((category, message))
        self[_FLASHES_KEY] = waiting

    def pop_flashed(self, with_categories: bool = False) -> list[Any]:
        """The messages flashed since the last call, oldest first, and forget them.

        ``with_categories=True`` gives ``(category, message)`` pairs.  With nothing
        flashed this neither starts a session nor writes anything.
        """
        state = self._load()
        if not state.active or _FLASHES_KEY not in self._data:
            return []
        waiting = self.get(_FLASHES_KEY) or []
        del self[_FLASHES_KEY]
        pairs = [tuple(item) for item in waiting if isinstance(item, (list, tuple))]
        if with_categories:
            return [(category, message) for category, message in pairs]
        return [message for _, message in pairs]

    def csrf_token(self) -> str:
        """A token to put in forms: the same for the whole session, a new one after
        :meth:`regenerate_id` (at login).  A visitor without a session gets one (a login
        form needs the token to last until it is posted)."""
        self._load()
        token = self.get(_CSRF_KEY)
        if not isinstance(token, str) or len(token) != _CSRF_LENGTH:
            token = secrets.token_urlsafe(32)
            self[_CSRF_KEY] = token
        return token

    def check_csrf(self, token: object) -> bool:
        """Whether ``token`` is this session's CSRF token (compared in constant time).

        False for None, an empty or malformed value, another session's token, or when
        the session has no token yet.
        """
        if not isinstance(token, str) or not token or not token.isascii():
            return False
        state = self._load()
        expected = self.get(_CSRF_KEY) if state.active else None
        if not isinstance(expected, str):
            return False
        return hmac.compare_digest(expected.encode("ascii"), token.encode("ascii"))

    def revoke_others(self, *criteria: Any) -> int:
        """End every other stored session matching SQL criteria on the model ("log out my
        other sessions"), keeping this one; returns how many ended.

        Example: ``session.revoke_others(WebSession.user_id == session["user_id"])``.
        """
        if not criteria:
            raise ValueError("revoke_others() needs at least one criterion, e.g. the user")
        store = self._settings.store
        if store is None:
            raise SessionError("revoke_others() needs a SessionStore")
        state = self._load()
        keep = [store.table.c.id != hash_session_id(state.sid)] if state.sid else []
        count = store.revoke(*criteria, *keep)
        self._hook("on_revoked", count, criteria)
        return count

    # ---------------------------------------------------------------- lifecycle

    @property
    def sid(self) -> str | None:
        """The session id, or None while no session is active."""
        return self._load().sid

    @property
    def hashed_id(self) -> str | None:
        """The SHA-256 hex of the id, the row's primary key (None while no session is
        active): what ``store.sessions()`` lists and SQL matches, never usable as a
        cookie."""
        sid = self._load().sid
        return hash_session_id(sid) if sid else None

    @property
    def expires_at(self) -> datetime | None:
        """The absolute expiry (aware UTC), or None while no session is active."""
        return self._load().expires_at

    def is_active(self) -> bool:
        """True when this request has a live session (loads it to be sure)."""
        return self._load().active

    def is_ssl_only(self) -> bool:
        state = self._load()
        return state.active and state.ssl_only

    def start(
        self,
        expiration: Expiration = None,
        ssl_only: bool = False,
        *,
        expiration_ts: float | None = None,
        idle_timeout: timedelta | None = None,
    ) -> None:
        """Begin a new empty session, discarding (and deleting) any active one.

        ``expiration`` is this session's absolute end and ``idle_timeout`` its own idle
        timeout (both default to the application's): a "remember me" login is
        ``start(expiration=timedelta(days=30), idle_timeout=timedelta(days=7))``.
        ``expiration_ts`` is the original gae-sessions keyword (Unix seconds).
        """
        self._load()
        expiration = _one_expiration(expiration, expiration_ts)
        idle = _check_idle(idle_timeout)
        if ssl_only:
            self._settings.policy.is_secure(https=self.https, ssl_only=True)  # config check
        self._discard_server_copy(EndReason.ENDED)
        self._begin(expiration, ssl_only=ssl_only, idle_timeout=idle)

    def regenerate_id(
        self,
        expiration: Expiration = None,
        *,
        expiration_ts: float | None = None,
        idle_timeout: timedelta | _Keep | None = _KEEP,
    ) -> None:
        """Move the data to a new id and delete the old one at once (call it at login).

        The session keeps its expiry, idle timeout and cookie kind unless ``expiration``
        or ``idle_timeout`` say otherwise (``idle_timeout=None``: the application's).
        The CSRF token changes with the id.
        """
        state = self._load()
        expiration = _one_expiration(expiration, expiration_ts)
        if not state.active:
            if expiration is not None or idle_timeout is not _KEEP:
                own = None if isinstance(idle_timeout, _Keep) else idle_timeout
                self.start(expiration, idle_timeout=own)
            return
        old = self._log_id
        old_sid = state.sid
        self._discard_server_copy(EndReason.REPLACED)
        for key in list(self._data):
            self.get(key)  # decode stored values: they are stored again under the new id
        self._data.pop(_CSRF_KEY, None)
        state.regenerated(
            new_session_id(),
            self._resolve_expiration(expiration) if expiration is not None else None,
        )
        if not isinstance(idle_timeout, _Keep):
            state.idle_timeout = _check_idle(idle_timeout)
        self._changes = dict(self._data)
        log.info("session %s regenerated as %s", old, self._log_id)
        if old_sid is not None and state.sid is not None:
            self._hook("on_regenerated", hash_session_id(old_sid), hash_session_id(state.sid))

    def terminate(self) -> None:
        """End the session: server copy deleted now, cookie expired in the response."""
        state = self._load()
        if state.active:
            log.info("session %s terminated", self._log_id)
            self._discard_server_copy(EndReason.ENDED)
            if state.sid is not None and not (state.phase is Phase.NEW and not state.announced):
                self._hook("on_ended", hash_session_id(state.sid))
        state.ended()
        self._data = {}
        self._changes = {}

    def save(self, persist_even_if_using_cookie: bool = False) -> None:
        """Save now instead of when the response starts (errors then reach the caller).

        With ``persist_even_if_using_cookie=True`` a session small enough for its
        cookie is kept server-side from now on, so that it can be revoked.  A later
        change in the same request is saved again when the response starts.
        """
        state = self._load()
        if persist_even_if_using_cookie and state.active and not state.keep_on_server:
            state.keep_on_server = True
            if state.phase is Phase.COOKIE:
                state.dirty = Dirty.FULL
        headers = self._save()
        if headers:
            self._saved_headers = headers

    def _begin(
        self, expiration: Expiration, *, ssl_only: bool, idle_timeout: timedelta | None = None
    ) -> None:
        state = self._load()
        now = self._settings.clock()
        state.begun(
            new_session_id(),
            self._resolve_expiration(expiration),
            now,
            ssl_only,
            self._settings.persistent,
            idle_timeout,
        )
        self._data = {}
        self._changes = {}
        log.debug("session %s started", self._log_id)

    def _resolve_expiration(self, expiration: Expiration) -> datetime:
        now = self._settings.clock()
        if expiration is None:
            return now + self._settings.lifetime
        if isinstance(expiration, timedelta):
            resolved = now + expiration
        elif isinstance(expiration, datetime):
            if expiration.tzinfo is None:
                raise SessionError("expiration must be an aware datetime (e.g. in UTC)")
            resolved = expiration.astimezone(UTC)
        elif isinstance(expiration, (int, float)) and not isinstance(expiration, bool):
            try:
                resolved = from_micros(round(expiration * 1_000_000))
            except (OverflowError, ValueError) as exc:
                raise SessionError("expiration is not a usable Unix time") from exc
        else:
            raise TypeError("expiration must be a datetime, a timedelta, Unix seconds or None")
        if resolved <= now:
            # gae-sessions read 0 as "never expires"; a session born dead is always a bug.
            raise SessionError(
                "expiration is not in the future (pass None for the default lifetime)"
            )
        return resolved

    def _discard_server_copy(self, reason: EndReason) -> None:
        state = self._load()
        store = self._settings.store
        record = state.record
        if store is not None and state.phase is Phase.STORED and state.sid is not None:
            store.delete(
                state.sid, reason=reason, cache_only=record.cache_only if record else False
            )
            state.record = None

    # ---------------------------------------------------------------- response

    def _save(self) -> list[tuple[str, str]]:
        state = self._state
        if state is None:
            return []
        saver = Saver(self._settings, self._environ, state, self._data, self._changes)
        headers = saver.save()
        self._data = saver.data
        self._changes = {}
        state.dirty = Dirty.CLEAN
        state.touch_due = False
        if headers:
            state.key_index = 0  # whatever was sent is signed with the current key
            state.reissue = False
            if state.created and not state.announced and state.active and state.sid:
                state.announced = True
                self._hook("on_created", hash_session_id(state.sid))
        return headers

    def _hook(self, name: str, *args: object) -> None:
        call_hook(self._settings.hooks, name, *args)

    def finalize(self) -> list[tuple[str, str]]:
        """Save if needed (once) and return the response headers to add.

        Called by the middleware when the response starts; later calls return the
        same headers.  A failed save leaves no headers behind.
        """
        if self._headers is not None:
            return self._headers
        self._headers = []
        if self._state is None:
            return self._headers
        headers = self._save() or self._saved_headers or []
        if headers:
            headers = [*headers, ("Cache-Control", "no-store")]
        self._headers = headers
        return headers


def _one_expiration(expiration: Expiration, expiration_ts: float | None) -> Expiration:
    if expiration_ts is None:
        return expiration
    if expiration is not None:
        raise TypeError("pass expiration or expiration_ts, not both")
    return expiration_ts
