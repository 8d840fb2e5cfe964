"""Sphinx configuration of the sa_sessions documentation site.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``make docs``).
The guides are the Markdown pages of this folder (myst-parser); the API reference is
autodoc over the docstrings, which are written in reST.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import pkgutil
import posixpath
import re
import sys
from pathlib import Path
from typing import Any
from typing import TypeVar

from docutils import nodes
from docutils.statemachine import StringList
from pygments.lexers.special import TextLexer
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Build from a checkout without installing the package first.
sys.path.insert(0, str(ROOT))

import sa_sessions  # noqa: E402

# accessible-pygments (a furo dependency) calls logging.basicConfig(level=INFO) when
# imported; with a root handler already there that is a no-op, so the libraries
# imported for autodoc (alembic, ...) do not print their INFO records into the build.
logging.getLogger().addHandler(logging.NullHandler())

project = "sa_sessions"
author = "sa_sessions developers"
copyright = "sa_sessions developers, Apache License 2.0"
release = sa_sessions.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# --------------------------------------------------------------------------- optional pages


def _importable(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (a missing parent is False)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# Pages written alongside this site: each joins the navigation once it exists, so the
# site builds (with -W) before and after they land.
OPTIONAL_PAGES = {
    "flask": (DOCS / "flask.md").is_file(),
    "migrating": (DOCS / "migrating.md").is_file(),
    # sa_sessions.flask imports flask: both must be importable for autodoc.
    "api/flask": _importable("sa_sessions.flask") and _importable("flask"),
}
ABSENT_PAGES = {name for name, present in OPTIONAL_PAGES.items() if not present}
exclude_patterns += [f"{name}.rst" for name in ABSENT_PAGES if (DOCS / f"{name}.rst").is_file()]

# --------------------------------------------------------------------------- HTML

html_theme = "furo"
html_title = f"sa_sessions {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# --------------------------------------------------------------------------- MyST

# The pages link to their own headings (``[...](#where-alembic-stands-in-the-way)``).
myst_heading_anchors = 3

# --------------------------------------------------------------------------- autodoc

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
# Members without a docstring of their own stay out: SQLAlchemy's and the ABCs'
# docstrings describe their classes, not this library.
autodoc_inherit_docstrings = False
python_use_unqualified_type_names = True
python_display_short_literal_types = True

# Every cross-reference into sa_sessions must resolve.  Other projects' names have no
# page on this site (their inventories are not fetched: the build runs offline), so
# only those are exempt: the standard library, the dependencies, and the WSGI types
# that exist only for type checkers.
nitpicky = True
_THIRD_PARTY = "sqlalchemy|dogpile|alembic|bottle|flask|werkzeug|pymemcache|redis|cryptography"
_STDLIB = "|".join(sorted(sys.stdlib_module_names))
nitpick_ignore_regex = [
    (r"py:.*", rf"({_THIRD_PARTY}|_typeshed)(\..*)?"),
    (r"py:.*", rf"({_STDLIB})\..*"),
    (r"py:class", r"WSGIApplication|WSGIEnvironment|StartResponse"),
    # Private names (``_Node`` in a class's bases, SQLAlchemy's ``_ColumnExpression...``
    # in a signature) are documented nowhere.
    (r"py:.*", r"(sa_sessions(\.\w+)*\.)?_\w+"),
]

# --------------------------------------------------------------------------- hooks


def _drop_absent_pages(app: Sphinx, docname: str, source: list[str]) -> None:
    """Remove the toctree entries naming an optional page that is not there yet."""
    if not ABSENT_PAGES or docname not in ("index", "api/index"):
        return
    folder = posixpath.dirname(docname)
    kept = [
        line
        for line in source[0].splitlines(keepends=True)
        if posixpath.normpath(posixpath.join(folder, line.strip())) not in ABSENT_PAGES
        or not line.strip()
    ]
    source[0] = "".join(kept)


def _repository_links_as_paths(app: Sphinx, doctree: nodes.document) -> None:
    """Show a link to a repository file outside docs/ as that file's path.

    The guides are also read on the repository host, where ``../examples/x.py`` and
    ``../README.md`` are links; the site publishes only docs/, so there the link
    becomes the path, as literal text, instead of a download or a broken link.
    """
    source = Path(app.env.doc2path(app.env.docname))
    for node in list(doctree.findall(_myst_file_link)):
        path = _linked_path(app, node, source)
        if path is None:
            continue  # a page of this site, or a real broken link: left to Sphinx
        shown = path.relative_to(ROOT).as_posix() + ("/" if path.is_dir() else "")
        text = node.astext()
        replacement: list[nodes.Node] = [nodes.literal(shown, shown)]
        if text and text.strip("`") not in (shown, shown.rstrip("/")):
            replacement = [nodes.Text(f"{text} ("), *replacement, nodes.Text(")")]
        node.replace_self(replacement)


def _linked_path(app: Sphinx, node: nodes.Element, source: Path) -> Path | None:
    """The repository file or folder outside docs/ that a MyST link names, if any."""
    target = node["reftarget"].split("#", 1)[0]
    if node.get("refdomain") == "doc":
        # A Markdown file outside docs/: MyST made it a document name without suffix.
        base = Path(target) if Path(target).is_absolute() else DOCS / target
        candidates = [base.with_name(base.name + suffix) for suffix in app.config.source_suffix]
    else:
        candidates = [source.parent / target]
    for candidate in candidates:
        path = candidate.resolve()
        if path.exists() and path.is_relative_to(ROOT) and not path.is_relative_to(DOCS):
            return path
    return None


def _myst_file_link(node: nodes.Node) -> bool:
    return (
        isinstance(node, (addnodes.download_reference, addnodes.pending_xref))
        and node.get("reftype") == "myst"
        and node.get("refdomain") in (None, "doc")
    )


def _resolve_missing(
    app: Sphinx, env: Any, node: addnodes.pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve ``:meth:`SessionStore.load``` written in another module than the target.

    The docstrings name objects as their own module sees them; this is the lookup
    Sphinx does for ``:meth:`.SessionStore.load```: a unique documented object whose
    name ends with the target.  Several matches, or none, are still reported by Sphinx.
    """
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    target = node["reftarget"]
    module = node.get("py:module")
    found = _imported(target) or (_imported(f"{module}.{target}") if module else None)
    if isinstance(found, TypeVar) or (found is not None and _is_external(found)):
        # A type variable (``M``), or a name an annotation left unqualified because it
        # could not be evaluated (``datetime`` of a NamedTuple): shown as text.
        return contnode
    node["refspecific"] = True
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
    )


