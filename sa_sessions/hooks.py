"""Lifecycle hooks: the application hears when sessions begin, change id, end or expire.

``SessionMiddleware(..., hooks={"on_created": fn, ...})`` (or an object with methods
of those names).  Hooks are given hashed ids only (the SHA-256 hex that is the row's
primary key), never a raw id and so never the ``Session``: an audit trail must not
become a way to steal sessions.  A hook that raises is logged on ``sa_sessions.hooks``
and otherwise ignored: it never fails the request nor undoes what it reports.

==================  ==============================  ====================================
hook                arguments                       called when
==================  ==============================  ====================================
``on_created``      hashed id                       a session begun in this request is
                                                    first stored or issued as a cookie
``on_regenerated``  old hashed id, new hashed id    ``regenerate_id()`` (login)
``on_ended``        hashed id                       ``terminate()``, or a session emptied
``on_revoked``      count, criteria                 ``session.revoke_others(...)``
``on_expired``      hashed id                       a stored session found expired or idle
                                                    too long, and deleted
==================  ==============================  ====================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .exceptions import SessionConfigError

log = logging.getLogger("sa_sessions.hooks")

HOOK_NAMES = ("on_created", "on_regenerated", "on_ended", "on_revoked", "on_expired")

#: Validated hooks: name -> callable.
Hooks = Mapping[str, Callable[..., object]]

NO_HOOKS: Hooks = MappingProxyType({})


def check_hooks(hooks: object) -> Hooks:
    """The hooks of a mapping or of an object's attributes; SessionConfigError for an
    unknown name or something that cannot be called."""
    if hooks is None:
        return NO_HOOKS
    if isinstance(hooks, Mapping):
        unknown = sorted(str(name) for name in hooks if name not in HOOK_NAMES)
        if unknown:
            raise SessionConfigError(
                f"unknown hook(s) {unknown}; the hooks are: {', '.join(HOOK_NAMES)}"
            )
        found: dict[str, Any] = dict(hooks)
    else:
        found = {name: getattr(hooks, name) for name in HOOK_NAMES if hasattr(hooks, name)}
    for name, hook in found.items():
        if not callable(hook):
            raise SessionConfigError(f"hook {name} is not callable")
    return MappingProxyType(found)


def call_hook(hooks: Hooks, name: str, *args: object) -> None:
    """Call one hook if set; whatever it raises is logged and swallowed."""
    hook = hooks.get(name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("the %s hook failed; the operation it reports stands", name)
