"""The README and the guides it leads to, checked against the code.

README.md, docs/quickstart.md and docs/configuration.md: their quick starts are the
examples' code (the README's as literal copies, the guide's as the code
``docs/conf.py`` generates from examples/), every Python block in them runs as
written, and their tables and claims (with docs/security.md's on logging and key
rotation) match the code.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import logging
import re
import runpy
import sqlite3
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from functools import cached_property
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


def _load_example_code() -> Callable[[str], str]:
    """``example_code()`` of docs/conf.py: the code the ``sa-sessions-example`` directive
    shows on the site.  Only that function is loaded, so this runs without Sphinx."""
    path = ROOT / "docs" / "conf.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {"example_code", "_IMPORT"}
    wanted = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name in names)
        or (isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) in names)
    ]
    assert len(wanted) == 2, "docs/conf.py lost example_code() or _IMPORT"
    namespace: dict[str, Any] = {"re": re, "ROOT": ROOT}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), namespace)
    function: Callable[[str], str] = namespace["example_code"]
    return function


example_code = _load_example_code()


@dataclass(frozen=True)
class Block:
    """One fenced block of a page (a MyST directive's generated code included)."""

    page: str  # its path from the repository root, e.g. "docs/configuration.md"
    language: str
    code: str
    line: int
    heading: str  # the "## ..." section it is in
    marker: str = ""  # the name of an HTML comment right above it, e.g. "quickstart-wsgi"
    argument: str = ""  # what follows "name: " in that comment
    directive: str = ""  # a MyST directive's name and argument, e.g. "sa-sessions-example x.py"

    @property
    def id(self) -> str:
        where = re.sub(r"\W+", "-", f"{Path(self.page).stem} line{self.line} {self.heading}")
        return where.lower().strip("-")


_FENCE = re.compile(
    r"^## (?P<heading>[^\n]*)$"
    r"|^(?:<!-- (?P<marker>[\w-]+)(?:: (?P<argument>[^>\n]*?))? -->\n)?"
    r"```(?P<info>[^\n`]*)\n(?P<code>.*?)^```$",
    re.M | re.S,
)
_DIRECTIVE = re.compile(r"\{(?P<name>[\w-]+)\}\s*(?P<argument>.*)")


def _blocks(page: str, text: str) -> list[Block]:
    blocks: list[Block] = []
    heading = ""
    for match in _FENCE.finditer(text):
        if match["heading"] is not None:
            heading = match["heading"]
            continue
        line = text.count("\n", 0, match.start("info")) + 1
        info, code, directive = match["info"].strip(), match["code"], ""
        found = _DIRECTIVE.fullmatch(info)
        if found is not None:
            directive = f"{found['name']} {found['argument']}".strip()
            info = ""
            if found["name"] == "sa-sessions-example":
                # What the site shows: the example's quick start, generated at build time.
                info, code = "python", example_code(found["argument"]) + "\n"
        blocks.append(
            Block(
                page,
                info.split(" ", 1)[0],
                code,
                line,
                heading,
                match["marker"] or "",
                match["argument"] or "",
                directive,
            )
        )
    return blocks


class Page:
    """A Markdown page of the repository, as the tests read it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.text = (ROOT / path).read_text(encoding="utf-8")
        #: The prose with every run of whitespace as one space, for phrases that wrap.
        self.flat = " ".join(self.text.split())
        self.blocks = _blocks(path, self.text)

    @cached_property
    def python_blocks(self) -> list[Block]:
        return [block for block in self.blocks if block.language == "python"]

    def marked(self, marker: str) -> Block:
        [block] = [block for block in self.blocks if block.marker == marker]
        return block

    def in_section(self, heading: str, language: str = "python") -> Block:
        """The first block of that language in the section."""
        return next(b for b in self.blocks if b.heading == heading and b.language == language)

    def section(self, heading: str) -> str:
        """The text of the ``## heading`` section, up to the next ``## `` heading."""
        return self.text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]

    def table_after(self, anchor: str) -> list[list[str]]:
        """The rows (cells stripped) of the first Markdown table after ``anchor``."""
        text = self.text[self.text.index(anchor) :]
        lines = text[text.index("\n|") + 1 :].splitlines()
        rows = []
        for line in lines[2:]:
            if not line.startswith("|"):
                break
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
        return rows


README = Page("README.md")
QUICKSTART = Page("docs/quickstart.md")
CONFIGURATION = Page("docs/configuration.md")
#: The pages whose Python blocks run.
PAGES = [README, QUICKSTART, CONFIGURATION]
#: Checked for its claims only (it has no Python block).
SECURITY = Page("docs/security.md")
PYTHON_BLOCKS = [block for page in PAGES for block in page.python_blocks]

