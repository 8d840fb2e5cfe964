"""Cache coherence: what the cache may and may not do to a session.

Each guarantee, and each defect found against the earlier design, with the race or
fault made deterministic: a write through a store without a cache stands for a cache
write that failed (the row moved on, the cached copy did not); bytes put back into
the cache stand for a replayed entry or a node that returned with old data; a store
call made between a read and its refill stands for a request that lost a race.

G1 read your writes, G2 no acknowledged write lost, G3 ended means ended (within
``max_staleness`` under faults and replays), G4 any region is safe, G5 the healthy path
stays cheap (also pinned by the exact counts in test_wsgi.py).  Every test runs on
SQLite + in-process cache, MariaDB + memcached and PostgreSQL + Redis.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dogpile.cache import make_region
from sqlalchemy import Engine
from sqlalchemy import ForeignKey
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from sa_sessions import SessionConfigError
from sa_sessions import SessionIntegrityError
from sa_sessions import SessionMiddleware
from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import memory_region
from sa_sessions.ids import hash_session_id

from .conftest import SECRET
from .webapp import COOKIE
from .webapp import Result
from .webapp import Web
from .webapp import call
from .webapp import clock_fixture  # noqa: F401
from .webapp import cookie_codec
from .webapp import db_kind_fixture  # noqa: F401
from .webapp import finish
from .webapp import make_middleware
from .webapp import open_session
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401


def server(web: Web, store: Any = "default", **options: Any) -> SessionMiddleware:
    """A middleware that keeps every session server-side."""
    return web.middleware(store, cookie_only_threshold=0, **options)


def start(mw: SessionMiddleware, query: str = "set=a:1") -> tuple[str, str]:
    """A new server-side session made by ``query``: (Cookie header, session id)."""
    result = call(mw, f"{query}&show")
    assert result.status == 200
    (sc,) = result.set_cookies
    return f"{COOKIE}={sc.value}", result.json["sid"]


def follow(cookie: str, result: Result) -> str:
    """The Cookie header a browser sends after ``result``."""
    for sc in result.set_cookies:
        cookie = "" if sc.deleted else f"{COOKIE}={sc.value}"
    return cookie


def version_in(cookie: str, web: Web) -> int:
    """The version an id cookie says its client was last shown."""
    state = cookie_codec().decode(cookie.split("=", 1)[1], now=web.clock())
    assert state is not None and state.kind == "id"
    version: int = state.extra["v"]
    return version


def raw_entry(web: Web, sid: str) -> bytes:
    """The bytes the cache holds for a session (what someone on its network could copy)."""
    cache = web.store.cache
    assert cache is not None
    found = cache.backend.get(cache.key(hash_session_id(sid)))
    assert found is not None
    return found[0]


def plant(web: Web, sid: str, raw: bytes) -> None:
    """Put bytes back under a session's key, as a replay (or a returning node) would."""
    cache = web.store.cache
    assert cache is not None
    cache.backend.set(cache.key(hash_session_id(sid)), raw, 3600)


# --------------------------------------------------------------------------- G1


class TestReadYourWrites:
    def test_a_stale_copy_is_never_served_to_the_client_that_wrote_past_it(self, web: Web) -> None:
        mw = server(web)
        cookie, sid = start(mw)
        # The row moves on while the cache keeps version 1 (a cache write that failed).
        blind = server(web, web.new_store(region=None))
        cookie = follow(cookie, call(blind, "set=b:2", cookie=cookie))
        assert version_in(cookie, web) == 2
        assert web.cache_entry(sid).number == 1  # the stale copy is still there
        web.reset()
        assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1, "b": 2}
        assert web.counts()[1:] == (1, 1, 0)  # the copy was refused; the row refilled it
        assert web.sql.count("SELECT") == 1
        web.reset()
        assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1, "b": 2}
        assert web.counts() == (0, 1, 0, 0)  # and now a cache hit

    def test_an_old_entry_replayed_into_the_cache_is_not_served_to_its_owner(
        self, web: Web
    ) -> None:
        mw = server(web)
        cookie, sid = start(mw)
        old = raw_entry(web, sid)
        cookie = follow(cookie, call(mw, "set=b:2", cookie=cookie))
        plant(web, sid, old)  # rolls the cache back to version 1
        assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1, "b": 2}

    def test_two_processes_each_with_their_own_in_process_cache(self, web: Web) -> None:
        """The demo's memory region, with two worker processes: each has its own copy."""
        a = server(web, web.new_store(region=memory_region()))
        b = server(web, web.new_store(region=memory_region()))
        cookie, _ = start(a)
        assert call(b, "show", cookie=cookie).json["data"] == {"a": 1}  # b caches version 1
        cookie = follow(cookie, call(a, "set=k:1", cookie=cookie))
        assert call(b, "show", cookie=cookie).json["data"] == {"a": 1, "k": 1}
        cookie = follow(cookie, call(a, "del=k", cookie=cookie))
        assert call(b, "show", cookie=cookie).json["data"] == {"a": 1}  # not back


