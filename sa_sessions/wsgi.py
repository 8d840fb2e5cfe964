"""SessionMiddleware: plain PEP 3333 sessions for any WSGI application.

The middleware puts a lazy :class:`~sa_sessions.session.Session` in
``environ["sa_sessions.session"]`` and in a context variable (for
:func:`get_current_session`), and saves it when the application calls
``start_response``, appending ``Set-Cookie`` whatever the status: 200,
redirects, errors and 500 pages all carry it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from contextvars import ContextVar
from contextvars import Token
from typing import TYPE_CHECKING
from typing import Any

from .exceptions import SessionBackendUnavailable
from .exceptions import SessionConfigError
from .exceptions import SessionError
from .session import Session
from .settings import SessionSettings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

    from .store import SessionStore

log = logging.getLogger("sa_sessions.wsgi")

#: Where the request's Session is stored in the WSGI environ.
ENVIRON_KEY = "sa_sessions.session"

_current: ContextVar[Session | None] = ContextVar("sa_sessions.current", default=None)


def get_current_session() -> Session:
    """The Session of the request being handled (threads and greenlets are isolated).

    :raises SessionError: when called outside a request served by SessionMiddleware.
    """
    session = _current.get()
    if session is None:
        raise SessionError(
            "get_current_session() was called outside a request handled by "
            "SessionMiddleware or FlaskSessionInterface"
        )
    return session


def bind_current(session: Session) -> Token[Session | None]:
    """Make ``session`` what :func:`get_current_session` returns in this context.

    For framework adapters that open the session themselves; pass the token to
    :func:`unbind_current` when the request ends.
    """
    return _current.set(session)


def unbind_current(token: Token[Session | None]) -> None:
    """Undo :func:`bind_current` (from another context: just clear the current session)."""
    try:
        _current.reset(token)
    except (ValueError, RuntimeError):  # the token was made in another context
        _current.set(None)


def _merge_headers(
    headers: list[tuple[str, str]], extra: list[tuple[str, str]], accessed: bool
) -> list[tuple[str, str]]:
    if not extra and not accessed:
        return headers
    if extra:
        headers = [(k, v) for k, v in headers if k.lower() != "cache-control"] + extra
    if accessed:
        vary = [v for k, v in headers if k.lower() == "vary"]
        if not any("cookie" in v.lower() or v.strip() == "*" for v in vary):
            headers = [*headers, ("Vary", "Cookie")]
    return headers


class SessionMiddleware:
    """Wrap ``app`` so every request gets a lazy Session; see the module docstring.

    ``store=None`` allows cookie sessions only (a session outgrowing the cookie
    raises :class:`~sa_sessions.SessionTooLarge` at save).  Other keyword options
    are those of :meth:`SessionSettings.build` (``cookie_key``, ``lifetime``,
    ``cookie_only_threshold``, ``no_datastore``, ``cookie_name``, ``secure``,
    ``samesite``, ``domain``, ``path``, ``host_prefix``, ``idle_timeout``,
    ``encrypt_cookies``, ``max_cookie_header_bytes``, ``persistent``,
    ``partitioned``, ``clock``).

    When the session database is unreachable the response is a plain
    ``backend_error_status`` page (default 503) instead of a traceback, and no
    cookie is sent.
    """

    def __init__(
        self,
        app: WSGIApplication,
        store: SessionStore[Any] | None = None,
        *,
        backend_error_status: str = "503 Service Unavailable",
        backend_error_body: bytes = b"Sessions are temporarily unavailable; please retry.\n",
        settings: SessionSettings | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        if settings is not None and (store is not None or options):
            raise SessionConfigError("pass either prebuilt settings or store/options, not both")
        self.settings = (
            settings if settings is not None else SessionSettings.build(store, **options)
        )
        self.backend_error_status = backend_error_status
        self.backend_error_body = backend_error_body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        session = Session(self.settings, environ)
        environ[ENVIRON_KEY] = session
        token = _current.set(session)
        failure: SessionBackendUnavailable | None = None

        def session_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            nonlocal failure
            if session.accessed:  # an untouched session has nothing to save or add
                try:
                    extra = session.finalize()
                except SessionBackendUnavailable as exc:
                    failure = exc
                    return self._backend_error(start_response, exc)
                headers = _merge_headers(headers, extra, True)
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, session_start_response)
        except SessionBackendUnavailable as exc:
            self._backend_error(start_response, exc, sys.exc_info())
            return [self.backend_error_body]
        finally:
            _current.reset(token)
        if failure is not None:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return [self.backend_error_body]
        if type(result) is list or isinstance(result, (list, tuple)):
            return result
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            return result  # keep the server's sendfile path
        return _InRequest(result, session)

    def _backend_error(
        self,
        start_response: StartResponse,
        exc: SessionBackendUnavailable,
        exc_info: Any = None,
    ) -> Callable[[bytes], object]:
        log.error("session backend unavailable: %s", exc)
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(self.backend_error_body))),
            ("Cache-Control", "no-store"),
            ("Retry-After", "5"),
        ]
        return start_response(self.backend_error_status, headers, exc_info)


class _InRequest:
    """The app's response iterable, run with its session current (streaming bodies).

    A generator body executes after the app returned; without this,
    :func:`get_current_session` inside it would raise.
    """

    def __init__(self, result: Iterable[bytes], session: Session) -> None:
        self._result = result
        self._session = session
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        token = _current.set(self._session)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        finally:
            _current.reset(token)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            token = _current.set(self._session)
            try:
                close()
            finally:
                _current.reset(token)
