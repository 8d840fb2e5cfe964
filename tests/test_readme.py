"""The README, checked: its quick starts are the examples' code, every Python block in it
runs as written, and its tables and claims match the code."""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import runpy
import sqlite3
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from dogpile.cache import make_region
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.schema import CreateTable
from webtest import TestApp

import sa_sessions
from sa_sessions import Session
from sa_sessions import SessionConfigError
from sa_sessions import SessionMiddleware
from sa_sessions import SessionModel
from sa_sessions import SessionStore
from sa_sessions import get_current_session
from sa_sessions import memcached_region
from sa_sessions import memory_region
from sa_sessions import redis_region
from sa_sessions._clock import utcnow
from sa_sessions.cache.memcached import MemcachedBackend
from sa_sessions.cache.memory import MemoryBackend
from sa_sessions.cache.redis import RedisBackend
from sa_sessions.settings import SessionSettings

from .conftest import OTHER_SECRET
from .conftest import SECRET
from .conftest import missing_service

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The README's prose with every run of whitespace as one space, for phrases that wrap.
FLAT = " ".join(README.split())


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    language: str
    code: str
    line: int
    heading: str  # the "## ..." section it is in
    marker: str = ""  # the name of an HTML comment right above it, e.g. "quickstart-wsgi"
    argument: str = ""  # what follows "name: " in that comment

    @property
    def id(self) -> str:
        return f"line{self.line}-" + re.sub(r"\W+", "-", self.heading.lower()).strip("-")


_FENCE = re.compile(
    r"^## (?P<heading>[^\n]*)$"
    r"|^(?:<!-- (?P<marker>[\w-]+)(?:: (?P<argument>[^>\n]*?))? -->\n)?"
    r"```(?P<language>\w*)\n(?P<code>.*?)^```$",
    re.M | re.S,
)


def _blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    heading = ""
    for match in _FENCE.finditer(text):
        if match["heading"] is not None:
            heading = match["heading"]
            continue
        line = text.count("\n", 0, match.start("language")) + 1
        blocks.append(
            Block(
                match["language"],
                match["code"],
                line,
                heading,
                match["marker"] or "",
                match["argument"] or "",
            )
        )
    return blocks


BLOCKS = _blocks(README)
PYTHON_BLOCKS = [block for block in BLOCKS if block.language == "python"]


def marked(marker: str) -> Block:
    [block] = [block for block in BLOCKS if block.marker == marker]
    return block


def in_section(heading: str, language: str = "python") -> Block:
    """The first block of that language in the section."""
    return next(b for b in BLOCKS if b.heading == heading and b.language == language)


#: Modules a README block may need that are not part of every test install.
_OPTIONAL = {
    "sa_sessions.flask": "sa_sessions.flask is not in this tree yet",
    "flask": "flask is not installed",
}
_DRIVERS = {"MySQLdb": "mysqlclient", "psycopg": "psycopg"}


@pytest.fixture(autouse=True)
def _dispose_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dispose of the engines the README's code creates, as a process exiting would."""
    created: list[Engine] = []
    real = sqlalchemy.create_engine

    def recording(*args: Any, **kwargs: Any) -> Engine:
        engine = real(*args, **kwargs)
        created.append(engine)
        return engine

    monkeypatch.setattr(sqlalchemy, "create_engine", recording)
    yield
    for engine in created:
        engine.dispose()


def run_block(block: Block, cwd: Path) -> dict[str, Any]:
    """Run a Python block as a script in ``cwd`` (which the caller made the current
    directory), next to the files the README writes out with ``<!-- readme-file: NAME -->``;
    returns the script's globals."""
    for other in BLOCKS:
        if other.marker == "readme-file":
            (cwd / other.argument).write_text(other.code, encoding="utf-8")
    script = cwd / f"readme_{block.id.replace('-', '_')}.py"
    script.write_text(block.code, encoding="utf-8")
    try:
        return runpy.run_path(str(script))
    except ModuleNotFoundError as exc:
        if exc.name in _OPTIONAL:
            pytest.skip(_OPTIONAL[exc.name])
        if exc.name in _DRIVERS:
            missing_service(f"the {_DRIVERS[exc.name]} driver")
        raise


# --------------------------------------------------------------------------- structure


def test_blocks_are_found() -> None:
    assert len(PYTHON_BLOCKS) >= 5
    assert {b.marker for b in PYTHON_BLOCKS} >= {
        "quickstart-bottle",
        "quickstart-wsgi",
        "quickstart-flask",
    }
    assert all(block.code.strip() for block in BLOCKS)


