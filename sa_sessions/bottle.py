"""SessionPlugin: sa_sessions for Bottle (plugin API v2).

Installing the plugin wraps the application's WSGI entry point in
:class:`~sa_sessions.SessionMiddleware`, so the cookie is written for every
response, including ``redirect()``, ``abort()``, a returned ``HTTPResponse``
and an unhandled 500 (cookies set in Bottle hooks are lost on those paths).
Routes whose callback takes the keyword (default ``session``) get the
Session injected; ``bottle.request.session`` works in every route and hook::

    app = bottle.Bottle()
    app.install(SessionPlugin(store, cookie_key=os.environ["SESSION_KEY"]))

    @app.get("/")
    def index(session):
        session["visits"] = session.get("visits", 0) + 1
        return f"visit {session['visits']}"

A route can opt out of injection with ``skip=[plugin]`` or with
``@app.get("/health", sa_sessions={"enabled": False})``; its session stays
lazy and costs nothing.  A route that raises
:class:`~sa_sessions.SessionBackendUnavailable` (the session database is down)
answers ``backend_error_status`` (503) through Bottle's error handlers.

Install the plugin on the application the server calls: the routes of a
child app mounted with ``parent.mount("/prefix/", child)`` are served by the
parent, so the parent needs the plugin.  This is the only module of
sa_sessions that imports bottle.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

import bottle

from .exceptions import SessionBackendUnavailable
from .exceptions import SessionConfigError
from .settings import SessionSettings
from .wsgi import ENVIRON_KEY
from .wsgi import SessionMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

    from .store import SessionStore

log = logging.getLogger("sa_sessions.bottle")

#: Where Bottle looks up ``request.session``.
_REQUEST_EXT_KEY = "bottle.request.ext.session"

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _takes_keyword(callback: Callable[..., Any], keyword: str) -> bool:
    """True when ``callback`` names ``keyword`` as a parameter.

    ``inspect.signature`` follows ``__wrapped__`` (``functools.wraps``) but,
    unlike Bottle's ``Route.get_undecorated_callback()``, never wanders into a
    closure: a route defined inside an app factory that refers to a class or a
    helper function would otherwise be inspected as that class or helper.
    ``**kwargs`` alone does not count: the callback did not ask for a session.
    """
    try:
        parameter = inspect.signature(callback).parameters.get(keyword)
    except (TypeError, ValueError):  # builtins and other callables without a signature
        return False
    return parameter is not None and parameter.kind in _NAMED


def _replace_wsgi(app: bottle.Bottle, wsgi: Callable[..., Any] | None) -> None:
    """Set (or with None, remove) the instance's own ``wsgi`` entry point.

    ``Bottle.__setattr__`` refuses to overwrite an instance attribute, so an
    existing one is deleted first.
    """
    if "wsgi" in app.__dict__:
        del app.wsgi
    if wsgi is not None:
        app.wsgi = wsgi


#: Methods that change state, whose requests must carry the session's CSRF token.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Where the token is looked for: a form field, then a request header.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def _refuse_without_csrf_token(session: Any) -> None:
    """403 unless an unsafe request carries the session's CSRF token."""
    request = bottle.request
    if request.method not in UNSAFE_METHODS:
        return
    token = request.forms.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not session.check_csrf(token):
        log.info("refused a %s to %s without a valid CSRF token", request.method, request.path)
        raise bottle.HTTPError(403, "The form has expired or was not sent by this site.")


