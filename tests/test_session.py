"""Session API semantics, driven directly (one Session per simulated request).

Runs on SQLite + dogpile memory region and on MariaDB + a real memcached.  Each
"request" is ``open_session(middleware, cookie)`` followed by ``finish(session)``,
which runs the same response-time save as the middleware.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from datetime import date
from datetime import datetime
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from sa_sessions import SessionConflict
from sa_sessions import SessionError
from sa_sessions import SessionMiddleware
from sa_sessions.codec.blob import Packed

from .webapp import UTC
from .webapp import Web
from .webapp import clock_fixture  # noqa: F401
from .webapp import cookie_codec
from .webapp import db_kind_fixture  # noqa: F401
from .webapp import finish
from .webapp import open_session
from .webapp import random_text
from .webapp import region_fixture  # noqa: F401
from .webapp import web_fixture  # noqa: F401

ID = re.compile(r"[A-Za-z0-9_-]{43}")


def server_mw(web: Web, **options: Any) -> SessionMiddleware:
    """Every session server-side (threshold 0)."""
    return web.middleware(cookie_only_threshold=0, **options)


def new_server_session(web: Web, mw: SessionMiddleware, **data: Any) -> tuple[str, str]:
    """Create a server-side session; returns (cookie value, sid)."""
    s = open_session(mw)
    s.update(data)
    sid = s.sid
    assert sid is not None
    cookie = finish(s)
    assert cookie and cookie.split(".")[1] == "i"
    return cookie, sid


class TestLazyInactive:
    def test_reads_start_nothing(self, web: Web) -> None:
        mw = web.middleware()
        web.reset()
        s = open_session(mw)
        assert s.get("a") is None
        assert s.get("a", 5) == 5
        assert "a" not in s
        assert len(s) == 0
        assert list(s.keys()) == []
        assert list(s.items()) == []
        assert list(s.values()) == []
        assert s.pop("x", 5) == 5
        assert not s
        assert not s.is_active()
        assert not s.is_ssl_only()
        assert s.sid is None
        assert s.expires_at is None
        s.clear()
        with pytest.raises(KeyError):
            s["missing"]
        with pytest.raises(KeyError):
            del s["missing"]
        assert not s.is_active()
        assert s.finalize() == []
        assert web.counts() == (0, 0, 0, 0)

    def test_untouched_session_has_no_headers(self, web: Web) -> None:
        s = open_session(web.middleware(), "garbage")
        assert not s.accessed
        assert s.finalize() == []

    def test_empty_new_session_is_never_stored(self, web: Web) -> None:
        mw = server_mw(web)
        web.reset()
        s = open_session(mw)
        s.start()
        assert s.is_active()
        assert s.sid is not None
        s["a"] = 1
        del s["a"]
        assert finish(s) is None
        assert web.counts() == (0, 0, 0, 0)
        assert web.rows() == 0


class TestMappingApi:
    def test_full_api_round_trip(self, web: Web) -> None:
        for mw in (web.middleware(), server_mw(web)):
            s = open_session(mw)
            s["a"] = 1
            s["b"] = [1, 2]
            s.update({"c": "x", "d": None}, e=2.5)
            assert s.setdefault("a", 99) == 1
            assert s.setdefault("f", 7) == 7
            assert s.pop("c") == "x"
            assert s.pop("c", "gone") == "gone"
            del s["d"]
            assert s["a"] == 1
            assert s.get("b") == [1, 2]
            assert "e" in s
            assert "d" not in s
            assert len(s) == 4
            assert sorted(s.keys()) == ["a", "b", "e", "f"]
            assert dict(s.items()) == {"a": 1, "b": [1, 2], "e": 2.5, "f": 7}
            assert sorted(map(str, s.values())) == ["1", "2.5", "7", "[1, 2]"]
            assert bool(s)
            cookie = finish(s)
            assert cookie

            again = open_session(mw, cookie)
            assert dict(again) == {"a": 1, "b": [1, 2], "e": 2.5, "f": 7}
            again.clear()
            assert len(again) == 0
            assert not again
            assert finish(again) == ""  # emptied: the cookie is deleted
            if mw.settings.cookie_only_threshold == 0:  # a server copy is really gone
                assert not open_session(mw, cookie).is_active()

    def test_rich_types_round_trip_in_cookie_and_server(self, web: Web) -> None:
        value = {
            "dt": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
            "d": date(2024, 5, 1),
            "dec": Decimal("1.10"),
            "u": UUID(int=7),
            "b": b"\x00\xff",
            "s": {1, 2},
            "t": (1, "x"),
        }
        for mw, kind in ((web.middleware(), "d"), (server_mw(web), "i")):
            s = open_session(mw)
            s.update(value)
            cookie = finish(s)
            assert cookie and cookie.split(".")[1][0] == kind
            assert dict(open_session(mw, cookie)) == value

    def test_keys_must_be_str(self, web: Web) -> None:
        s = open_session(web.middleware())
        with pytest.raises(TypeError):
            s[1] = "x"  # type: ignore[index]
        assert not s.is_active()

    def test_sid_and_expires_at(self, web: Web) -> None:
        s = open_session(web.middleware())
        assert s.sid is None
        s["a"] = 1
        assert s.sid is not None and ID.fullmatch(s.sid)
        assert s.expires_at == web.clock() + timedelta(days=7)
        assert s.expires_at is not None and s.expires_at.utcoffset() == timedelta(0)

    def test_increment(self, web: Web) -> None:
        mw = server_mw(web)
        s = open_session(mw)
        assert s.increment("n") == 1
        assert s.increment("n", 4) == 5
        assert s.increment("f", 0.5) == 0.5
        s["text"] = "x"
        with pytest.raises(TypeError):
            s.increment("text")
        s["flag"] = True
        with pytest.raises(TypeError):
            s.increment("flag")
        cookie = finish(s)
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        a.increment("n")
        b.increment("n", 10)
        finish(a)
        finish(b)
        assert open_session(mw, cookie)["n"] == 16  # both increments kept (merge adds)


class TestStart:
    def test_start_with_expiration_and_ssl_only(self, web: Web) -> None:
        mw = web.middleware()
        s = open_session(mw, https=True)
        s.start(expiration=timedelta(hours=1), ssl_only=True)
        s["a"] = 1
        assert s.is_ssl_only()
        assert s.expires_at == web.clock() + timedelta(hours=1)
        cookie = finish(s)
        assert cookie
        again = open_session(mw, cookie, https=True)
        assert again.is_ssl_only()
        assert again["a"] == 1
        assert again.expires_at == web.clock() + timedelta(hours=1)
        absolute = web.clock() + timedelta(days=2)
        s2 = open_session(mw)
        s2.start(expiration=absolute)
        assert s2.expires_at == absolute
        with pytest.raises(SessionError):
            s2.start(expiration=datetime(2030, 1, 1))  # naive

    def test_start_on_active_server_session_discards_it(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, old_sid = new_server_session(web, mw, a=1)
        s = open_session(mw, cookie)
        assert s["a"] == 1
        s.start()
        assert s.sid != old_sid
        assert dict(s) == {}
        assert web.row(old_sid) is None  # deleted at once
        assert not web.cached(old_sid)
        s["b"] = 2
        new_cookie = finish(s)
        assert new_cookie
        assert dict(open_session(mw, new_cookie)) == {"b": 2}
        assert not open_session(mw, cookie).is_active()

    def test_start_on_active_cookie_session_then_nothing_drops_old_cookie(self, web: Web) -> None:
        """start() discards the old data: the old data cookie must not survive the response."""
        mw = web.middleware()
        s = open_session(mw)
        s["secret"] = "old data"
        cookie = finish(s)
        assert cookie
        s = open_session(mw, cookie)
        s.start()
        assert dict(s) == {}
        assert finish(s) == ""  # the old cookie is deleted, not left in the browser

    def test_terminate_then_start_deletes_cookie(self, web: Web) -> None:
        mw = web.middleware()
        s = open_session(mw)
        s["a"] = 1
        cookie = finish(s)
        s = open_session(mw, cookie)
        s.terminate()
        s.start()
        assert finish(s) == ""


class TestRegenerate:
    def test_server_session(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, old_sid = new_server_session(web, mw, user=1)
        s = open_session(mw, cookie)
        expires = s.expires_at
        web.reset()
        s.regenerate_id()
        new_sid = s.sid
        assert new_sid and new_sid != old_sid
        assert dict(s) == {"user": 1}
        assert s.expires_at == expires
        # deleted at once, DB first then cache
        assert web.sql.count("DELETE") == 1
        assert web.stats.deletes == 1
        assert web.row(old_sid) is None
        assert not web.cached(old_sid)
        new_cookie = finish(s)
        assert new_cookie
        assert web.row(new_sid) is not None
        assert dict(open_session(mw, new_cookie)) == {"user": 1}
        old = open_session(mw, cookie)
        assert not old.is_active()
        assert dict(old) == {}

    def test_cookie_session_keeps_ssl_only_and_sets_expiry(self, web: Web) -> None:
        mw = web.middleware()
        s = open_session(mw, https=True)
        s.start(ssl_only=True)
        s["a"] = 1
        cookie = finish(s)
        s = open_session(mw, cookie, https=True)
        old_sid = s.sid
        s.regenerate_id(expiration=timedelta(hours=2))
        assert s.sid != old_sid
        assert s.is_ssl_only()
        assert s.expires_at == web.clock() + timedelta(hours=2)
        new_cookie = finish(s)
        again = open_session(mw, new_cookie, https=True)
        assert again.sid == s.sid
        assert again.is_ssl_only()
        assert dict(again) == {"a": 1}

    def test_inactive(self, web: Web) -> None:
        mw = web.middleware()
        s = open_session(mw)
        s.regenerate_id()
        assert not s.is_active()
        s.regenerate_id(expiration=timedelta(hours=1))
        assert s.is_active()
        assert dict(s) == {}
        assert finish(s) is None  # still empty: nothing stored, no cookie


class TestTerminate:
    def test_server_session(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, a=1)
        s = open_session(mw, cookie)
        assert s["a"] == 1
        web.reset()
        s.terminate()
        assert web.sql.count("DELETE") == 1
        assert web.stats.deletes == 1
        assert web.row(sid) is None
        assert not web.cached(sid)
        assert not s.is_active()
        assert s.sid is None
        assert s.expires_at is None
        assert finish(s) == ""
        old = open_session(mw, cookie)
        assert dict(old) == {}
        assert not old.is_active()

    def test_terminate_then_write_gives_a_new_session(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, a=1)
        s = open_session(mw, cookie)
        s.terminate()
        s["b"] = 2
        assert s.sid != sid
        new_cookie = finish(s)
        assert new_cookie
        assert dict(open_session(mw, new_cookie)) == {"b": 2}
        assert web.row(sid) is None


class TestQuick:
    def test_quick_writes_touch_only_the_cache(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, a=1)
        version = web.row(sid).version
        s = open_session(mw, cookie)
        web.reset()
        s.set_quick("q", "fast")
        assert s.pop_quick("missing", "dflt") == "dflt"
        assert finish(s) is None  # the version did not change: neither does the cookie
        # no SQL: the load's cache get, then a compare-and-swap of that very copy (a
        # logout or revoke meanwhile would have replaced it: no resurrection)
        assert web.counts() == (0, 1, 1, 0)
        assert web.row(sid).version == version
        assert open_session(mw, cookie)["q"] == "fast"
        s = open_session(mw, cookie)
        web.reset()
        assert s.pop_quick("q") == "fast"
        finish(s)
        assert web.counts() == (0, 1, 1, 0)
        assert "q" not in open_session(mw, cookie)

    def test_quick_value_lost_on_cache_flush(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, a=1)
        s = open_session(mw, cookie)
        s.set_quick("q", 1)
        finish(s)
        web.evict(sid)
        assert dict(open_session(mw, cookie)) == {"a": 1}  # the last DB version

    def test_full_and_quick_write_persist_everything(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, a=1)
        s = open_session(mw, cookie)
        web.reset()
        s.set_quick("q", 1)
        s["full"] = 2
        finish(s)
        assert web.sql.count("UPDATE") == 1
        assert len(web.sql.statements) == 1
        assert web.stats.sets == 1
        web.evict(sid)
        assert dict(open_session(mw, cookie)) == {"a": 1, "q": 1, "full": 2}

    def test_no_datastore_keeps_server_sessions_in_the_cache(self, web: Web) -> None:
        mw = server_mw(web, no_datastore=True)
        web.reset()
        s = open_session(mw)
        s["a"] = 1
        cookie = finish(s)
        assert cookie and cookie.split(".")[1] == "i"
        s = open_session(mw, cookie)
        assert s["a"] == 1
        s["b"] = 2
        finish(s)
        assert dict(open_session(mw, cookie)) == {"a": 1, "b": 2}
        assert web.sql.statements == []
        assert web.rows() == 0


class TestDirtyTracking:
    def test_unmarked_in_place_change_is_not_saved(self, web: Web) -> None:
        for mw in (web.middleware(), server_mw(web)):
            s = open_session(mw)
            s["cart"] = [1]
            cookie = finish(s)
            s = open_session(mw, cookie)
            s["cart"].append(2)
            assert not s.modified
            web.reset()
            assert finish(s) is None
            assert web.counts() == (0, 0, 0, 0)
            assert open_session(mw, cookie)["cart"] == [1]  # documented behaviour

    def test_mark_changed_and_modified_save_in_place_changes(self, web: Web) -> None:
        for mw in (web.middleware(), server_mw(web)):
            s = open_session(mw)
            s["cart"] = [1]
            s["tags"] = {"a"}
            cookie = finish(s)
            s = open_session(mw, cookie)
            s["cart"].append(2)
            s.mark_changed("cart")
            assert s.modified
            cookie = finish(s) or cookie
            assert open_session(mw, cookie)["cart"] == [1, 2]
            s = open_session(mw, cookie)
            s["tags"].add("b")
            s.modified = True
            cookie = finish(s) or cookie
            assert open_session(mw, cookie)["tags"] == {"a", "b"}

    def test_unchanged_server_session_is_not_written(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, _ = new_server_session(web, mw, a=1)
        s = open_session(mw, cookie)
        web.reset()
        assert dict(s) == {"a": 1}
        assert finish(s) is None
        assert web.counts() == (0, 1, 0, 0)


class Gift:
    """A plain class a store may allow in pickled sessions (module level, importable)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Gift) and other.label == self.label

    __hash__ = None  # type: ignore[assignment]


