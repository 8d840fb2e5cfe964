"""The documentation site: it builds with warnings as errors and documents every public name.

The build runs ``sphinx-build`` in a subprocess, as ``make docs`` does, into a
temporary directory; where Sphinx is not installed (the ``docs`` extra) it is skipped,
or fails when every dependency is required (``SA_SESSIONS_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sa_sessions
from sa_sessions.cli import build_parser

from .conftest import missing_service

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Public names outside ``sa_sessions.__all__`` that the API reference must document.
MODULE_NAMES = [
    "sa_sessions.bottle.SessionPlugin",
    "sa_sessions.alembic.render_item",
    "sa_sessions.alembic.process_revision_directives",
    "sa_sessions.analytics.collect_stats",
    "sa_sessions.analytics.active_count",
    "sa_sessions.cache.CircuitBreaker",
    "sa_sessions.cache.CacheStats",
    "sa_sessions.cache.backend.SessionCacheBackend",
    "sa_sessions.store.StoredSession",
    "sa_sessions.changes.DELETED",
    "sa_sessions.changes.Increment",
    "sa_sessions.purge.purge_expired_rows",
    "sa_sessions.cli.ExitCode",
]


def _importable(name: str) -> bool:
    """Whether ``name`` would import (sa_sessions.flask needs flask installed too)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built once for this module with warnings as errors."""
    if importlib.util.find_spec("sphinx") is None:
        missing_service("Sphinx (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    return out / "html"


def _api_ids(site: Path) -> set[str]:
    """The ids of every object description on the API pages."""
    ids: set[str] = set()
    for page in (site / "api").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        ids.update(html.unescape(m) for m in re.findall(r'<dt class="sig[^"]*" id="([^"]+)"', text))
    return ids


@pytest.mark.slow
def test_every_name_of_all_has_an_entry(site: Path) -> None:
    ids = _api_ids(site)
    missing = [name for name in sa_sessions.__all__ if f"sa_sessions.{name}" not in ids]
    assert not missing, f"sa_sessions.__all__ names without an API entry: {missing}"


@pytest.mark.slow
def test_module_names_have_an_entry(site: Path) -> None:
    expected = list(MODULE_NAMES)
    if _importable("sa_sessions.flask") and _importable("flask"):
        expected.append("sa_sessions.flask.FlaskSessionInterface")
    ids = _api_ids(site)
    assert [name for name in expected if name not in ids] == []


@pytest.mark.slow
def test_cli_page_has_every_command(site: Path) -> None:
    text = html.unescape(re.sub(r"<[^>]+>", "", (site / "api" / "cli.html").read_text("utf-8")))
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ["", *commands.choices]:
        assert re.search(rf"usage: sa-sessions {re.escape(name)}\b", text), name


@pytest.mark.slow
def test_guides_are_in_the_navigation(site: Path) -> None:
    """Every Markdown page of docs/ is built (a page outside every toctree warns)."""
    for page in DOCS.glob("*.md"):
        assert (site / f"{page.stem}.html").is_file(), page.name


def test_every_logger_is_documented() -> None:
    """The operations page lists every logger the package creates."""
    package = Path(sa_sessions.__file__).parent
    names: set[str] = set()
    for source in package.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        names.update(re.findall(r"""getLogger\(["']([\w.]+)["']\)""", text))
        if "getLogger(__name__)" in text:
            module = source.relative_to(package.parent).with_suffix("").as_posix()
            names.add(module.removesuffix("/__init__").replace("/", "."))
    page = (DOCS / "operations.md").read_text(encoding="utf-8")
    assert sorted(name for name in names if f"`{name}`" not in page) == []
