"""Twenty threads write their own key into one server-side session at the same time.

Through the middleware, with a shared cookie, on a file-based SQLite database
(separate connections per thread) and on MariaDB + a real memcached.  A barrier
makes every request load the session before any of them saves, so nearly every
save meets a version conflict and has to merge.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import create_engine

from .conftest import make_engine
from .webapp import COOKIE
from .webapp import Result
from .webapp import Web
from .webapp import call
from .webapp import clock_fixture  # noqa: F401
from .webapp import db_kind_fixture  # noqa: F401
from .webapp import parallel
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401

THREADS = 20


@pytest.fixture
def engine(db_kind: str, tmp_path: Path) -> Iterator[Engine]:
    """Overrides conftest's engine: SQLite is a file here, so threads get their own connections."""
    if db_kind == "sqlite":
        file_engine = create_engine(f"sqlite:///{tmp_path / 'sessions.db'}", pool_size=THREADS)
        yield file_engine
        file_engine.dispose()
    else:
        engine = make_engine(db_kind)
        yield engine
        engine.dispose()


def run_parallel(web: Web, *, barrier: bool, **options: Any) -> tuple[str, list[Result]]:
    loaded = threading.Barrier(THREADS, timeout=30)

    def wait_for_everyone(session: Any) -> None:
        if barrier:
            loaded.wait()

    errors: list[BaseException] = []
    mw = web.middleware(
        cookie_only_threshold=0, hooks={"sync": wait_for_everyone}, errors=errors, **options
    )
    first = call(mw, "set=base:0&show")
    (sc,) = first.set_cookies
    cookie = f"{COOKIE}={sc.value}"
    results = parallel(
        THREADS, lambda i: call(mw, f"get=base&hook=sync&set=k{i}:{i}", cookie=cookie)
    )
    assert [f"{type(e).__name__}: {e}" for e in errors] == []
    return cookie, results


@pytest.mark.parametrize("barrier", [False, True], ids=["free", "all-load-first"])
def test_twenty_threads_each_set_their_own_key(web: Web, barrier: bool) -> None:
    cookie, results = run_parallel(web, barrier=barrier)
    assert [r.status for r in results] == [200] * THREADS
    # Each response names the version it saved; the session id never changes.
    sids = {r.json.get("sid") for r in results}
    assert all(len(r.set_cookies) == 1 and not r.set_cookies[0].deleted for r in results)
    assert sids == {None}  # the handler did not ask; the id is checked below
    data = call(web.middleware(cookie_only_threshold=0), "show", cookie=cookie).json["data"]
    assert data == {"base": 0, **{f"k{i}": i for i in range(THREADS)}}
    sid = call(web.middleware(cookie_only_threshold=0), "show", cookie=cookie).json["sid"]
    assert web.row(sid).version == 1 + THREADS
