"""The first access to a request's session: which session the browser's cookie leads to.

Only the library's own cookie name is read, from the raw ``Cookie`` header
(bounded, tolerant).  Duplicate values are dropped before anything is
verified, at most :data:`MAX_LOOKUPS` distinct sessions are looked up, and the
first cookie that verifies and leads to a live session wins.  A cookie that
leads nowhere (tampered, expired, unknown, ended) leaves the state
``Presented.DEAD``, so the response can expire it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

from ._clock import from_micros
from .cache.entry import EndReason
from .cookies import CookieState
from .cookies import read_cookie_values
from .hooks import call_hook
from .ids import hash_session_id
from .ids import log_id
from .state import Presented
from .state import SessionState
from .store import StoredSession

if TYPE_CHECKING:
    from .settings import SessionSettings

log = logging.getLogger("sa_sessions.session")
security_log = logging.getLogger("sa_sessions.security")

#: Most distinct sessions one request may look up (a header can repeat cookies).
MAX_LOOKUPS = 3


def load_session(
    settings: SessionSettings, environ: Mapping[str, Any], state: SessionState
) -> dict[str, Any]:
    """Find the request's session, record it in ``state`` and return its data."""
    header = environ.get("HTTP_COOKIE")
    if not header:
        state.found_nothing(Presented.NOTHING)
        return {}
    https = environ.get("wsgi.url_scheme") == "https"
    name = settings.policy.name_to_read(https=https)
    values = read_cookie_values(header, name, max_header_bytes=settings.max_cookie_header_bytes)
    if not values:
        state.found_nothing(Presented.NOTHING)
        return {}
    if len(values) > 1:  # e.g. one planted by a sibling subdomain
        security_log.info("%d %s cookies in one request; using the first that verifies",
                          len(values), name)  # fmt: skip
    now = settings.clock()
    presented = Presented.DEAD
    looked_up: set[str] = set()
    for value in dict.fromkeys(values):  # each distinct value once, in header order
        cookie = settings.cookies.decode(value, now=now)
        if cookie is None or (cookie.ssl_only and not https):
            continue
        if cookie.kind == "data":
            data = _adopt_data_cookie(settings, cookie, now, state)
            if data is not None:
                return data
            continue
        if cookie.session_id in looked_up:
            continue
        if len(looked_up) == MAX_LOOKUPS:
            security_log.warning("more than %d session ids in one request; ignoring the rest",
                                 MAX_LOOKUPS)  # fmt: skip
            break
        looked_up.add(cookie.session_id)
        found = _adopt_id_cookie(settings, cookie, now, https, state)
        if isinstance(found, dict):
            return found
        if found is EndReason.REPLACED:
            presented = Presented.REPLACED
    state.found_nothing(presented)
    return {}


def _idle_for_too_long(idle: timedelta | None, touched_at: datetime, now: datetime) -> bool:
    if idle is not None and now - touched_at > idle:
        log.debug("session idle for longer than %s; starting a new one", idle)
        return True
    return False


def _touch_due(
    settings: SessionSettings, idle: timedelta | None, touched_at: datetime, now: datetime
) -> bool:
    return idle is not None and now - touched_at > idle * settings.idle_touch_fraction


def _own_idle(value: object) -> timedelta | None:
    """A data cookie's own idle timeout (whole seconds), if it carries one."""
    if type(value) is int and value > 0:
        return timedelta(seconds=value)
    return None


def _adopt_data_cookie(
    settings: SessionSettings, cookie: CookieState, now: datetime, state: SessionState
) -> dict[str, Any] | None:
    touched = cookie.extra.get("t")
    touched_at = from_micros(touched) if type(touched) is int else cookie.issued_at
    own = _own_idle(cookie.extra.get("i"))
    idle = own or settings.idle_timeout
    if _idle_for_too_long(idle, touched_at, now):
        return None
    state.adopted_cookie(
        cookie.session_id, cookie.expires_at, touched_at, cookie.ssl_only, cookie.key_index
    )
    state.persistent = cookie.extra.get("p") != 0
    state.idle_timeout = own
    state.touch_due = _touch_due(settings, idle, touched_at, now)
    _log_resign(state)
    return dict(cookie.data or {})


def _adopt_id_cookie(
    settings: SessionSettings,
    cookie: CookieState,
    now: datetime,
    https: bool,
    state: SessionState,
) -> dict[str, Any] | EndReason | None:
    store = settings.store
    if store is None:
        return None
    version = cookie.extra.get("v")
    min_version = version if type(version) is int and version > 0 else 0
    found = store.find(
        cookie.session_id,
        min_version=min_version,
        lazy=True,
        cache_only=settings.no_datastore,
    )
    if not isinstance(found, StoredSession):
        if found is EndReason.EXPIRED:
            call_hook(settings.hooks, "on_expired", hash_session_id(cookie.session_id))
        return found
    record = found
    if record.ssl_only and not https:
        return None
    idle = record.idle_timeout or settings.idle_timeout
    if _idle_for_too_long(idle, record.touched_at, now):
        if store.delete(
            record.session_id,
            reason=EndReason.EXPIRED,
            version=record.version,
            cache_only=record.cache_only,
        ):
            call_hook(settings.hooks, "on_expired", record.hashed_id)
        return None
    state.adopted_record(record, cookie.key_index, min_version)
    state.persistent = cookie.extra.get("p") != 0
    state.keep_on_server = record.pinned
    state.idle_timeout = record.idle_timeout
    state.touch_due = _touch_due(settings, idle, record.touched_at, now)
    _log_resign(state)
    return dict(record.data)


def _log_resign(state: SessionState) -> None:
    if state.cookie_due and state.sid is not None:
        log.info("session %s signed with an older key; re-signing",
                 log_id(hash_session_id(state.sid)))  # fmt: skip