#: Modules a block may need that are not part of every test install.
_OPTIONAL = {
    "sa_sessions.flask": "sa_sessions.flask is not in this tree yet",
    "flask": "flask is not installed",
}
_DRIVERS = {"MySQLdb": "mysqlclient", "psycopg": "psycopg"}


@pytest.fixture(autouse=True)
def created_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Engine]]:
    """Record and then dispose of the engines the pages' code creates, as a process
    exiting would."""
    created: list[Engine] = []
    real = sqlalchemy.create_engine

    def recording(*args: Any, **kwargs: Any) -> Engine:
        engine = real(*args, **kwargs)
        created.append(engine)
        return engine

    monkeypatch.setattr(sqlalchemy, "create_engine", recording)
    yield created
    for engine in created:
        engine.dispose()


def run_block(block: Block, cwd: Path) -> dict[str, Any]:
    """Run a Python block as a script in ``cwd`` (which the caller made the current
    directory), next to the files its page writes out with ``<!-- doc-file: NAME -->``;
    returns the script's globals."""
    page = next(page for page in PAGES if page.path == block.page)
    for other in page.blocks:
        if other.marker == "doc-file":
            (cwd / other.argument).write_text(other.code, encoding="utf-8")
    script = cwd / f"{block.id.replace('-', '_')}.py"
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
    assert {b.marker for b in README.python_blocks} >= {"quickstart-bottle", "quickstart-flask"}
    assert len(README.python_blocks) >= 3
    wsgi = QUICKSTART.marked("quickstart-wsgi")
    assert (wsgi.language, wsgi.directive) == ("python", "sa-sessions-example quickstart_wsgi.py")
    assert len(CONFIGURATION.python_blocks) >= 2
    for page in PAGES:
        assert all(block.code.strip() for block in page.blocks if not block.directive), page.path