# --------------------------------------------------------------------------- G2


class TestNoAcknowledgedWriteLost:
    def test_appends_computed_after_a_failed_cache_write_keep_every_value(self, web: Web) -> None:
        """The measured loss: a read-modify-write on a stale copy, then a merge over the
        newer row.  The owner's cookie makes the read go to the row instead."""
        mw = server(web)
        blind = server(web, web.new_store(region=None))
        cookie, sid = start(mw, "set=notes:[]")
        expected: list[int] = []
        for n in range(6):
            via = blind if n % 2 else mw  # every other write leaves the cache behind
            result = call(via, f"get=notes&append=notes:{n}&mark=notes&show", cookie=cookie)
            expected.append(n)
            assert result.json["data"]["notes"] == expected
            cookie = follow(cookie, result)
        stored = SessionStore(web.model, web.engine, secret_keys=SECRET).load(sid)
        assert stored is not None and stored.data["notes"] == expected


# --------------------------------------------------------------------------- G3


class TestEndedMeansEnded:
    def test_a_logout_racing_a_refill_is_not_undone(self, web: Web) -> None:
        mw = server(web)
        cookie, sid = start(mw)
        web.evict(sid)
        cache = web.store.cache
        assert cache is not None
        real_fill = cache.fill

        ended: list[Result] = []
        raced: list[bool] = []

        def logout_first(*args: Any, **kwargs: Any) -> bool:
            # The row was read; before its copy lands, another request logs out (the
            # logout's own read refills as usual: this interleaving happens once).
            if not raced:
                raced.append(True)
                ended.append(call(mw, "terminate", cookie=cookie))
            return real_fill(*args, **kwargs)

        cache.fill = logout_first  # type: ignore[method-assign]
        try:
            assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1}  # read before
        finally:
            cache.fill = real_fill  # type: ignore[method-assign]
        assert [r.status for r in ended] == [200]
        assert web.ended_in_cache(sid)  # the late refill found the end marker
        assert call(mw, "show", cookie=cookie).json["active"] is False
        assert web.row(sid) is None

    def test_a_quick_write_racing_a_revoke_does_not_bring_the_session_back(self, web: Web) -> None:
        mw = server(web)
        cookie, sid = start(mw, "set=user_id:7")
        value = cookie.split("=", 1)[1]
        s = open_session(mw, value)
        assert s["user_id"] == 7
        s.set_quick("seen", True)
        assert web.store.revoke(web.model.id == hash_session_id(sid)) == 1
        assert finish(s) is None  # dropped: no cookie re-issued, nothing written
        assert web.row(sid) is None
        assert web.ended_in_cache(sid)
        assert call(mw, "show", cookie=cookie).json["active"] is False

    def test_a_replayed_entry_of_a_revoked_session_is_dead_after_max_staleness(
        self, web: Web
    ) -> None:
        store = web.new_store(max_staleness=timedelta(seconds=5))
        web.store = store
        mw = server(web, store)
        cookie, sid = start(mw, "set=user_id:7")
        old = raw_entry(web, sid)
        web.clock.advance(seconds=1)
        assert store.revoke(web.model.id == hash_session_id(sid)) == 1
        assert call(mw, "show", cookie=cookie).json["active"] is False
        plant(web, sid, old)  # someone on the cache network writes the old entry back
        web.clock.advance(seconds=3)  # inside the bound: the documented residual risk
        assert call(mw, "show", cookie=cookie).json["data"] == {"user_id": 7}
        web.clock.advance(seconds=1.01)  # past the copy's stamp + max_staleness
        web.reset()
        assert call(mw, "show", cookie=cookie).json["active"] is False
        assert web.sql.count("SELECT") == 1  # one look at the row's version by primary key
        assert web.ended_in_cache(sid)  # and the end is written down again
        web.reset()
        assert call(mw, "show", cookie=cookie).json["active"] is False
        assert web.counts() == (0, 1, 0, 0)

    @pytest.mark.parametrize("seconds", [1, 1.5, 60])
    def test_the_bound_holds_at_any_setting(self, web: Web, seconds: float) -> None:
        store = web.new_store(max_staleness=seconds)
        web.store = store
        mw = server(web, store)
        cookie, sid = start(mw)
        old = raw_entry(web, sid)
        assert call(mw, "terminate", cookie=cookie).status == 200
        plant(web, sid, old)
        web.clock.advance(seconds=seconds)
        assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1}  # at the bound
        web.clock.advance(microseconds=1)
        assert call(mw, "show", cookie=cookie).json["active"] is False  # past it

    def test_regenerate_leaves_the_old_cookie_alone_for_the_new_one_to_win(self, web: Web) -> None:
        """A request still holding the old cookie must not expire it: the response that
        regenerated the session carries its replacement."""
        mw = server(web)
        cookie, _sid = start(mw)
        assert call(mw, "regen", cookie=cookie).status == 200
        late = call(mw, "show", cookie=cookie)
        assert late.json["active"] is False
        assert late.set_cookies == []
        ended = call(mw, "terminate", cookie=follow(cookie, call(mw, "set=z:1", cookie="")))
        assert [sc.deleted for sc in ended.set_cookies] == [True]

    def test_revalidation_costs_one_version_check_and_one_cache_write_per_window(
        self, web: Web
    ) -> None:
        store = web.new_store(max_staleness=timedelta(seconds=10))
        web.store = store
        mw = server(web, store)
        cookie, _ = start(mw)
        web.clock.advance(seconds=11)
        web.reset()
        assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1}
        assert len(web.sql.statements) == 1 and web.sql.count("SELECT") == 1
        assert web.counts()[1:] == (1, 1, 0)  # the read, then the fresh stamp
        for _ in range(3):
            web.reset()
            assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1}
            assert web.counts() == (0, 1, 0, 0)  # trusted again for the window


