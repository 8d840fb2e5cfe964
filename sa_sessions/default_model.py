"""The session table the CLI uses when no ``--model`` is given.

:class:`DefaultSession` is :class:`~sa_sessions.SessionModel` mapped to a table
named ``sa_sessions`` on a private declarative base, for applications that do
not map their own model.  Importing this module only declares the class: it
connects to nothing and creates nothing.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from .model import SessionModel


class _Base(DeclarativeBase):
    """Private metadata holding only the default session table."""


class DefaultSession(SessionModel, _Base):
    """The library's own session table, ``sa_sessions`` (no extra columns)."""

    __tablename__ = "sa_sessions"