def csrf_protect(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: refuse (403) a POST, PUT, PATCH or DELETE to this route unless it
    carries the session's CSRF token in the ``csrf_token`` form field or the
    ``X-CSRF-Token`` header.  Put ``session.csrf_token()`` in the form.

    The plugin's ``csrf=True`` does the same for every route.
    """

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = bottle.request.environ.get(ENVIRON_KEY)
        if session is None:
            raise SessionConfigError("csrf_protect needs the SessionPlugin installed")
        _refuse_without_csrf_token(session)
        return callback(*args, **kwargs)

    return wrapper


class SessionPlugin:
    """Bottle plugin (API v2) giving every request a lazy sa_sessions Session."""

    name = "sa_sessions"
    api = 2

    def __init__(
        self,
        store: SessionStore[Any] | None = None,
        *,
        keyword: str = "session",
        backend_error_status: int = 503,
        csrf: bool = False,
        **options: Any,
    ) -> None:
        if not keyword.isidentifier():
            raise ValueError(f"keyword must be a Python identifier, not {keyword!r}")
        self.keyword = keyword
        #: Check the CSRF token of every POST, PUT, PATCH and DELETE (routes opt out with
        #: ``sa_sessions={"csrf": False}``); see :func:`csrf_protect`.
        self.csrf = bool(csrf)
        self.backend_error_status = backend_error_status
        self.settings = SessionSettings.build(store, **options)
        self._app: bottle.Bottle | None = None
        self._middleware: SessionMiddleware | None = None
        self._original_wsgi: Callable[..., Any] | None = None

    def setup(self, app: bottle.Bottle) -> None:
        """Refuse a second sessions plugin, then wrap the app's WSGI entry point."""
        if self._app is not None:
            raise bottle.PluginError("this SessionPlugin is already installed in an application")
        for other in app.plugins:
            if other is self or isinstance(other, SessionPlugin):
                raise bottle.PluginError("a SessionPlugin is already installed in this app")
            if getattr(other, "keyword", None) == self.keyword:
                raise bottle.PluginError(
                    f"another plugin already provides the {self.keyword!r} keyword"
                )
        # A Bottle's wsgi is normally the class's method; remember whether the
        # instance had its own (another wrapper), to restore exactly that.
        own = app.__dict__.get("wsgi")
        original = app.wsgi

        def expose(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
            environ[_REQUEST_EXT_KEY] = environ[ENVIRON_KEY]
            return original(environ, start_response)

        middleware = SessionMiddleware(expose, settings=self.settings)
        _replace_wsgi(app, middleware)
        self._app, self._middleware, self._original_wsgi = app, middleware, own

    def apply(self, callback: Callable[..., Any], route: bottle.Route) -> Callable[..., Any]:
        if not route.config.get("sa_sessions.enabled", True):
            return callback
        for other in route.all_plugins():
            if other is not self and getattr(other, "keyword", None) == self.keyword:
                raise bottle.PluginError(
                    f"{getattr(other, 'name', other)!r} also provides the {self.keyword!r} "
                    f"keyword to route {route.rule!r}"
                )
        takes_session = _takes_keyword(route.callback, self.keyword)
        keyword = self.keyword
        status = self.backend_error_status
        check_csrf = route.config.get("sa_sessions.csrf", self.csrf)

        @functools.wraps(callback)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            environ = bottle.request.environ
            if ENVIRON_KEY not in environ:
                raise SessionConfigError(
                    "this route's app has a SessionPlugin but the request did not pass "
                    "through it (a mounted child app?); install the plugin on the "
                    "application the server calls"
                )
            if takes_session:
                kwargs[keyword] = environ[ENVIRON_KEY]
            try:
                if check_csrf:
                    _refuse_without_csrf_token(environ[ENVIRON_KEY])
                return callback(*args, **kwargs)
            except SessionBackendUnavailable:
                raise bottle.HTTPError(
                    status,
                    "Sessions are temporarily unavailable; please retry.",
                    headers={"Retry-After": "5", "Cache-Control": "no-store"},
                ) from None

        return wrapper

    def close(self) -> None:
        """Undo setup(): the app's WSGI entry point is restored on uninstall."""
        app, middleware = self._app, self._middleware
        if app is None:
            return
        if app.__dict__.get("wsgi") is middleware:
            _replace_wsgi(app, self._original_wsgi)  # None: back to Bottle.wsgi
        else:
            log.warning(
                "SessionPlugin uninstalled but app.wsgi was wrapped again after it; "
                "leaving the WSGI chain as it is"
            )
        self._app = self._middleware = self._original_wsgi = None