def _imported(dotted: str) -> object:
    """The object a dotted name imports to, or None."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                value = getattr(value, attribute)
        except AttributeError:
            return None
        return value
    return None


def _is_external(value: object) -> bool:
    """Whether ``value`` comes from another project (documented elsewhere)."""
    module = getattr(value, "__module__", None) or ""
    return bool(module) and module.partition(".")[0] != "sa_sessions"


# --------------------------------------------------------------------------- the CLI page


def _cli_parsers() -> dict[str, argparse.ArgumentParser]:
    """``sa-sessions`` and each of its commands, by name ("" for the top level)."""
    from sa_sessions.cli import build_parser

    top = build_parser()
    parsers = {"": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.update(action.choices)
    for parser in parsers.values():
        # The same text on every machine: no terminal width, no colour.
        parser.formatter_class = functools.partial(argparse.HelpFormatter, width=88)
        if hasattr(parser, "color"):
            parser.color = False
    return parsers


class CliHelp(SphinxDirective):
    """``sa-sessions-help [COMMAND]``: the ``--help`` text, generated at build time."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        command = self.arguments[0] if self.arguments else ""
        parsers = _cli_parsers()
        if command not in parsers:
            raise self.error(f"sa-sessions has no command {command!r}: {sorted(parsers)}")
        self.env.note_dependency(str(ROOT / "sa_sessions" / "cli.py"))
        text = parsers[command].format_help().rstrip()
        block = nodes.literal_block(text, text, language="text")
        block["classes"].append("sa-sessions-help")
        return [block]