@pytest.mark.parametrize("value", [0, 0.5, -1, "30", True, timedelta(milliseconds=999)])
def test_max_staleness_must_be_at_least_one_second(web: Web, value: Any) -> None:
    with pytest.raises(SessionConfigError, match="max_staleness"):
        web.new_store(max_staleness=value)


def test_max_staleness_takes_a_timedelta_or_seconds(web: Web) -> None:
    assert web.new_store(max_staleness=2.5).max_staleness == timedelta(seconds=2.5)
    assert web.new_store(max_staleness=timedelta(minutes=1)).max_staleness.total_seconds() == 60


# --------------------------------------------------------------------------- G4


@pytest.mark.parametrize(
    "backend",
    ["dogpile.cache.memory_pickle", "dogpile.cache.redis", "dogpile.cache.pymemcache"],
)
def test_a_region_that_would_unpickle_is_refused(web: Web, backend: str) -> None:
    arguments: dict[str, Any] = {}
    if backend == "dogpile.cache.redis":
        arguments = {"url": "redis://127.0.0.1:1/0"}
    elif backend == "dogpile.cache.pymemcache":
        arguments = {"url": "127.0.0.1:1"}
    region = make_region().configure(backend, arguments=arguments)
    with pytest.raises(SessionConfigError, match="memcached_region") as caught:
        web.new_store(region=region)
    assert type(region.backend).__name__ in str(caught.value)  # it says what it refused


def test_dogpiles_own_memory_backend_is_adapted(web: Web) -> None:
    region = make_region().configure("dogpile.cache.memory")
    store = web.new_store(region=region)
    mw = server(web, store)
    cookie, _sid = start(mw)
    assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1}
    assert store.cache is not None and store.cache.stats.gets >= 1


class _Gadget:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_a_pickle_planted_under_a_session_key_never_runs(web: Web, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    mw = server(web)
    cookie, sid = start(mw)
    plant(web, sid, pickle.dumps(_Gadget(marker)))
    assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1}  # from the row
    assert not marker.exists()


# --------------------------------------------------------------------------- defects


def test_a_planted_cookie_never_leads_into_another_session(web: Web) -> None:
    """An attacker's own cookie session, planted in the victim's browser: when either
    grows into a row, it gets a fresh id, so the two never share one."""
    mw = web.middleware()
    attacker = call(mw, 'set=who:"attacker"&show')
    planted = follow("", attacker)
    planted_sid = attacker.json["sid"]
    # The victim's session grows into a row; so does the attacker's, from the same cookie.
    victim_cookie = follow(planted, call(mw, "rand=secret:6000", cookie=planted))
    attacker_cookie = follow(planted, call(mw, "rand=mine:6000", cookie=planted))
    victim = call(mw, "show", cookie=victim_cookie).json
    mine = call(mw, "show", cookie=attacker_cookie).json
    assert len({planted_sid, victim["sid"], mine["sid"]}) == 3
    assert "secret" not in mine["data"] and "mine" not in victim["data"]
    assert web.row(planted_sid) is None


def test_a_dead_cookie_repeated_forty_times_is_looked_up_once(web: Web) -> None:
    mw = server(web)
    cookie, _ = start(mw)
    assert call(mw, "terminate", cookie=cookie).status == 200
    web.reset()
    result = call(mw, "show", cookie="; ".join([cookie] * 40))
    assert result.json["active"] is False
    assert web.counts() == (0, 1, 0, 0)  # one cache get (the end marker), no SQL
    (sc,) = result.set_cookies
    assert sc.deleted


