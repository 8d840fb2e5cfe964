"""The import layers of docs/architecture.md, checked on the source itself.

Every module of the package has a layer; a module may import only modules of its own
layer or below (imports under ``if TYPE_CHECKING:`` are annotations, not imports, and
are left out).  Framework and cache-client imports are pinned to the one module that
adapts each, pickle to the codec's pickling module, and there is no import cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sa_sessions"

#: Lower layers know nothing of higher ones.
LAYERS: dict[str, int] = {
    "exceptions": 0,
    "_clock": 0,
    "ids": 0,
    "signing": 0,
    "_redact": 0,
    "_progress": 0,
    "metadata": 0,
    "codec": 1,
    "codec.tagged": 1,
    "codec.inflate": 1,
    "codec.pickling": 1,
    "codec.packed": 1,
    "codec.blob": 1,
    "_cookie_header": 2,
    "cookies": 2,
    "model": 3,
    "default_model": 3,
    "purge": 4,
    "rows": 4,
    "cache": 4,
    "cache.backend": 4,
    "cache.breaker": 4,
    "cache.nodes": 4,
    "cache.servers": 4,
    "cache.entry": 4,
    "cache.plain": 4,
    "cache.memory": 4,
    "cache.memcached": 4,
    "cache.redis": 4,
    "cache.guard": 4,
    "cache.regions": 4,
    "store": 5,
    "analytics": 6,
    "alembic": 6,
    "cli": 6,
    "changes": 4,
    "hooks": 6,
    "state": 6,
    "loading": 7,
    "saving": 7,
    "settings": 8,
    "session": 8,
    "wsgi": 9,
    "__init__": 9,
    "__main__": 9,
    "bottle": 10,
    "flask": 10,
}

#: Third-party packages only one module may import.
ONLY_IN = {
    "pickle": {"codec.pickling"},
    "bottle": {"bottle"},
    "flask": {"flask"},
    "pymemcache": {"cache.memcached"},
    "redis": {"cache.redis"},
    "alembic": {"alembic"},
}

#: What the core (everything below the web layer) must never import.
WEB = {"wsgi", "bottle", "flask", "session", "settings"}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        yield ".".join(parts), path


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path) -> set[str]:
    """Dotted names imported at run time: ours relative to the package, others whole."""
    tree = ast.parse(path.read_text(), str(path))
    if name == "__init__":
        package: list[str] = []
    elif path.name == "__init__.py":
        package = name.split(".")
    else:
        package = name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                if node.module:
                    targets = [".".join([*base, node.module])]
                else:  # "from . import purge": each name is a module of the package
                    targets = [".".join([*base, alias.name]) for alias in node.names]
                found.update("sa_sessions." + t if t else "sa_sessions" for t in targets)
            elif node.module:
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def ours(imported: str) -> str | None:
    """The module of this package an import names (a package resolves to itself)."""
    if imported == "sa_sessions":
        return "__init__"
    if not imported.startswith("sa_sessions."):
        return None
    name = imported.removeprefix("sa_sessions.")
    while name and name not in LAYERS:
        name = name.rpartition(".")[0]  # "cache.guard.SessionCache" -> "cache.guard"
    return name or None


ALL = dict(modules())


def test_every_module_has_a_layer() -> None:
    assert sorted(set(ALL) - set(LAYERS)) == []


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_module_imports_upward(name: str) -> None:
    upward = []
    for imported in imports(name, ALL[name]):
        target = ours(imported)
        if target is not None and target != name and LAYERS[target] > LAYERS[name]:
            upward.append(f"{target} (layer {LAYERS[target]})")
    assert upward == [], f"{name} (layer {LAYERS[name]}) imports {upward}"


@pytest.mark.parametrize("name", sorted(ALL))
def test_dependencies_stay_in_their_adapter(name: str) -> None:
    for imported in imports(name, ALL[name]):
        top = imported.split(".")[0]
        if top in ONLY_IN:
            assert name in ONLY_IN[top], f"{name} imports {top}"


@pytest.mark.parametrize("name", [n for n in sorted(ALL) if LAYERS[n] < LAYERS["loading"]])
def test_the_core_never_imports_web_code(name: str) -> None:
    reached = {ours(i) for i in imports(name, ALL[name])}
    assert not (reached & WEB), f"{name} imports {sorted(reached & WEB)}"


def test_there_is_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for name, path in ALL.items():
        graph[name] = {t for i in imports(name, path) if (t := ours(i)) and t != name}
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)


def test_the_checker_sees_a_planted_upward_import(tmp_path: Path) -> None:
    """The checks above can fail: an upward import in a copy of a core module is found."""
    planted = tmp_path / "ids.py"
    planted.write_text((PACKAGE / "ids.py").read_text() + "\nfrom .wsgi import ENVIRON_KEY\n")
    found = {ours(i) for i in imports("ids", planted)}
    assert "wsgi" in found and LAYERS["wsgi"] > LAYERS["ids"]