class TestLazyValues:
    """A server session unpickles only the keys a request reads (keyed pickles)."""

    def test_only_read_keys_are_decoded(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, _ = new_server_session(web, mw, user=7, cart=[{"sku": "A"}] * 50, notes="n" * 500)
        s = open_session(mw, cookie)
        assert s["user"] == 7
        assert type(s._data["cart"]) is Packed and type(s._data["notes"]) is Packed
        assert s.get("notes") == "n" * 500
        assert type(s._data["cart"]) is Packed
        assert "cart" in s and len(s) == 3
        assert dict(s) == {"user": 7, "cart": [{"sku": "A"}] * 50, "notes": "n" * 500}
        assert finish(s) is None  # reading is never a write

    def test_untouched_keys_are_saved_byte_for_byte(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, big="x" * 3000, hits=0)
        before = web.row(sid).data
        s = open_session(mw, cookie)
        s.increment("hits")
        assert id_cookie_of(web, finish(s), sid)
        after = web.row(sid).data
        assert (
            pickle.dumps("x" * 3000, protocol=5) in before
            and pickle.dumps("x" * 3000, protocol=5) in after
        )
        assert dict(open_session(mw, cookie)) == {"big": "x" * 3000, "hits": 1}

    def test_in_place_change_of_a_read_value_is_saved_with_another_change(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, _ = new_server_session(web, mw, cart=[1], other=0)
        s = open_session(mw, cookie)
        s["cart"].append(2)  # read, so it is pickled again at the save, as before
        s["other"] = 1
        finish(s)
        assert open_session(mw, cookie)["cart"] == [1, 2]

    def test_mapping_views_and_pops_decode(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, _ = new_server_session(web, mw, a=[1], b={"x": 2}, c=3, d=4)
        s = open_session(mw, cookie)
        assert sorted(s.items()) == [("a", [1]), ("b", {"x": 2}), ("c", 3), ("d", 4)]
        s = open_session(mw, cookie)
        assert s.pop("a") == [1]
        assert s.pop_quick("b") == {"x": 2}
        s.mark_changed("c")
        assert s.setdefault("d", 9) == 4
        assert s == {"c": 3, "d": 4}

    def test_concurrent_increment_merges_onto_packed_values(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, _ = new_server_session(web, mw, hits=10, big="y" * 2000)
        first, second = open_session(mw, cookie), open_session(mw, cookie)
        first.increment("hits")
        second.increment("hits", 5)
        second["note"] = "second"
        finish(first)
        finish(second)  # conflict: merged onto the fresh, still-packed data
        assert dict(open_session(mw, cookie)) == {"hits": 16, "big": "y" * 2000, "note": "second"}

    def test_server_session_shrinking_back_into_the_cookie_is_decoded(self, web: Web) -> None:
        mw = web.middleware()
        s = open_session(mw)
        s.update(small=1, big=os.urandom(3000).hex())  # incompressible: too big for a cookie
        cookie = finish(s)
        assert cookie is not None and cookie.split(".")[1] == "i"
        s = open_session(mw, cookie)
        del s["big"]
        cookie = finish(s)
        assert cookie is not None and cookie.split(".")[1] == "d"
        assert dict(open_session(mw, cookie)) == {"small": 1}

    def test_a_stored_session_is_tried_as_a_cookie_only_once_it_shrinks(self, web: Web) -> None:
        """Far over the budget (stored bytes > 4x the cookie threshold), a save skips the
        cookie attempt even when the data would compress into one; under it, it tries."""
        mw = web.middleware(cookie_only_threshold=0)
        s = open_session(mw)
        s.update(a=1, filler="a" * 20_000)  # 20 KB that deflates to almost nothing
        cookie = finish(s)
        assert cookie is not None and cookie.split(".")[1] == "i"
        mw = web.middleware()  # the default 4 KB budget: 20 KB stored is far over it
        s = open_session(mw, cookie)
        s["a"] = 2
        cookie = finish(s)
        assert cookie is not None and cookie.split(".")[1] == "i", "stayed server-side"
        s = open_session(mw, cookie)
        s["filler"] = "a" * 8_000  # 8 KB: under 4x the budget, so the cookie is tried
        cookie = finish(s)
        assert cookie is not None and cookie.split(".")[1] == "dz", "back into its cookie"
        assert dict(open_session(mw, cookie)) == {"a": 2, "filler": "a" * 8_000}

    def test_value_the_allow_list_no_longer_accepts_is_dropped(
        self, web: Web, caplog: pytest.LogCaptureFixture
    ) -> None:
        generous = web.new_store(pickle_classes=[Gift])
        cookie, sid = new_server_session(web, server_mw(web, store=generous), gift=Gift("g"), n=1)
        web.evict(sid)
        strict = server_mw(web)  # the same table, without Gift in the allow-list
        s = open_session(strict, cookie)
        assert s["n"] == 1  # the rest of the session still works
        with caplog.at_level(logging.ERROR, logger="sa_sessions.security"):
            assert s.get("gift", "gone") == "gone"
        assert "cannot be decoded" in caplog.text
        assert "gift" not in caplog.text.lower()  # neither the key nor the class is logged
        with pytest.raises(KeyError):
            s["gift"]
        s["n"] = 2
        finish(s)
        assert dict(open_session(strict, cookie)) == {"n": 2}  # saved without it


class TestConcurrency:
    """Two requests interleaved deterministically (rows 33 and 34 of the catalogue)."""

    def test_per_key_merge(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, base=0, shared="orig", gone=1)
        v1 = web.row(sid).version
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        a["x"] = 1
        a["shared"] = "from a"
        b["y"] = 2
        b["shared"] = "from b"
        del b["gone"]
        assert id_cookie_of(web, finish(b), sid)
        assert id_cookie_of(web, finish(a), sid)  # the same session, a newer version
        assert dict(open_session(mw, cookie)) == {
            "base": 0,
            "x": 1,
            "y": 2,
            "shared": "from a",  # same key: the later save wins
        }
        assert web.row(sid).version == v1 + 2

    def test_conflict_past_the_retry_bound(self, web: Web) -> None:
        mw = server_mw(web, store=web.new_store(merge_retries=0))
        cookie, sid = new_server_session(web, mw, a=1)
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        a["x"] = 1
        b["y"] = 2
        finish(b)
        row = web.row(sid)
        with pytest.raises(SessionConflict):
            a.finalize()
        assert web.row(sid) == row  # stored state unchanged

    def test_logout_is_not_undone_by_a_slower_request(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, user=1)
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        assert a["user"] == 1
        a["late"] = True
        b.terminate()
        assert finish(b) == ""
        web.reset()
        assert a.finalize() == []  # no cookie re-issued (nor deleted)
        assert web.sql.count("INSERT") == 0
        assert web.row(sid) is None
        assert not web.cached(sid)
        assert not open_session(mw, cookie).is_active()

    def test_logout_is_not_undone_when_the_slow_request_shrinks_into_a_cookie(
        self, web: Web
    ) -> None:
        mw = web.middleware()
        s = open_session(mw)
        s["big"] = random_text(6000)
        s["user"] = 1
        cookie = finish(s)
        assert cookie and cookie.split(".")[1] == "i"
        sid = s.sid
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        del a["big"]  # small enough for a cookie now
        b.terminate()
        finish(b)
        headers = a.finalize()
        assert not any(name == "Set-Cookie" and "=v1." in value for name, value in headers), (
            "a logged-out session came back as a data cookie"
        )
        assert sid is not None and web.row(sid) is None

    @pytest.mark.parametrize("quick", ["set_quick", "pop_quick"])
    def test_quick_write_after_a_logout_does_not_resurrect(self, web: Web, quick: str) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, user=1, flash="hi")
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        assert a["user"] == 1
        b.terminate()
        finish(b)
        if quick == "set_quick":
            a.set_quick("flash", "saved")
        else:
            a.pop_quick("flash")
        assert a.finalize() == []
        assert web.row(sid) is None
        assert not web.cached(sid)
        assert not open_session(mw, cookie).is_active()

    def test_quick_write_after_a_concurrent_full_write_merges(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, sid = new_server_session(web, mw, a=1)
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        assert a["a"] == 1
        b["b"] = 2
        finish(b)
        a.set_quick("q", 3)
        finish(a)
        assert dict(open_session(mw, cookie)) == {"a": 1, "b": 2, "q": 3}
        assert web.row(sid).version == 3  # b's update, then a's quick write merged into the row

    def test_no_datastore_write_after_a_logout_does_not_resurrect(self, web: Web) -> None:
        mw = server_mw(web, no_datastore=True)
        s = open_session(mw)
        s["user"] = 1
        cookie = finish(s)
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        assert a["user"] == 1
        b.terminate()
        finish(b)
        a["late"] = True
        assert a.finalize() == []
        assert not open_session(mw, cookie).is_active()

    def test_shrinking_into_the_cookie_keeps_a_concurrent_change(self, web: Web) -> None:
        mw = web.middleware()
        s = open_session(mw)
        s["big"] = random_text(6000)
        s["a"] = 1
        cookie = finish(s)
        assert cookie and cookie.split(".")[1] == "i"
        sid = s.sid
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        del a["big"]
        b["y"] = 2
        assert id_cookie_of(web, finish(b), sid)  # still big: an UPDATE
        new_cookie = finish(a)  # small now: back into the cookie, with b's key
        assert new_cookie and new_cookie.split(".")[1] == "d"
        assert dict(open_session(mw, new_cookie)) == {"a": 1, "y": 2}
        assert sid is not None and web.row(sid) is None

    def test_regenerate_racing_the_old_id(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, old_sid = new_server_session(web, mw, user=1)
        a, b = open_session(mw, cookie), open_session(mw, cookie)
        a["x"] = 1
        b.regenerate_id()
        new_cookie = finish(b)
        assert new_cookie
        assert a.finalize() == []  # must not delete the browser's new cookie either
        assert web.row(old_sid) is None
        assert not web.cached(old_sid)
        assert not open_session(mw, cookie).is_active()
        assert dict(open_session(mw, new_cookie)) == {"user": 1}


def id_cookie_of(web: Web, value: str | None, sid: str | None) -> bool:
    """True when ``value`` is a valid id cookie of the session ``sid``."""
    if not value or value.split(".")[1] != "i":
        return False
    state = cookie_codec().decode(value, now=web.clock())
    return state is not None and state.session_id == sid


class TestChecklistPins:
    """Behaviours of gae-sessions that are kept, or deliberately changed."""

    def test_setting_a_key_to_its_current_value_writes(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, _ = new_server_session(web, mw, a=1)
        s = open_session(mw, cookie)
        s["a"] = 1
        web.reset()
        finish(s)
        assert web.sql.count("UPDATE") == 1

    def test_pop_of_a_missing_key_writes_nothing(self, web: Web) -> None:
        mw = server_mw(web)
        cookie, _ = new_server_session(web, mw, a=1)
        s = open_session(mw, cookie)
        assert s.pop("missing", None) is None
        with pytest.raises(KeyError):
            del s["missing"]
        web.reset()
        assert finish(s) is None
        assert web.sql.statements == []

    def test_a_session_started_by_set_quick_is_stored_in_full(self, web: Web) -> None:
        """A quick write needs a stored copy to swap; a new session has none, and a
        session living in the cache alone could be neither revoked nor revalidated."""
        mw = web.middleware()
        web.reset()
        s = open_session(mw)
        s.set_quick("big", random_text(6000))
        cookie = finish(s)
        assert cookie and cookie.split(".")[1] == "i"
        assert web.sql.count("INSERT") == 1
        assert web.counts()[1:] == (0, 1, 0)
        assert open_session(mw, cookie)["big"] == random_text(6000)
        s = open_session(mw, cookie)
        s["full"] = 1
        web.reset()
        assert finish(s)
        assert web.sql.count("UPDATE") == 1
        assert s.sid is not None and web.row(s.sid) is not None

    def test_no_datastore_cache_miss_ends_the_session_without_sql(self, web: Web) -> None:
        mw = server_mw(web, no_datastore=True)
        s = open_session(mw)
        s["a"] = 1
        cookie = finish(s)
        assert s.sid is not None
        web.evict(s.sid)
        web.reset()
        again = open_session(mw, cookie)
        assert not again.is_active()
        assert web.sql.statements == []  # no_datastore: the database is never asked

    def test_duplicate_session_cookies_are_logged(
        self, web: Web, caplog: pytest.LogCaptureFixture
    ) -> None:
        mw = web.middleware()
        s = open_session(mw)
        s["a"] = 1
        first = finish(s)
        s = open_session(mw)
        s["a"] = 2
        second = finish(s)
        from sa_sessions import Session

        from .webapp import environ_for

        header = f"session={first}; session={second}"
        with caplog.at_level(logging.INFO, logger="sa_sessions"):
            dup = Session(mw.settings, environ_for(header))
            assert dup["a"] == 1  # the first that verifies
        assert any("cookies" in r.getMessage() for r in caplog.records)
        for r in caplog.records:
            assert str(first) not in r.getMessage() and str(second) not in r.getMessage()
