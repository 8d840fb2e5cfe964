"""SessionSettings: everything a request's Session needs, validated once at startup.

The WSGI middleware and the Bottle plugin build one of these from their keyword
arguments; a :class:`~sa_sessions.session.Session` only reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from typing import Any

from ._clock import Clock
from ._clock import utcnow
from .cookies import DEFAULT_MAX_HEADER_BYTES
from .cookies import MAX_COOKIE_BYTES
from .cookies import CookieCodec
from .cookies import CookiePolicy
from .cookies import SameSite
from .exceptions import SessionConfigError
from .hooks import NO_HOOKS
from .hooks import Hooks
from .hooks import check_hooks
from .signing import KeyInput
from .store import SessionStore


@dataclass(frozen=True)
class SessionSettings:
    """Validated configuration shared by every request of one application."""

    store: SessionStore[Any] | None
    cookies: CookieCodec
    policy: CookiePolicy
    lifetime: timedelta = timedelta(days=7)
    idle_timeout: timedelta | None = None
    #: Fraction of the idle window after which a read-only request refreshes the touch time.
    idle_touch_fraction: float = 0.1
    #: Largest Set-Cookie line that may carry session data; 0 keeps all data server-side.
    cookie_only_threshold: int = MAX_COOKIE_BYTES
    no_datastore: bool = False
    max_cookie_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    #: Cookies with an expiry (True), or browser-session cookies (False) by default.
    persistent: bool = True
    #: Lifecycle hooks (see :mod:`sa_sessions.hooks`).
    hooks: Hooks = field(default_factory=lambda: NO_HOOKS)
    clock: Clock = field(default=utcnow)

    @classmethod
    def build(
        cls,
        store: SessionStore[Any] | None = None,
        *,
        cookie_key: KeyInput,
        lifetime: timedelta = timedelta(days=7),
        cookie_only_threshold: int = MAX_COOKIE_BYTES,
        no_datastore: bool = False,
        cookie_name: str = "session",
        secure: bool | None = None,
        samesite: SameSite = "lax",
        domain: str | None = None,
        path: str = "/",
        host_prefix: bool = True,
        idle_timeout: timedelta | None = None,
        encrypt_cookies: bool = False,
        max_cookie_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        persistent: bool = True,
        partitioned: bool = False,
        hooks: object = None,
        clock: Callable[[], Any] = utcnow,
    ) -> SessionSettings:
        """Check every option and build the shared settings (raises SessionConfigError)."""
        if not isinstance(lifetime, timedelta) or lifetime <= timedelta(0):
            raise SessionConfigError("lifetime must be a positive timedelta")
        if idle_timeout is not None and (
            not isinstance(idle_timeout, timedelta) or idle_timeout <= timedelta(0)
        ):
            raise SessionConfigError("idle_timeout must be a positive timedelta or None")
        if not 0 <= cookie_only_threshold <= MAX_COOKIE_BYTES:
            raise SessionConfigError(
                f"cookie_only_threshold must be between 0 and {MAX_COOKIE_BYTES} bytes"
            )
        if store is not None and not isinstance(store, SessionStore):
            raise SessionConfigError("store must be a SessionStore or None")
        if no_datastore and (store is None or store.cache is None):
            raise SessionConfigError("no_datastore=True needs a SessionStore with a cache region")
        if store is None and cookie_only_threshold == 0:
            raise SessionConfigError(
                "cookie_only_threshold=0 keeps every session server-side, which needs a store"
            )
        if (
            isinstance(max_cookie_header_bytes, bool)
            or not isinstance(max_cookie_header_bytes, int)
            or max_cookie_header_bytes < 1
        ):
            raise SessionConfigError("max_cookie_header_bytes must be a positive int")
        policy = CookiePolicy(
            cookie_name,
            path=path,
            domain=domain,
            secure=secure,
            samesite=samesite,
            host_prefix=host_prefix,
            partitioned=partitioned,
        )
        cookies = CookieCodec(cookie_key, cookie_name=cookie_name, encrypt=encrypt_cookies)
        return cls(
            store=store,
            cookies=cookies,
            policy=policy,
            lifetime=lifetime,
            idle_timeout=idle_timeout,
            cookie_only_threshold=cookie_only_threshold,
            no_datastore=no_datastore,
            max_cookie_header_bytes=max_cookie_header_bytes,
            clock=clock,
            persistent=bool(persistent),
            hooks=check_hooks(hooks),
        )
