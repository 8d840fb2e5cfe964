"""FlaskSessionInterface: sa_sessions as Flask's ``session``.

``flask.session`` becomes the request's :class:`FlaskSession`, an sa_sessions
:class:`~sa_sessions.Session` that Flask, Flask-Login and Flask-WTF take for one of
their own (it mixes in Flask's ``SessionMixin``)::

    sessions = FlaskSessionInterface(store, cookie_key=os.environ["SESSION_KEY"])
    sessions.init_app(app)  # or: app.session_interface = sessions

    @app.get("/")
    def index() -> str:
        return f"visit {flask.session.get('visits', 0)}"

The session stays lazy: a view that never looks at it costs nothing and sets no
cookie.  It is saved once, by :meth:`FlaskSessionInterface.save_session`, on every
response Flask produces (redirects, ``abort()``, error pages, unhandled 500s), and
:func:`~sa_sessions.get_current_session` returns it during the request and in
teardown functions.  The cookie is sa_sessions' own: Flask's ``SESSION_COOKIE_*``,
``PERMANENT_SESSION_LIFETIME`` and ``SESSION_REFRESH_EACH_REQUEST`` settings are not
used (pass ``cookie_name``, ``secure``, ``samesite``, ``lifetime``, ``persistent``
... to the interface instead); ``SECRET_KEY`` is still needed by Flask-WTF and by
Flask-Login's remember cookie, not by the sessions.

This is the only module of sa_sessions that imports flask.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from typing import Any
from typing import cast

import flask
from flask.sessions import SessionInterface
from flask.sessions import SessionMixin
from flask.signals import got_request_exception
from flask.signals import request_tearing_down
from werkzeug.exceptions import ServiceUnavailable

from .exceptions import SessionBackendUnavailable
from .exceptions import SessionConfigError
from .session import Session
from .settings import SessionSettings
from .state import Presented
from .state import SessionState
from .wsgi import ENVIRON_KEY
from .wsgi import bind_current
from .wsgi import unbind_current

if TYPE_CHECKING:
    from werkzeug.datastructures import Headers

    from .store import SessionStore

log = logging.getLogger("sa_sessions.flask")

#: Where the first session opened for a request keeps its context-variable token.
_TOKEN_KEY = "sa_sessions.flask.token"

#: The text of the 503 page when the application has no handler of its own for 503.
UNAVAILABLE_MESSAGE = "Sessions are temporarily unavailable; please retry."


class FlaskSession(Session, SessionMixin):
    """The request's sa_sessions Session, usable wherever Flask expects its session.

    ``permanent``, ``new`` and ``modified`` are sa_sessions' own (Session comes first
    in the MRO, so they win over the mixin's class attributes): ``permanent`` is
    whether the cookie has an expiry, ``new`` whether the session was begun in this
    request, ``modified`` whether a full save is pending.

    When the session database fails during the request, the session is given up:
    the failure is raised once, after which the session reads as empty, is never
    saved and sends no cookie (the browser keeps its own, which works again once the
    database is back).  Functions that run after the failure, such as Flask-Login's
    remember-cookie hook, then neither wait on the dead database again nor fail.
    """

    _failure: SessionBackendUnavailable | None = None
    #: The failure reached Flask's 500 handling: the response must become the 503.
    _escaped: bool = False

    @property
    def accessed(self) -> bool:
        """True once the application has looked at the session in this request."""
        return super().accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        # Flask sets this on every ``flask.session`` lookup, before anything is read;
        # sa_sessions knows better (the session is accessed once it is loaded).
        pass

    @property
    def new(self) -> bool:
        """True when the session was begun in this request (read-only, as in Session)."""
        return super().new

    @new.setter
    def new(self, value: bool) -> None:
        # Restated only because the mixin declares a plain attribute: it stays read-only.
        raise AttributeError("FlaskSession.new is read-only")

    @property
    def failed(self) -> bool:
        """True once the session database failed in this request (the session is given up)."""
        return self._failure is not None

    def _load(self) -> SessionState:
        if self._state is not None:
            return self._state
        try:
            return super()._load()
        except SessionBackendUnavailable as exc:
            self._give_up(exc)
            raise

    def _give_up(self, failure: SessionBackendUnavailable) -> None:
        """Never save this session; if it never loaded, it reads as empty from now on."""
        if self._failure is None:
            self._failure = failure
        if self._state is None:
            state = SessionState()
            state.found_nothing(Presented.NOTHING)
            self._data = {}
            self._changes = {}
            self._state = state

    def save(self, persist_even_if_using_cookie: bool = False) -> None:
        """Save now (see :meth:`Session.save`); refused once the session was given up."""
        if self._failure is not None:
            raise SessionBackendUnavailable(
                "the session database failed earlier in this request", self._failure
            )
        super().save(persist_even_if_using_cookie)


#: ``flask.session``, typed as :class:`FlaskSession` for type checkers (the same proxy).
session: FlaskSession = cast(FlaskSession, flask.session)


def _request_session() -> FlaskSession | None:
    if not flask.has_request_context():
        return None
    found = flask.request.environ.get(ENVIRON_KEY)
    return found if isinstance(found, FlaskSession) else None


def _note_unhandled(sender: object, *, exception: BaseException, **extra: object) -> None:
    """``got_request_exception``: a session outage that reached Flask's 500 handling."""
    if isinstance(exception, SessionBackendUnavailable):
        found = _request_session()
        if found is not None:
            found._give_up(exception)
            found._escaped = True


def _forget_current(sender: object, **extra: object) -> None:
    """``request_tearing_down`` (after the teardown functions): end get_current_session()."""
    if flask.has_request_context():
        token = flask.request.environ.pop(_TOKEN_KEY, None)
        if token is not None:
            unbind_current(token)