# --------------------------------------------------------------------------- quick starts

_IMPORT = re.compile(r"^(?:from \S+ )?import (\w+)(?: as (\w+))?")


def example_code(name: str) -> str:
    """The quick start of ``examples/<name>``, with the imports it uses.

    The example files are run by the tests; their quick start is the code between
    ``# --- the quick start`` and ``# --- running it``, the rest runs the app.
    """
    lines = (ROOT / "examples" / name).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- the quick start"))
    end = next(i for i, line in enumerate(lines) if line.startswith("# --- running it"))
    body = "\n".join(lines[start + 1 : end]).strip()
    imports: list[str] = []
    for line in lines[:start]:
        match = _IMPORT.match(line)
        if not line.strip() and imports and imports[-1]:
            imports.append("")  # keep the blank lines between import groups
        elif match and re.search(rf"\b{match.group(2) or match.group(1)}\b", body):
            imports.append(line)
    while imports and not imports[-1]:
        imports.pop()
    return "\n".join([*imports, "", body]).strip()


class ExampleCode(SphinxDirective):
    """``sa-sessions-example FILE``: the quick start of an example file, kept in step."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        self.env.note_dependency(str(ROOT / "examples" / name))
        try:
            text = example_code(name)
        except (OSError, StopIteration):
            raise self.error(
                f"examples/{name} is missing, or lacks its '# --- the quick start' or "
                "'# --- running it' line"
            ) from None
        block = nodes.literal_block(text, text, language="python")
        self.set_source_info(block)
        return [block]


# --------------------------------------------------------------------------- internals

_MODULE_DIRECTIVE = re.compile(r"^\.\. (?:auto)?module:: (\S+)", re.MULTILINE)


def internal_modules() -> list[str]:
    """The package's modules that no page of api/ documents, sorted by name.

    Found at build time, so a new module appears on the internals page by itself.
    ``sa_sessions.flask`` has its own page (its import needs flask).
    """
    documented = {"sa_sessions.__main__", "sa_sessions.flask"}
    for page in (DOCS / "api").glob("*.rst"):
        documented.update(_MODULE_DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    found = pkgutil.walk_packages(sa_sessions.__path__, "sa_sessions.")
    return sorted(info.name for info in found if info.name not in documented)


def _public_objects() -> set[int]:
    """The objects documented under their public name (``sa_sessions.Session``, ...)."""
    import sa_sessions.cache

    packages = (sa_sessions, sa_sessions.cache)
    return {id(getattr(package, name)) for package in packages for name in package.__all__}


class InternalModules(SphinxDirective):
    """``sa-sessions-internal-modules``: one section per module of :func:`internal_modules`."""

    def run(self) -> list[nodes.Node]:
        for page in (DOCS / "api").glob("*.rst"):  # which modules they document
            self.env.note_dependency(str(page))
        lines = StringList()
        for name in internal_modules():
            title = f"``{name}``"
            for text in (title, "-" * len(title), "", f".. automodule:: {name}", ""):
                lines.append(text, "<sa-sessions-internal-modules>")
        section = nodes.section()
        nested_parse_with_titles(self.state, lines, section)
        return list(section.children)


def _skip_public_reexports(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """Leave a public name out of its defining module's members: it has its own entry.

    ``sa_sessions.SessionStore`` is documented under that name; listing it again as
    ``sa_sessions.store.SessionStore`` would describe one class twice.
    """
    if what == "module" and id(obj) in PUBLIC_OBJECTS:
        return True
    return None


PUBLIC_OBJECTS = _public_objects()


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _drop_absent_pages)
    app.connect("doctree-read", _repository_links_as_paths, priority=100)
    app.connect("missing-reference", _resolve_missing)
    app.connect("autodoc-skip-member", _skip_public_reexports)
    app.add_directive("sa-sessions-help", CliHelp)
    app.add_directive("sa-sessions-example", ExampleCode)
    app.add_directive("sa-sessions-internal-modules", InternalModules)
    # cleanup.md shows a crontab line: plain text, no highlighting to fail.
    app.add_lexer("cron", TextLexer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