def test_distinct_dead_cookies_are_looked_up_a_bounded_number_of_times(web: Web) -> None:
    mw = server(web)
    cookies = []
    for _ in range(6):
        cookie, sid = start(mw)
        web.evict(sid)
        cookies.append(cookie)
        assert call(mw, "terminate", cookie=cookie).status == 200
        web.evict(sid)  # not even an end marker: every lookup reaches the database
    web.reset()
    assert call(mw, "show", cookie="; ".join(cookies)).json["active"] is False
    assert web.stats.gets == 3 and web.sql.count("SELECT") == 3


def test_a_compressible_session_over_64_kib_is_never_issued_as_a_cookie(web: Web) -> None:
    mw = web.middleware()
    result = call(mw, "pad=x:70000&show")
    cookie = follow("", result)
    assert cookie.split("=", 1)[1].startswith("v1.i")  # too big to decompress: the server
    assert call(mw, "get=x", cookie=cookie).json["got"]["x"] == "x" * 70000


def test_a_shrinking_session_moves_back_into_the_cookie_with_that_write(web: Web) -> None:
    mw = web.middleware()
    cookie = follow("", call(mw, "set=a:1&rand=big:6000"))
    assert cookie.split("=", 1)[1].startswith("v1.i")
    sid = call(mw, "show", cookie=cookie).json["sid"]
    shrunk = call(mw, "set=big:1", cookie=cookie)  # a big value replaced by a small one
    cookie = follow(cookie, shrunk)
    assert cookie.split("=", 1)[1].startswith("v1.d")
    assert web.row(sid) is None
    assert call(mw, "show", cookie=cookie).json["data"] == {"a": 1, "big": 1}


# --------------------------------------------------------------------------- constraints


class _Base(DeclarativeBase):
    pass


class User(_Base):
    __tablename__ = f"sa_test_coherence_users_{os.getpid()}"  # parallel runs never share it
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class LinkedSession(SessionModel, _Base):
    __tablename__ = f"sa_test_coherence_sessions_{os.getpid()}"
    user_id: Mapped[int | None] = mapped_column(ForeignKey(User.id), index=True)


@pytest.fixture
def linked(web: Web, engine: Engine, db_kind: str) -> Iterator[SessionStore[Any]]:
    """A store whose model has a foreign key to users, as in the README."""
    sqlite = db_kind == "sqlite"
    if sqlite:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    _Base.metadata.drop_all(engine)
    _Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(User.__table__.insert().values(id=1, name="alice"))
    yield SessionStore(
        LinkedSession,
        engine,
        region=web.region,
        secret_keys=SECRET,
        clock=web.clock,
        columns={"user_id": lambda data: data.get("user_id")},
    )
    _Base.metadata.drop_all(engine)
    if sqlite:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")


def test_a_foreign_key_failure_reaches_the_application_as_a_typed_error(
    web: Web, linked: SessionStore[Any], engine: Engine
) -> None:
    errors: list[BaseException] = []
    mw = make_middleware(linked, clock=web.clock, errors=errors)
    result = call(mw, "set=user_id:999")  # a user that does not exist: INSERT refused
    assert result.status == 500 and [type(e) for e in errors] == [SessionIntegrityError]
    assert "999" not in str(errors[0])  # no session data in the message
    assert result.set_cookies == []
    with engine.connect() as conn:
        assert conn.scalar(select(LinkedSession.id)) is None  # nothing half-written
    errors.clear()
    cookie = follow("", call(mw, "set=user_id:1"))  # a real user: stored
    with engine.connect() as conn:
        before = conn.execute(select(LinkedSession.data, LinkedSession.version)).one()
    result = call(mw, "set=user_id:999", cookie=cookie)  # the UPDATE is refused too
    assert result.status == 500 and [type(e) for e in errors] == [SessionIntegrityError]
    with engine.connect() as conn:
        assert conn.execute(select(LinkedSession.data, LinkedSession.version)).one() == before
    assert call(mw, "show", cookie=cookie).json["data"] == {"user_id": 1}


def test_save_inside_the_handler_lets_the_application_handle_the_refusal(
    web: Web, linked: SessionStore[Any]
) -> None:
    def save(session: Any) -> str:
        try:
            session.save()
        except SessionIntegrityError:
            session.pop("user_id")
            return "refused"
        return "saved"

    mw = make_middleware(linked, clock=web.clock, hooks={"save": save})
    result = call(mw, "set=user_id:999&set=a:1&hook=save&show")
    assert result.status == 200
    assert result.json["hooks"] == {"save": "refused"}
    assert result.json["data"] == {"a": 1}
    assert call(mw, "show", cookie=follow("", result)).json["data"] == {"a": 1}