def _add_headers(headers: Headers, extra: list[tuple[str, str]]) -> None:
    """Add the session's headers, as SessionMiddleware does for any WSGI app."""
    if extra:
        headers.remove("Cache-Control")  # ours says no-store: a cookie must not be cached
        for name, value in extra:
            headers.add(name, value)
    vary = headers.getlist("Vary")
    if not any("cookie" in v.lower() or v.strip() == "*" for v in vary):
        headers.add("Vary", "Cookie")


class FlaskSessionInterface(SessionInterface):
    """Flask session interface serving sa_sessions; see the module docstring.

    ``store=None`` allows cookie sessions only.  Other keyword options are those of
    :class:`~sa_sessions.SessionMiddleware` (see :meth:`SessionSettings.build`), or
    prebuilt ``settings``.  ``retry_after`` (seconds) goes in the ``Retry-After``
    header of the 503 answered when the session database is down.

    Why :meth:`init_app`: a session interface sees the session and the response, but
    never the exceptions of views, and Flask hands a view's exception only to the
    error handlers registered on the app.  ``init_app(app)`` installs the interface
    and registers :meth:`unavailable` for :class:`~sa_sessions.SessionBackendUnavailable`
    (whatever raised it: the session, or a ``store.revoke()`` in the view), so the
    outage is a 503 and not a logged traceback, in testing and debug mode too.  With
    ``app.session_interface = interface`` alone everything else works, and an outage
    that reaches Flask's 500 handling is still answered with the 503 (Flask logs it
    as an unhandled exception first, and re-raises it when ``PROPAGATE_EXCEPTIONS``
    is on, as in testing and debug mode).  A failure while the session is being saved
    turns the response itself into the 503.  Either way the 503 page is the app's own
    ``errorhandler(503)`` when it has one; it sends no session cookie.
    """

    def __init__(
        self,
        store: SessionStore[Any] | None = None,
        *,
        retry_after: int = 5,
        settings: SessionSettings | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and (store is not None or options):
            raise SessionConfigError("pass either prebuilt settings or store/options, not both")
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise SessionConfigError("retry_after must be a number of seconds (an int >= 0)")
        self.settings = (
            settings if settings is not None else SessionSettings.build(store, **options)
        )
        self.retry_after = retry_after
        # Connecting the same function again is a no-op: one receiver for all interfaces.
        got_request_exception.connect(_note_unhandled, weak=False)
        request_tearing_down.connect(_forget_current, weak=False)

    def init_app(self, app: flask.Flask) -> None:
        """Make this the app's session interface and answer session outages with a 503."""
        app.session_interface = self
        app.register_error_handler(SessionBackendUnavailable, self.unavailable)

    # ------------------------------------------------------------------ Flask's calls

    def open_session(self, app: flask.Flask, request: flask.Request) -> FlaskSession:
        """The request's lazy session (nothing is read until the app touches it)."""
        environ = request.environ
        existing = environ.get(ENVIRON_KEY)
        if existing is not None and not isinstance(existing, FlaskSession):
            raise SessionConfigError(
                "this request already has a session from SessionMiddleware: use either the "
                "middleware or FlaskSessionInterface, not both"
            )
        opened = FlaskSession(self.settings, environ)
        environ[ENVIRON_KEY] = opened
        token = bind_current(opened)
        # Flask's test client may open a second session for the same request
        # (session_transaction): resetting the first token undoes both.
        environ.setdefault(_TOKEN_KEY, token)
        return opened

    def save_session(
        self, app: flask.Flask, session: SessionMixin, response: flask.Response
    ) -> None:
        """Save once and add ``Set-Cookie``/``Cache-Control``/``Vary`` to the response."""
        if not isinstance(session, FlaskSession):
            return
        if session._failure is not None:
            if session._escaped:  # Flask made a 500 of it: answer the outage instead
                self._become_unavailable(app, response)
            else:  # given up: nothing saved, no cookie
                _add_headers(response.headers, [])
            return
        if not session.accessed:
            return  # untouched: nothing to save or to add
        try:
            extra = session.finalize()
        except SessionBackendUnavailable as exc:
            log.error("session backend unavailable: %s", exc)
            session._give_up(exc)
            self._become_unavailable(app, response)
            return
        _add_headers(response.headers, extra)

    # ------------------------------------------------------------------ the 503

    def unavailable(self, error: SessionBackendUnavailable) -> flask.Response:
        """Error handler: the 503 for a session outage (registered by :meth:`init_app`)."""
        log.error("session backend unavailable: %s", error)
        found = _request_session()
        if found is not None:
            found._give_up(error)
        return self.unavailable_response(flask.current_app)

    def unavailable_response(self, app: flask.Flask) -> flask.Response:
        """The app's own 503 page (its ``errorhandler(503)``) or Werkzeug's, never cached."""
        error = ServiceUnavailable(UNAVAILABLE_MESSAGE, retry_after=self.retry_after)
        response = app.make_response(app.handle_http_exception(error))
        response.headers["Retry-After"] = str(self.retry_after)
        response.headers["Cache-Control"] = "no-store"
        return response

    def _become_unavailable(self, app: flask.Flask, response: flask.Response) -> None:
        """Turn the response in hand into the 503 (save_session cannot return another)."""
        page = self.unavailable_response(app)
        close = getattr(response.response, "close", None)
        if close is not None:
            close()
        response.status = page.status
        response.headers = page.headers
        response.response = page.response
        response.direct_passthrough = page.direct_passthrough
