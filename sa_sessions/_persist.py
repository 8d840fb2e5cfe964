"""Saving a Session at response time: cookie or server, and merging on conflict.

The decision, once per request and only when something changed:

1. no active session            -> expire the cookie if the client sent one;
2. an emptied session           -> delete the server copy and expire the cookie;
   a new, still-empty session   -> nothing at all (no row, no cookie);
3. data fits one cookie         -> a signed data cookie; any stale server copy is deleted;
4. otherwise                    -> the store (versioned UPDATE or INSERT; cache-only for
                                   quick writes and ``no_datastore``) and a signed id cookie.

A version conflict re-reads the fresh row under a row lock, re-applies only this
request's changed keys and UPDATEs it in the same transaction (bounded retries
where no row lock exists); a row deleted meanwhile stays deleted.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import exc as sa_exc

from ._clock import to_micros
from .codec.blob import BlobMeta
from .codec.blob import Packed
from .codec.blob import unpacked
from .cookies import CookieState
from .exceptions import CodecError
from .exceptions import SessionConflict
from .exceptions import SessionTooLarge
from .ids import hash_session_id
from .session import FULL
from .session import QUICK
from .session import Deleted
from .session import Increment
from .session import Session
from .store import CACHE_ONLY_VERSION
from .store import CHANGED
from .store import StoredSession

log = logging.getLogger("sa_sessions.session")

#: Backoff before another locked merge when one lost the race anyway (databases
#: without row locks: SQLite): a random pause of up to ``_BACKOFF_BASE * 2**attempt``
#: seconds (capped), so that a burst of parallel writers spreads out.
_BACKOFF_BASE = 0.004
_BACKOFF_CAP = 0.1

Headers = list[tuple[str, str]]


def save_session(session: Session) -> Headers:
    """Persist ``session`` if needed; return the ``Set-Cookie`` headers to send."""
    s = session
    if s._sid is None:
        return _delete_cookie(s) if s._cookie_delete else []
    if not s._data:
        if s._record is None and not s._in_cookie:
            # New and empty: never stored, no cookie (R38); but a cookie of a session
            # discarded by start()/regenerate_id() must not survive it.
            return _delete_cookie(s) if s._cookie_delete else []
        if s._dirty:
            s.terminate()
            return _delete_cookie(s)
    if not (s._dirty or s._touch_due or s._resign):
        return []
    now = s._settings.clock()
    if s._dirty or s._touch_due:
        s._touched_at = now
    elif s._record is not None:  # only a re-sign with the current key is due
        signed_id = s._settings.cookies.encode(_state(s, "id", now))
        return [("Set-Cookie", _set_cookie(s, signed_id, now))]
    value = _data_cookie(s, now)
    if value is not None and s._record is not None and s._record.in_database:
        # Moving back into the cookie: only if the row still exists (a logout in a
        # parallel request must not come back as a data cookie, R36), and with the
        # changes of any request that saved since this one loaded (R37).
        store = s._settings.store
        assert store is not None and s._sid is not None
        fresh = store.load_fresh(s._sid, lazy=True)
        if fresh is None:
            return _dropped(s)
        if fresh.version != s._record.version:
            s._record = fresh
            s._data = merge_changes(fresh.data, s._changes)
            if not s._data:
                s.terminate()  # deletes the row, then expires the cookie
                return _delete_cookie(s)
            value = _data_cookie(s, now)
    if value is not None:
        if s._record is not None:
            s._discard_server_copy()  # moved back into the cookie
        return [("Set-Cookie", value)]
    return _save_on_server(s, now)


def _dropped(s: Session, *, row_gone: bool = True) -> Headers:
    """The server copy was deleted by another request (logout, regeneration): drop this one.

    No Set-Cookie at all: deleting the cookie could remove the new cookie that a
    parallel ``regenerate_id()`` just issued, and re-issuing it would resurrect it.
    When the database said the row is gone, a cached copy can only be stale (e.g. a
    refill that raced the logout): it is deleted too, so reads stop seeing it.
    """
    log.info("session %s was deleted by another request; not saved", s._log_id)
    store = s._settings.store
    if row_gone and store is not None and store.cache is not None and s._sid is not None:
        store.cache.delete(hash_session_id(s._sid))
    s._record = None
    s._sid = None
    s.terminate()  # resets the state; with no sid it deletes nothing
    s._cookie_delete = False
    return []


def _delete_cookie(s: Session) -> Headers:
    secure = s._settings.policy.is_secure(https=s.https, ssl_only=False)
    return [("Set-Cookie", s._settings.policy.delete_cookie_header(secure=secure))]


def _set_cookie(s: Session, value: str, now: Any) -> str:
    settings = s._settings
    secure = settings.policy.is_secure(https=s.https, ssl_only=s._ssl_only)
    assert s._expires_at is not None
    return settings.policy.set_cookie_header(
        value, secure=secure, expires_at=s._expires_at, now=now
    )


def _state(s: Session, kind: Any, now: Any) -> CookieState:
    assert s._sid is not None and s._expires_at is not None and s._touched_at is not None
    return CookieState(
        kind=kind,
        session_id=s._sid,
        issued_at=now,
        expires_at=s._expires_at,
        ssl_only=s._ssl_only,
        data=s._data if kind == "data" else None,
        extra={"t": to_micros(s._touched_at)},
    )


def _data_cookie(s: Session, now: Any) -> str | None:
    """The Set-Cookie line carrying the whole session, or None if it must go server-side."""
    settings = s._settings
    if settings.cookie_only_threshold == 0:
        return None
    store = settings.store
    if store is not None and store.has_derived_values(s._data):
        return None  # revocable sessions (derived columns) always live server-side
    if _far_over_budget(s):
        return None
    try:
        s._data = unpacked(s._data)  # a cookie carries values, not stored bytes
    except CodecError:
        return None  # an undecodable value: leave the session where it is
    try:
        value = settings.cookies.encode(_state(s, "data", now))
    except (TypeError, SessionTooLarge):
        if store is None:
            raise
        return None  # too big, or a value the cookie codec cannot carry: server-side
    header = _set_cookie(s, value, now)
    if len(header) <= settings.cookie_only_threshold:
        return header
    if store is None:
        raise SessionTooLarge(len(header), settings.cookie_only_threshold, "cookie")
    return None


def _far_over_budget(s: Session) -> bool:
    """Skip encoding a cookie that cannot fit: it cost a third of a large session's save.

    A server-side session whose last stored blob was over twice the cookie budget
    is only re-tried as a cookie when this request removed keys; a value replaced
    by a smaller one moves it back at the next save, when the stored size is known.
    """
    record = s._record
    if record is None or record.blob_size <= 2 * s._settings.cookie_only_threshold:
        return False
    return not any(isinstance(change, Deleted) for change in s._changes.values())


def _save_on_server(s: Session, now: Any) -> Headers:
    settings = s._settings
    store = settings.store
    assert store is not None and s._sid is not None and s._expires_at is not None
    meta = BlobMeta(expires_at=s._expires_at, touched_at=now, ssl_only=s._ssl_only)
    cache_only = settings.no_datastore or (s._dirty == QUICK and store.cache is not None)
    saved: StoredSession | None = None
    if cache_only:
        current = s._record
        if current is None:  # begun in this request: nothing to resurrect
            saved = store.save_cache_only(s._sid, s._data, meta, version=CACHE_ONLY_VERSION)
        else:
            # Only while the cache still holds the version this request loaded: a blind
            # write would bring back a session that a logout or revoke just deleted.
            saved = store.save_cache_only(
                s._sid, s._data, meta, version=current.version, only_if_cached=True
            )
            if saved is None and (settings.no_datastore or not current.in_database):
                return _dropped(s, row_gone=False)  # the cache was its only copy: gone
    if saved is None:  # a full write, or a quick one whose cached copy changed
        saved = _write_row(s, meta)
        if saved is None:
            return _dropped(s)
    s._record = saved
    if s._cookie_current:
        return []
    s._cookie_current = True
    s._in_cookie = False
    value = settings.cookies.encode(_state(s, "id", now))
    return [("Set-Cookie", _set_cookie(s, value, now))]


def _write_row(s: Session, meta: BlobMeta) -> StoredSession | None:
    """INSERT or versioned UPDATE with per-key merge; None if the row was deleted.

    The first UPDATE is optimistic.  On a version conflict the row is re-read
    under a row lock, this request's changed keys are re-applied and it is
    UPDATEd in the same transaction: parallel writers queue on the lock instead
    of retrying, so any number of them succeed on MySQL/MariaDB and PostgreSQL.
    Without row locks (SQLite) a locked merge can still lose the race; it is
    retried with a jittered backoff, ``merge_retries`` times in all.
    """
    store = s._settings.store
    assert store is not None and s._sid is not None
    record = s._record
    if record is None:
        try:
            return store.create(s._sid, s._data, meta)
        except sa_exc.IntegrityError:
            record = store.load_fresh(s._sid, lazy=True)  # a parallel request stored it first
            if record is None:
                return None
            s._data = merge_changes(record.data, s._changes)
    saved = store.update(record, s._data, meta)
    if saved is not None:
        return saved
    if not s._dirty:  # only an idle touch: the concurrent save touched it too
        return store.load_fresh(s._sid, lazy=True)
    changes = s._changes
    for attempt in range(s._settings.merge_retries):
        log.info("session %s changed concurrently; merging %d keys", s._log_id, len(changes))
        outcome = store.update_locked(
            s._sid, lambda fresh: merge_changes(fresh, changes), meta, lazy=True
        )
        if outcome is None:
            return None
        if outcome != CHANGED:
            s._data = dict(outcome.data)
            return outcome
        time.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))
    raise SessionConflict(
        f"session {s._log_id} kept changing concurrently; gave up after "
        f"{s._settings.merge_retries} merges"
    )


def merge_changes(fresh: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Apply one request's per-key changes on top of data saved by another request."""
    merged = dict(fresh)
    for key, change in changes.items():
        if isinstance(change, Deleted):
            merged.pop(key, None)
        elif isinstance(change, Increment):
            base = merged.get(key, 0)
            if type(base) is Packed:
                try:
                    base = base.value()
                except CodecError:
                    base = 0
            ok = isinstance(base, (int, float)) and not isinstance(base, bool)
            merged[key] = (base if ok else 0) + change.delta
        else:
            merged[key] = change
    return merged


__all__ = ["FULL", "merge_changes", "save_session"]
