"""``python -m sa_sessions``: the ``sa-sessions`` command line (see :mod:`sa_sessions.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
