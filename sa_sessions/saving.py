"""Saving a request's session when the response starts: cookie or server, once.

The decision, only when something changed (or an idle touch or a re-sign is due):

1. no active session          -> expire the browser's cookie if it must go;
2. an emptied session         -> delete the stored copy and expire the cookie;
   a new, still-empty session -> nothing at all (no row, no cookie);
3. data fits one cookie       -> a signed data cookie; a stored copy is deleted
   (unless a parallel request changed it: its changes are merged first);
4. otherwise                  -> the store, and a signed id cookie naming the version
   saved, so the client's next request never accepts an older cached copy.

A session moving from its cookie into a row always gets a fresh id: a cookie
planted in a victim's browser then never names anybody's row, and every row's
versions start at 1 under an id no cache ever held.  Conflicts with parallel
writers are the store's business (:meth:`SessionStore.save` merges them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from itertools import compress
from itertools import repeat
from operator import is_not
from typing import TYPE_CHECKING
from typing import Any

from ._clock import to_micros
from .cache.entry import EndReason
from .changes import apply_changes
from .codec.blob import Packed
from .codec.blob import unpacked
from .cookies import CookieState
from .cookies import Kind
from .exceptions import CodecError
from .exceptions import SessionIdTaken
from .exceptions import SessionTooLarge
from .hooks import call_hook
from .ids import hash_session_id
from .ids import log_id
from .ids import new_session_id
from .state import Dirty
from .state import Phase
from .state import SessionState
from .store import StoredSession

if TYPE_CHECKING:
    from .settings import SessionSettings

log = logging.getLogger("sa_sessions.session")

Headers = list[tuple[str, str]]

#: Attempts at a fresh id when an INSERT finds its id taken (256-bit ids: never twice).
_FRESH_ID_ATTEMPTS = 3

#: A stored session is tried as a cookie again only when its untouched values take
#: at most this many times the cookie budget: session data seldom compresses better
#: than 4 to 1 in a cookie, and staying server-side is always correct.
COOKIE_RETRY_FACTOR = 4


def stored_bytes(data: Mapping[str, Any]) -> int:
    """Stored size of the values of ``data`` still in their stored form (not decoded)."""
    total = 0
    for packed in {value for value in data.values() if type(value) is Packed}:
        keys = packed.keys
        moved = compress(keys, map(is_not, map(data.get, keys), repeat(packed)))
        total += len(packed.values_view()) - sum(map(packed.size, moved))
    return total


class Saver:
    """One response's save: the settings, the request and the session's state, data, changes."""

    __slots__ = ("changes", "data", "environ", "settings", "state")

    def __init__(
        self,
        settings: SessionSettings,
        environ: Mapping[str, Any],
        state: SessionState,
        data: dict[str, Any],
        changes: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.environ = environ
        self.state = state
        self.data = data
        self.changes = changes

    @property
    def https(self) -> bool:
        return self.environ.get("wsgi.url_scheme") == "https"

    # ------------------------------------------------------------------ the decision

    def save(self) -> Headers:
        """Persist the session if needed; the ``Set-Cookie`` headers to send."""
        st = self.state
        if st.phase is Phase.UNLOADED:
            return []
        if not st.active:
            return self._expired_cookie() if st.expire_cookie else []
        if not self.data:
            if st.phase is Phase.NEW:  # new and empty: never stored, no cookie
                return self._expired_cookie() if st.expire_cookie else []
            if st.dirty:
                self.end()
                return self._expired_cookie()
        if not (st.dirty or st.touch_due or st.cookie_due):
            return []
        now = self.settings.clock()
        if (st.dirty or st.touch_due) and not st.no_touch:
            st.touched_at = now
        elif st.phase is Phase.STORED:  # only the cookie is due (a re-sign, `permanent`)
            return [self._id_cookie(now)]
        cookie = None if self._server_only() else self._data_cookie(now)
        if cookie is not None and st.phase is Phase.STORED:
            cookie = self._leave_server(cookie, now)
            if not st.active:  # deleted meanwhile, or emptied by a merge
                return self._expired_cookie() if st.expire_cookie else []
        if cookie is not None:
            st.moved_to_cookie()
            return [("Set-Cookie", cookie)]
        return self._save_server_side(now)

    def _server_only(self) -> bool:
        st, settings = self.state, self.settings
        if settings.cookie_only_threshold == 0 or st.keep_on_server:
            return True
        store = settings.store
        if store is not None and store.has_derived_values(self.data):
            return True  # revocable sessions (derived columns) always live server-side
        return self._far_over_budget()

    def _far_over_budget(self) -> bool:
        """True when the values still in stored form are too many bytes to try a cookie.

        Trying costs decoding every value, encoding them as JSON and compressing the
        lot, on every save.  A server-side session whose untouched values alone take
        more than :data:`COOKIE_RETRY_FACTOR` times the cookie budget therefore stays
        where it is without trying (it moves back once it shrinks under that); and a
        cookie's body is bounded before compression anyway (the decoder refuses more).
        """
        settings = self.settings
        bound = min(
            settings.cookies.max_decompressed_bytes,
            COOKIE_RETRY_FACTOR * settings.cookie_only_threshold,
        )
        return stored_bytes(self.data) > bound

    # ------------------------------------------------------------------ the cookie

    def _data_cookie(self, now: datetime) -> str | None:
        """The Set-Cookie value carrying the whole session, or None if it must go server-side."""
        settings, st = self.settings, self.state
        try:
            values = unpacked(self.data)  # a cookie carries values, not stored bytes
        except CodecError:
            return None  # an undecodable value: leave the session where it is
        assert st.touched_at is not None
        try:
            extra: dict[str, Any] = {"t": to_micros(st.touched_at)}
            if not st.persistent:
                extra["p"] = 0
            if st.idle_timeout is not None:
                extra["i"] = max(1, int(st.idle_timeout.total_seconds()))
            value = settings.cookies.encode(self._cookie_state("data", now, values, extra))
        except (TypeError, SessionTooLarge):
            if settings.store is None:
                raise
            return None  # too big, or a value the cookie codec cannot carry
        header = self._set_cookie(value, now)
        if len(header) <= settings.cookie_only_threshold:
            self.data = values
            return header
        if settings.store is None:
            raise SessionTooLarge(len(header), settings.cookie_only_threshold, "cookie")
        return None

    def _id_cookie(self, now: datetime) -> tuple[str, str]:
        """The id cookie, naming the version the client is being shown."""
        record = self.state.record
        assert record is not None
        extra: dict[str, Any] = {"v": record.version}
        if not self.state.persistent:
            extra["p"] = 0
        state = self._cookie_state("id", now, None, extra)
        return ("Set-Cookie", self._set_cookie(self.settings.cookies.encode(state), now))

    def _cookie_state(
        self, kind: Kind, now: datetime, data: dict[str, Any] | None, extra: dict[str, Any]
    ) -> CookieState:
        st = self.state
        assert st.sid is not None and st.expires_at is not None
        return CookieState(kind, st.sid, now, st.expires_at, st.ssl_only, data, 0, extra)

    def _set_cookie(self, value: str, now: datetime) -> str:
        policy, st = self.settings.policy, self.state
        assert st.expires_at is not None
        secure = policy.is_secure(https=self.https, ssl_only=st.ssl_only)
        return policy.set_cookie_header(
            value, secure=secure, expires_at=st.expires_at, now=now, persistent=st.persistent
        )

    def _expired_cookie(self) -> Headers:
        policy = self.settings.policy
        secure = policy.is_secure(https=self.https, ssl_only=False)
        return [("Set-Cookie", policy.delete_cookie_header(secure=secure))]

    # ------------------------------------------------------------------ the server

    def _leave_server(self, cookie: str, now: datetime) -> str | None:
        """Delete the stored copy of a session that fits its cookie again; its cookie.

        Only that exact version is deleted: if a parallel request saved meanwhile,
        its changes are merged first, and the result may no longer fit (None: save
        it server-side, on top of the fresh version).  When the session was deleted
        meanwhile it stays deleted: the state is no longer active and no data cookie
        brings it back.
        """
        st, store = self.state, self.settings.store
        assert store is not None and st.sid is not None
        for _ in range(max(1, store.merge_retries)):
            record = st.record
            assert record is not None
            if store.delete(st.sid, reason=EndReason.REPLACED, version=record.version,
                            cache_only=record.cache_only):  # fmt: skip
                return cookie
            fresh = store.load(
                st.sid, min_version=record.version + 1, lazy=True, cache_only=record.cache_only
            )
            if fresh is None:
                log.info("session %s was deleted by another request; not saved", self._log_id)
                st.dropped()
                return None
            self.data = apply_changes(fresh.data, self.changes)
            st.record = fresh
            if not self.data:
                self.end()
                return None
            fits = self._data_cookie(now)
            if fits is None:
                return None
            cookie = fits
        return None

    def _save_server_side(self, now: datetime) -> Headers:
        st, settings = self.state, self.settings
        store = settings.store
        assert store is not None and st.sid is not None and st.expires_at is not None
        cache_only = settings.no_datastore
        record = st.record
        saved: StoredSession | None = None
        if st.phase is Phase.STORED and record is not None:
            if st.dirty is Dirty.QUICK and not cache_only:
                saved = store.save_quick(record, self.data)
                if saved is not None:
                    st.stored(saved)
                    return [self._id_cookie(now)] if st.cookie_due else []
            saved = store.save(
                st.sid,
                self.data,
                expires_at=st.expires_at,
                base=record,
                changes=self.changes,
                touched_at=st.touched_at,
                ssl_only=st.ssl_only,
                pinned=st.keep_on_server,
                idle_timeout=st.idle_timeout,
                default_idle_timeout=settings.idle_timeout,
                environ=self.environ,
                cache_only=cache_only,
                lazy=True,
            )
            if saved is None:
                log.info("session %s was deleted by another request; not saved", self._log_id)
                st.dropped()
                return []
        else:
            # New on the server: a fresh id whenever the session had one elsewhere.
            sid = st.sid if st.phase is Phase.NEW else new_session_id()
            for _ in range(_FRESH_ID_ATTEMPTS):
                try:
                    saved = store.save(
                        sid,
                        self.data,
                        expires_at=st.expires_at,
                        touched_at=st.touched_at,
                        ssl_only=st.ssl_only,
                        pinned=st.keep_on_server,
                        idle_timeout=st.idle_timeout,
                        default_idle_timeout=settings.idle_timeout,
                        environ=self.environ,
                        cache_only=cache_only,
                    )
                    break
                except SessionIdTaken:
                    log.warning("session id %s already stored; using a fresh one",
                                log_id(hash_session_id(sid)))  # fmt: skip
                    sid = new_session_id()
            else:
                raise SessionIdTaken("no fresh session id could be stored")
        assert saved is not None
        self.data = dict(saved.data)
        st.stored(saved)
        return [self._id_cookie(now)]

    def end(self) -> None:
        """End the session now: stored copy deleted, cookie to be expired."""
        st, store = self.state, self.settings.store
        if st.phase is Phase.STORED and st.sid is not None and store is not None:
            record = st.record
            store.delete(st.sid, cache_only=record.cache_only if record is not None else False)
        if st.sid is not None and st.phase is not Phase.NEW:
            call_hook(self.settings.hooks, "on_ended", hash_session_id(st.sid))
        st.ended()
        self.data = {}
        self.changes = {}

    @property
    def _log_id(self) -> str:
        sid = self.state.sid
        return log_id(hash_session_id(sid)) if sid else "-"
