"""sa_sessions: fast, safe sessions for Bottle, Flask and any WSGI application.

Small sessions live in one signed cookie; larger ones in one sealed blob per
row of your own SQLAlchemy model, read through memcached or Redis.  The framework
adapters are :mod:`sa_sessions.bottle` and :mod:`sa_sessions.flask`.
"""

from __future__ import annotations

import logging

from ._redact import redact_url as redact_url
from .cache import memcached_region as memcached_region
from .cache import memory_region as memory_region
from .cache import redis_region as redis_region
from .exceptions import CleanupAlreadyRunning as CleanupAlreadyRunning
from .exceptions import CodecError as CodecError
from .exceptions import SessionBackendUnavailable as SessionBackendUnavailable
from .exceptions import SessionConfigError as SessionConfigError
from .exceptions import SessionConflict as SessionConflict
from .exceptions import SessionError as SessionError
from .exceptions import SessionIdTaken as SessionIdTaken
from .exceptions import SessionIntegrityError as SessionIntegrityError
from .exceptions import SessionTooLarge as SessionTooLarge
from .exceptions import UnstorableValue as UnstorableValue
from .model import SessionModel as SessionModel
from .session import Session as Session
from .store import SessionStore as SessionStore
from .wsgi import SessionMiddleware as SessionMiddleware
from .wsgi import get_current_session as get_current_session

__version__ = "0.1.0"

# A library never decides where its log records go: without any logging configured,
# its warnings must not appear on stderr by themselves.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CleanupAlreadyRunning",
    "CodecError",
    "Session",
    "SessionBackendUnavailable",
    "SessionConfigError",
    "SessionConflict",
    "SessionError",
    "SessionIdTaken",
    "SessionIntegrityError",
    "SessionMiddleware",
    "SessionModel",
    "SessionStore",
    "SessionTooLarge",
    "UnstorableValue",
    "get_current_session",
    "memcached_region",
    "memory_region",
    "redact_url",
    "redis_region",
]