def test_readme_has_exactly_the_two_setup_commands() -> None:
    section = README.text.split("## Set-up commands", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", section, re.M)
    assert commands == ["make demo", "make test"]


def test_benchmark_summary_markers_are_kept() -> None:
    start = README.text.index("<!-- benchmark-summary:start -->")
    assert README.text.index("<!-- benchmark-summary:end -->") > start


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_every_guide_and_only_real_targets() -> None:
    documentation = README.section("Documentation")
    # index.md is the site's front page, much like the README itself.
    guides = sorted(path.name for path in (ROOT / "docs").glob("*.md") if path.stem != "index")
    linked = re.findall(r"\]\(docs/([\w-]+\.md)\)", documentation)
    assert sorted(set(linked)) == guides, "the Documentation section lists every guide"
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#([\w-]+))?\)", README.text):
        path, anchor = target
        assert (ROOT / path).is_file(), path
        if anchor:
            text = (ROOT / path).read_text(encoding="utf-8")
            headings = re.findall(r"^#+ (.*)$", text, re.M)
            assert anchor in {_github_anchor(h) for h in headings}, f"{path}#{anchor}"


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


#: (page, marker, example): the quick starts and where they are shown.
QUICK_STARTS = [
    (README, "quickstart-bottle", "quickstart_bottle.py"),
    (README, "quickstart-flask", "quickstart_flask.py"),
    (QUICKSTART, "quickstart-bottle", "quickstart_bottle.py"),
    (QUICKSTART, "quickstart-wsgi", "quickstart_wsgi.py"),
]
_QUICK_START_IDS = [f"{Path(page.path).stem}-{marker}" for page, marker, _ in QUICK_STARTS]


@pytest.mark.parametrize(("page", "marker", "example"), QUICK_STARTS, ids=_QUICK_START_IDS)
def test_quick_start_is_the_example_code(page: Page, marker: str, example: str) -> None:
    path = ROOT / "examples" / example
    if not path.exists():
        pytest.skip(f"examples/{example} is not in this tree yet")
    block = page.marked(marker)
    if page is not README:
        assert block.directive == f"sa-sessions-example {example}", "generated from the example"
    source = path.read_text(encoding="utf-8")
    imports, body = _imports_and_body(block.code)
    assert len(body.splitlines()) >= 10
    assert body in source, f"{page.path}'s {marker} block differs from examples/{example}"
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


@pytest.mark.parametrize(("page", "marker", "example"), QUICK_STARTS, ids=_QUICK_START_IDS)
def test_quick_start_counts_visits_in_the_cookie(
    page: Page, marker: str, example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = run_block(page.marked(marker), tmp_path)["create_app"]()
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
    section = " ".join(CONFIGURATION.section("Behind a TLS-terminating proxy").split())
    for claim in ("`wsgi.url_scheme`", "`X-Forwarded-Proto`", "`ProxyFix(app, x_proto=1)`"):
        assert claim in section
    assert "or pass `secure=True`" in section
    proxy_fix = pytest.importorskip("werkzeug.middleware.proxy_fix")
    monkeypatch.chdir(tmp_path)
    namespace = run_block(QUICKSTART.marked("quickstart-wsgi"), tmp_path)
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
    namespace = run_block(README.in_section("Your model, on real servers"), tmp_path)
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


def test_real_servers_block_builds_what_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, created_engines: list[Engine]
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = run_block(CONFIGURATION.in_section("Pointing it at real servers"), tmp_path)
    postgres, mysql = created_engines
    assert postgres.dialect.name == "postgresql" and postgres.pool._pre_ping
    assert mysql.dialect.name == "mysql" and mysql.pool._pre_ping
    assert mysql.pool._recycle == 1800
    store: SessionStore[Any] = namespace["store"]
    assert store.engine is mysql and store.model is namespace["WebSession"]
    backend = namespace["region"].backend
    assert isinstance(backend, MemcachedBackend)
    assert backend.pool.servers == ["10.0.0.5:11211", "10.0.0.6:11211"]


class _Base(DeclarativeBase):
    pass


class _WebSession(SessionModel, _Base):
    __tablename__ = "readme_sessions"


def test_ini_block_gives_a_region_the_store_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    [ini] = [block for block in CONFIGURATION.blocks if block.language == "ini"]
    assert ini.marker == "doc-file"
    reading = f'config.read("{ini.argument}")'
    code = next(b for b in CONFIGURATION.python_blocks if reading in b.code)
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
        assert name in CONFIGURATION.text
        assert name in found, f"{name} is not registered (reinstall the package?)"
        assert found[name].load() is backend


# --------------------------------------------------------------------------- tables


_REQUIRED = inspect.Parameter.empty
_WORDS: dict[str, object] = {"required": _REQUIRED, "UTC now": utcnow}
_UNITS: dict[str, Callable[[int], object]] = {
    "KiB": lambda n: n * 1024,
    "MiB": lambda n: n * 1024 * 1024,
    "s": lambda n: timedelta(seconds=n),
}


def _documented(cell: str) -> object:
    """The value a table's default cell stands for (``4 MiB``, ``30 s``, ``required``...)."""
    if cell in _WORDS:
        return _WORDS[cell]
    quantity = re.fullmatch(r"(\d+) (KiB|MiB|s)", cell)
    if quantity is not None:
        return _UNITS[quantity[2]](int(quantity[1]))
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


def _check_call(text: str, name: str, function: Callable[..., Any]) -> None:
    """``text`` shows ``name(...)`` with parameters the function has, in its order, with
    its defaults (``**options``: the keyword options of the table that follows)."""
    match = re.search(rf"`{name}\((?P<arguments>[^`]*)\)`", text)
    assert match is not None, f"{name}(...) is not shown"
    definition = ast.parse(f"def f({match['arguments']}): pass").body[0]
    assert isinstance(definition, ast.FunctionDef)
    shown = definition.args
    parameters = inspect.signature(function).parameters
    real = [parameter for parameter in parameters.values() if parameter.name != "self"]
    positional = [argument.arg for argument in shown.args]
    assert positional == [parameter.name for parameter in real[: len(positional)]], name
    with_defaults = shown.args[len(shown.args) - len(shown.defaults) :]
    for argument, default in zip(with_defaults, shown.defaults, strict=True):
        expected = ast.literal_eval(default)
        assert parameters[argument.arg].default == expected, f"{name}({argument.arg})"
    for argument, keyword_default in zip(shown.kwonlyargs, shown.kw_defaults, strict=True):
        parameter = parameters[argument.arg]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}({argument.arg})"
        expected = _REQUIRED if keyword_default is None else ast.literal_eval(keyword_default)
        assert parameter.default == expected, f"{name}({argument.arg})"
    assert shown.kwarg is not None and shown.kwarg.arg == "options", name


def test_middleware_options_table_matches_the_code() -> None:
    documented = _options(CONFIGURATION.table_after("take these options"))
    assert documented == _defaults(SessionSettings.build, {"store"})
    intro = CONFIGURATION.section("The middleware and the framework integrations")
    _check_call(intro, "SessionMiddleware", SessionMiddleware.__init__)
    bottle_plugin = pytest.importorskip("sa_sessions.bottle").SessionPlugin
    _check_call(intro, "SessionPlugin", bottle_plugin.__init__)
    flask_interface = pytest.importorskip("sa_sessions.flask").FlaskSessionInterface
    _check_call(intro, "FlaskSessionInterface", flask_interface.__init__)


def test_integration_arguments_table_matches_the_code() -> None:
    documented: dict[str, dict[str, object]] = {}
    owner = ""
    for integration, argument, default, _ in CONFIGURATION.table_after("arguments of its own"):
        owner = re.findall(r"`(\w+)`", integration)[0] if integration else owner
        documented.setdefault(owner, {})[argument.strip("`")] = _documented(default)
    assert list(documented) == ["SessionMiddleware", "SessionPlugin", "FlaskSessionInterface"]
    skip = {"self", "app", "store", "options"}
    assert documented["SessionMiddleware"] == _defaults(SessionMiddleware.__init__, skip)
    assert documented["SessionMiddleware"]["backend_error_status"] == "503 Service Unavailable"
    bottle_plugin = pytest.importorskip("sa_sessions.bottle").SessionPlugin
    assert documented["SessionPlugin"] == _defaults(bottle_plugin.__init__, skip)
    flask_interface = pytest.importorskip("sa_sessions.flask").FlaskSessionInterface
    assert documented["FlaskSessionInterface"] == _defaults(flask_interface.__init__, skip)
    assert documented["FlaskSessionInterface"]["retry_after"] == 5


def test_store_options_table_matches_the_code() -> None:
    intro = CONFIGURATION.section("The store")
    _check_call(intro, "SessionStore", SessionStore.__init__)
    documented = _options(CONFIGURATION.table_after("`SessionStore(model, bind, *, region=None"))
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
    flat = CONFIGURATION.flat
    assert "time out after 0.25 s" in flat
    assert "`failure_threshold=2`" in flat and "`dead_timeout=5` seconds" in flat
    assert _defaults(memory_region, set())["max_entries"] == 10_000
    assert "`memory_region(max_entries=10_000)`" in flat


#: (page, the table's heading, fewest calls it must name, whether it must name them all)
SESSION_API_TABLES = [
    (README, "## The Session API", 15, False),
    (QUICKSTART, "## Using the session", 20, True),
]


@pytest.mark.parametrize(
    ("page", "anchor", "fewest", "complete"),
    SESSION_API_TABLES,
    ids=[Path(page.path).stem for page, *_ in SESSION_API_TABLES],
)
def test_session_api_table_matches_the_code(
    page: Page, anchor: str, fewest: int, complete: bool
) -> None:
    table = page.table_after(anchor)
    named: set[str] = set()
    for call, _ in table:
        for item in re.findall(r"`([^`]+)`", call):
            match = re.fullmatch(r"(\w+)(?:\((.*)\))?(?: = \w+)?", item)
            if match is None:
                continue  # session[key] = value
            name, arguments = match[1], match[2]
            assert hasattr(Session, name), name
            named.add(name)
            if arguments is None:
                continue
            parameters = inspect.signature(getattr(Session, name)).parameters
            for argument in filter(None, arguments.split(", ")):
                key, _, default = argument.partition("=")
                key = key.lstrip("*")
                assert key in parameters, f"{name}() has no parameter {key}"
                expected = eval(default) if default else _REQUIRED
                assert parameters[key].default == expected, f"{name}({key})"
    assert len(named) >= fewest
    if complete:
        public = {name for name in dir(Session) if not name.startswith("_")}
        own = public - set(dir(MutableMapping)) - {"finalize"}  # finalize: the integrations'
        assert sorted(own - named) == []


def test_errors_table_names_real_exceptions() -> None:
    rows = QUICKSTART.table_after("## Errors a handler")
    names = [re.findall(r"`~?(?:sa_sessions\.)?(\w+)`", row[0])[0] for row in rows]
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


def _sentences(page: Page, word: str) -> list[str]:
    """The page's sentences (roughly: a table is one) that contain ``word``."""
    return [s for s in re.split(r"(?<=[.:;])\s+(?=[A-Z`(])", page.flat) if word in s]


def test_expired_cookie_is_debug_and_tampered_is_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for page in (README, SECURITY):
        said = _sentences(page, "DEBUG")
        assert any(all(w in s for w in ("expired", "tampered", "WARNING")) for s in said), page.path
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
    for page in (README, CONFIGURATION, SECURITY):
        said = _sentences(page, "re-signed")
        assert said and all("uses the session" in s for s in said), page.path
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