def test_readme_has_exactly_the_two_setup_commands() -> None:
    section = README.split("## Set-up commands", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", section, re.M)
    assert commands == ["make demo", "make test"]


def test_benchmark_summary_markers_are_kept() -> None:
    start = README.index("<!-- benchmark-summary:start -->")
    assert README.index("<!-- benchmark-summary:end -->") > start


def _imports_and_body(code: str) -> tuple[list[str], str]:
    """The block's leading import lines, and everything after them."""
    lines = code.splitlines(keepends=True)
    index = 0
    while index < len(lines) and (
        lines[index].startswith(("import ", "from ")) or not lines[index].strip()
    ):
        index += 1
    imports = [line.rstrip("\n") for line in lines[:index] if line.strip()]
    return imports, "".join(lines[index:])


@pytest.mark.parametrize(
    ("marker", "example"),
    [
        ("quickstart-bottle", "quickstart_bottle.py"),
        ("quickstart-wsgi", "quickstart_wsgi.py"),
        ("quickstart-flask", "quickstart_flask.py"),
    ],
)
def test_quick_start_is_the_example_code(marker: str, example: str) -> None:
    path = ROOT / "examples" / example
    if not path.exists():
        pytest.skip(f"examples/{example} is not in this tree yet")
    source = path.read_text(encoding="utf-8")
    imports, body = _imports_and_body(marked(marker).code)
    assert len(body.splitlines()) >= 10
    assert body in source, f"the README's {marker} block differs from examples/{example}"
    example_lines = set(source.splitlines())
    assert [line for line in imports if line not in example_lines] == []


# --------------------------------------------------------------------------- every block runs


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_block_runs_as_written(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SA_SESSIONS_COOKIE_KEY", raising=False)
    monkeypatch.delenv("SESSION_KEYS", raising=False)
    run_block(block, tmp_path)


@pytest.mark.parametrize("marker", ["quickstart-bottle", "quickstart-wsgi", "quickstart-flask"])
def test_quick_start_counts_visits_in_the_cookie(
    marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = run_block(marked(marker), tmp_path)["create_app"]()
    client = TestApp(app)
    assert client.get("/").text == "Hello! Visits in this session: 1\n"
    assert client.get("/").text == "Hello! Visits in this session: 2\n"
    assert client.cookies["session"].startswith("v1.d."), "a data cookie"
    bye = client.get("/logout")
    assert bye.text == "Bye.\n"
    [expired] = bye.headers.getall("Set-Cookie")
    assert expired.startswith("session=;") and "Max-Age=0" in expired
    assert client.get("/").text == "Hello! Visits in this session: 1\n"
    with contextlib.closing(sqlite3.connect(tmp_path / "quickstart.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM web_sessions").fetchone() == (0,), "no row"


def test_behind_a_tls_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_fix = pytest.importorskip("werkzeug.middleware.proxy_fix")
    monkeypatch.chdir(tmp_path)
    namespace = run_block(marked("quickstart-wsgi"), tmp_path)
    app = namespace["create_app"]()
    https = {"X-Forwarded-Proto": "https"}

    plain = TestApp(app).get("/", headers=https).headers["Set-Cookie"]
    assert plain.startswith("session=") and "; Secure" not in plain, "the header alone is ignored"
    fixed = TestApp(proxy_fix.ProxyFix(app, x_proto=1)).get("/", headers=https)
    cookie = fixed.headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=") and "; Secure" in cookie
    always = SessionMiddleware(namespace["hello"], cookie_key=namespace["KEY"], secure=True)
    cookie = TestApp(always).get("/").headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=") and "; Secure" in cookie


def test_model_block_builds_what_it_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = run_block(in_section("Your model, on real servers"), tmp_path)
    store: SessionStore[Any] = namespace["store"]
    engine = namespace["engine"]
    assert engine.dialect.name == "mysql"
    assert engine.pool._pre_ping
    ddl = str(CreateTable(namespace["WebSession"].__table__).compile(dialect=engine.dialect))
    assert "data MEDIUMBLOB NOT NULL" in ddl
    assert "FOREIGN KEY(user_id) REFERENCES users (id)" in ddl
    assert store.model is namespace["WebSession"] and store.engine is engine
    assert set(store.columns) == {"user_id"}
    assert store.has_derived_values({"user_id": 42}) and not store.has_derived_values({})
    backend = namespace["region"].backend
    assert isinstance(backend, MemcachedBackend)
    assert backend.pool.servers == ["10.0.0.5:11211", "10.0.0.6:11211"]
    assert "mysqldb://app:***@db/app" in repr(store)


class _Base(DeclarativeBase):
    pass


class _WebSession(SessionModel, _Base):
    __tablename__ = "readme_sessions"


def test_ini_block_gives_a_region_the_store_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    [ini] = [block for block in BLOCKS if block.language == "ini"]
    assert ini.marker == "readme-file"
    code = next(b for b in PYTHON_BLOCKS if f'config.read("{ini.argument}")' in b.code)
    region = run_block(code, tmp_path)["region"]
    assert isinstance(region.backend, MemcachedBackend)
    assert region.backend.pool.servers == ["10.0.0.5:11211", "10.0.0.6:11211"]
    model = _WebSession
    SessionStore(model, create_engine("sqlite://"), region=region, secret_keys=SECRET)

    redis = make_region().configure_from_config(
        {"c.backend": "sa_sessions.redis", "c.arguments.url": "redis://10.0.0.7:6379/0"}, "c."
    )
    assert isinstance(redis.backend, RedisBackend)
    SessionStore(model, create_engine("sqlite://"), region=redis, secret_keys=SECRET)
    unpickling = {
        "dogpile.cache.pymemcache": {"url": ["127.0.0.1:1"]},
        "dogpile.cache.redis": {"url": "redis://127.0.0.1:1/0"},
    }
    for backend_name, arguments in unpickling.items():
        other = make_region().configure(backend_name, arguments=arguments)
        with pytest.raises(SessionConfigError, match="memcached_region"):
            SessionStore(model, create_engine("sqlite://"), region=other, secret_keys=SECRET)


def test_backends_are_dogpile_entry_points() -> None:
    found = {ep.name: ep for ep in entry_points(group="dogpile.cache")}
    expected = {
        "sa_sessions.pymemcache": MemcachedBackend,
        "sa_sessions.redis": RedisBackend,
        "sa_sessions.memory": MemoryBackend,
    }
    for name, backend in expected.items():
        assert name in README
        assert name in found, f"{name} is not registered (reinstall the package?)"
        assert found[name].load() is backend


# --------------------------------------------------------------------------- tables


def _table_after(anchor: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after ``anchor``."""
    text = README[README.index(anchor) :]
    lines = text[text.index("\n|") + 1 :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


_REQUIRED = inspect.Parameter.empty
_WORDS: dict[str, object] = {
    "required": _REQUIRED,
    "UTC now": utcnow,
    "4 MiB": 4 * 1024 * 1024,
    "512 KiB": 512 * 1024,
    "30 s": timedelta(seconds=30),
}


def _documented(cell: str) -> object:
    if cell in _WORDS:
        return _WORDS[cell]
    assert cell.startswith("`") and cell.endswith("`"), cell
    return eval(cell.strip("`"), {"timedelta": timedelta})


def _options(table: list[list[str]]) -> dict[str, object]:
    """option name -> documented default; a row may list several (``path``, ``domain``)."""
    options: dict[str, object] = {}
    for name_cell, default_cell, *_ in table:
        names = re.findall(r"`(\w+)`", name_cell)
        defaults = default_cell.split(", ") if len(names) > 1 else [default_cell]
        assert len(names) == len(defaults), name_cell
        options.update(zip(names, map(_documented, defaults), strict=True))
    return options


def _defaults(function: Callable[..., Any], skip: set[str]) -> dict[str, object]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in skip}


def test_middleware_options_table_matches_the_code() -> None:
    documented = _options(_table_after("`SessionMiddleware(app, store=None, **options)`"))
    assert documented == _defaults(SessionSettings.build, {"store"})
    extra = _defaults(SessionMiddleware.__init__, {"self", "app", "store", "options"})
    assert extra["backend_error_status"] == "503 Service Unavailable"
    assert '`backend_error_status` (`"503 Service Unavailable"`)' in FLAT
    assert set(extra) == {"backend_error_status", "backend_error_body", "settings"}
    bottle_plugin = pytest.importorskip("sa_sessions.bottle")
    plugin = _defaults(bottle_plugin.SessionPlugin.__init__, {"self", "store", "options"})
    assert (plugin["keyword"], plugin["backend_error_status"]) == ("session", 503)
    assert "the plugin `backend_error_status` (`503`)" in FLAT
    assert '`SessionPlugin(store=None, keyword="session", **options)`' in FLAT
    flask_interface = pytest.importorskip("sa_sessions.flask").FlaskSessionInterface
    interface = _defaults(flask_interface.__init__, {"self", "options"})
    assert (interface["store"], interface["retry_after"]) == (None, 5)
    assert "`FlaskSessionInterface(store=None, **options)`" in FLAT
    assert "the Flask interface `retry_after` (`5` seconds" in FLAT


def test_store_options_table_matches_the_code() -> None:
    documented = _options(_table_after("`SessionStore(model, bind, *, region=None"))
    actual = _defaults(SessionStore.__init__, {"self", "model"})
    # None stands for the class's own default in the signature.
    actual["max_session_bytes"] = SessionStore.default_max_session_bytes
    actual["max_cache_bytes"] = SessionStore.default_max_cache_bytes
    actual["columns"] = {} if actual["columns"] is None else actual["columns"]
    assert documented == actual


def test_region_defaults_in_the_prose_match_the_code() -> None:
    memcached = _defaults(memcached_region, set())
    redis = _defaults(redis_region, set())
    assert memcached["connect_timeout"] == memcached["timeout"] == 0.25
    assert redis["socket_connect_timeout"] == redis["socket_timeout"] == 0.25
    for defaults in (memcached, redis):
        assert defaults["failure_threshold"] == 2
        assert defaults["dead_timeout"] == 5.0
    assert "time out after 0.25 s" in FLAT
    assert "`failure_threshold=2`" in FLAT and "`dead_timeout=5` seconds" in FLAT
    assert _defaults(memory_region, set())["max_entries"] == 10_000
    assert "memory_region(max_entries=10_000)" in FLAT


def test_session_api_table_matches_the_code() -> None:
    table = _table_after("## The Session API")
    checked = 0
    for call, _ in table:
        for item in re.findall(r"`([^`]+)`", call):
            match = re.fullmatch(r"(\w+)(?:\((.*)\))?(?: = \w+)?", item)
            if match is None:
                continue  # session[key] = value
            name, arguments = match[1], match[2]
            assert hasattr(Session, name), name
            checked += 1
            if arguments is None:
                continue
            parameters = inspect.signature(getattr(Session, name)).parameters
            for argument in filter(None, arguments.split(", ")):
                key, _, default = argument.partition("=")
                key = key.lstrip("*")
                assert key in parameters, f"{name}() has no parameter {key}"
                expected = eval(default) if default else _REQUIRED
                assert parameters[key].default == expected, f"{name}({key})"
    assert checked >= 15


def test_errors_table_names_real_exceptions() -> None:
    names = [re.findall(r"`(\w+)`", row[0])[0] for row in _table_after("## Errors a handler")]
    assert names == [
        "SessionTooLarge",
        "UnstorableValue",
        "SessionIntegrityError",
        "SessionConflict",
        "SessionBackendUnavailable",
    ]
    for name in names:
        assert issubclass(getattr(sa_sessions, name), sa_sessions.SessionError)
    assert issubclass(sa_sessions.UnstorableValue, TypeError)


# --------------------------------------------------------------------------- claims


def _counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Counts visits on ``/``; any other path never touches the session."""
    body = b"-"
    if environ["PATH_INFO"] == "/":
        body = str(get_current_session().increment("n")).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_expired_cookie_is_debug_and_tampered_is_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    app = TestApp(SessionMiddleware(_counter, cookie_key=SECRET, clock=clock))
    app.get("/")
    value = app.cookies["session"]
    clock.now += timedelta(days=8)  # past the 7-day lifetime
    with caplog.at_level(logging.DEBUG, logger="sa_sessions.security"):
        res = app.get("/")
    assert res.text == "1", "a fresh session"
    assert [r.levelname for r in caplog.records if r.name == "sa_sessions.security"] == ["DEBUG"]
    caplog.clear()

    clock.now -= timedelta(days=8)
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    fresh = TestApp(SessionMiddleware(_counter, cookie_key=SECRET, clock=clock))
    with caplog.at_level(logging.DEBUG, logger="sa_sessions.security"):
        res = fresh.get("/", headers={"Cookie": f"session={tampered}"})
    assert res.text == "1"
    assert [r.levelname for r in caplog.records if r.name == "sa_sessions.security"] == ["WARNING"]


def test_old_key_cookie_is_re_signed_only_by_a_request_that_uses_the_session() -> None:
    old = TestApp(SessionMiddleware(_counter, cookie_key=SECRET))
    old.get("/")
    cookie = {"Cookie": f"session={old.cookies['session']}"}
    rotated = TestApp(SessionMiddleware(_counter, cookie_key=[SECRET, OTHER_SECRET]))
    assert rotated.get("/static", headers=cookie).headers.getall("Set-Cookie") == []
    used = rotated.get("/", headers=cookie)
    assert used.text == "2"
    [resigned] = used.headers.getall("Set-Cookie")
    newest_only = TestApp(SessionMiddleware(_counter, cookie_key=OTHER_SECRET))
    value = resigned.split(";", 1)[0].split("=", 1)[1]
    assert newest_only.get("/", headers={"Cookie": f"session={value}"}).text == "3"
