"""Mutation testing for the security-critical modules (``make mutate``).

Each mutant is one small change to one module's syntax tree: a comparison swapped
(``<`` and ``<=``, ``==`` and ``!=``, ``is``/``in`` and their negations), an int
constant moved by one, a string or bytes constant altered, ``and``/``or`` swapped,
``not``/``-``/``~`` dropped, ``True``/``False`` flipped, an arithmetic or bitwise
operator swapped, or the guard of an ``if`` whose body raises or returns made
``False``.  The mutant is compiled straight from the tree (the file on disk is never
touched, so other work in the tree is unaffected) and imported in a forked copy of this
process in place of the real module, where pytest runs the module's own test files and
stops at the first failure.  A failure or a timeout kills the mutant; a clean pass means
no test noticed the change: a survivor, printed with its line and the change.

Not mutated: docstrings, annotations, type aliases (CamelCase assignments),
``__all__``/``__slots__``, ``if TYPE_CHECKING`` blocks, the text of exceptions raised
and of log calls (wording, not behaviour), and lines marked ``# pragma: no mutate``
(each such mark says why the mutant is equivalent).

Usage::

    .venv/bin/python tools/mutate.py [--jobs 2] [--min-score 98] [MODULE ...]

``MODULE`` filters by substring (``cookies``, ``tagged``).  Exits 1 when a module
scores below ``--min-score`` percent, 2 when the unmutated tests already fail.
Nothing is written into the tree: pytest's cache is off, Hypothesis keeps no example
database, and temporary directories live under the system temp dir and are removed.
"""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.machinery
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Module under test -> the test files run against each of its mutants (fastest first:
#: pytest stops at the first failure, so focused tests kill most mutants quickly).
TARGETS: dict[str, tuple[str, ...]] = {
    "sa_sessions/signing.py": (
        "tests/test_signing.py",
        "tests/test_wire_vectors.py",
    ),
    "sa_sessions/ids.py": (
        "tests/test_ids.py",
        "tests/test_wire_vectors.py",
    ),
    "sa_sessions/codec/inflate.py": ("tests/test_codec_inflate.py",),
    "sa_sessions/cookies.py": (
        "tests/test_limits_cookies.py",
        "tests/test_wire_vectors.py",
        "tests/test_cookie_rejections.py",
        "tests/test_cookies.py",
    ),
    "sa_sessions/_cookie_header.py": (
        "tests/test_limits_cookie_header.py",
        "tests/test_cookies.py",
    ),
    "sa_sessions/codec/tagged.py": (
        "tests/test_limits_tagged.py",
        "tests/test_codec_tagged.py",
    ),
}

PRAGMA = "pragma: no mutate"
#: Statuses that mean the run itself went wrong (nothing collected, or the forked worker
#: crashed outside pytest), not that a test caught the mutant.  A usage error (4) is a
#: kill: it is what a mutant that breaks importing ``tests/conftest.py`` produces.
_TOOL_ERRORS = frozenset({5, 70})
#: The real stderr, kept for a worker's own crash report (pytest's output goes to a log).
_STDERR = os.dup(2)
_LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})
_SKIPPED_NAMES = frozenset({"__all__", "__slots__"})
_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_OPERATOR_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitOr,
}


# --------------------------------------------------------------------------- mutants


@dataclass(frozen=True)
class Mutation:
    """One change: ``new`` replaces ``old`` in ``parent.field`` (at ``index`` for lists)."""

    parent: ast.AST
    field: str
    index: int | None
    old: ast.AST
    new: ast.AST

    @property
    def line(self) -> int:
        return int(getattr(self.old, "lineno", 0))

    def describe(self) -> str:
        before, after = _short(ast.unparse(self.old)), _short(ast.unparse(self.new))
        if isinstance(self.parent, ast.If) and self.field == "test":
            return f"if {before}:  ->  if {after}:"
        return f"{before}  ->  {after}"

    def apply(self) -> None:
        replacement = ast.copy_location(self.new, self.old)
        if self.index is None:
            setattr(self.parent, self.field, replacement)
        else:
            getattr(self.parent, self.field)[self.index] = replacement


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _is_docstring(node: ast.AST, parent: ast.AST, field: str, index: int | None) -> bool:
    return (
        index == 0
        and field == "body"
        and isinstance(parent, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _is_log_call(node: ast.AST) -> bool:
    """A logging call: its positional arguments are wording, not behaviour."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _LOG_METHODS
    )


def _skips_whole_node(node: ast.AST) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.If) and isinstance(node.test, ast.Name):
        return node.test.id == "TYPE_CHECKING"
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    return any(isinstance(t, ast.Name) and _is_skipped_name(t.id) for t in targets)


def _is_skipped_name(name: str) -> bool:
    """``__all__``, ``__slots__``, and type aliases or TypeVars (CamelCase names)."""
    bare = name.lstrip("_")
    return name in _SKIPPED_NAMES or (bare[:1].isupper() and not bare.isupper())


def _ends_by_leaving(body: list[ast.stmt]) -> bool:
    return any(isinstance(stmt, (ast.Raise, ast.Return)) for stmt in body)


def _replacements(node: ast.AST, in_message: bool) -> Iterator[ast.AST]:
    """Every mutated copy of ``node`` itself (children are visited separately)."""
    if isinstance(node, ast.Compare):
        for position, op in enumerate(node.ops):
            swap = _COMPARE_SWAPS.get(type(op))
            if swap is not None:
                ops = list(node.ops)
                ops[position] = swap()
                yield ast.Compare(left=node.left, ops=ops, comparators=node.comparators)
    elif isinstance(node, ast.BoolOp):
        other: ast.boolop = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield ast.BoolOp(op=other, values=node.values)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
        yield node.operand
    elif isinstance(node, ast.BinOp):
        swap_op = _OPERATOR_SWAPS.get(type(node.op))
        if swap_op is not None:
            yield ast.BinOp(left=node.left, op=swap_op(), right=node.right)
    elif isinstance(node, ast.Constant):
        yield from _constant_replacements(node.value, in_message)


def _constant_replacements(value: object, in_message: bool) -> Iterator[ast.AST]:
    if isinstance(value, bool):
        yield ast.Constant(value=not value)
    elif isinstance(value, int):
        yield ast.Constant(value=value + 1)
        yield ast.Constant(value=value - 1)
    elif isinstance(value, str) and not in_message:
        yield ast.Constant(value=f"XX{value}XX")
    elif isinstance(value, bytes) and not in_message:
        yield ast.Constant(value=b"XX" + value + b"XX")


def mutations(tree: ast.Module, skipped_lines: frozenset[int]) -> list[Mutation]:
    """Every mutation of ``tree``, in a deterministic order (the same for a fresh parse)."""
    found: list[Mutation] = []

    def visit(node: ast.AST, in_message: bool) -> None:
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns"):
                continue
            children = value if isinstance(value, list) else [value]
            for position, child in enumerate(children):
                if not isinstance(child, ast.AST):
                    continue
                index = position if isinstance(value, list) else None
                if _is_docstring(child, node, field, index) or _skips_whole_node(child):
                    continue
                inside = (
                    in_message
                    or isinstance(child, ast.Raise)
                    or (field == "args" and _is_log_call(node))
                )
                if getattr(child, "lineno", None) not in skipped_lines:
                    for new in _replacements(child, inside):
                        found.append(Mutation(node, field, index, child, new))
                    if isinstance(child, ast.If) and _ends_by_leaving(child.body):
                        guard = ast.Constant(value=False)
                        found.append(Mutation(child, "test", None, child.test, guard))
                visit(child, inside)

    visit(tree, False)
    return found


def pragma_lines(source: str) -> frozenset[int]:
    """Numbers of the lines marked as not to be mutated."""
    return frozenset(
        number for number, line in enumerate(source.splitlines(), start=1) if PRAGMA in line
    )


def mutant_code(source: str, path: Path, number: int) -> tuple[types.CodeType, Mutation]:
    """The compiled module with mutation ``number`` applied (to a fresh parse)."""
    tree = ast.parse(source, filename=str(path))
    mutation = mutations(tree, pragma_lines(source))[number]
    mutation.apply()
    ast.fix_missing_locations(tree)
    return compile(tree, str(path), "exec", dont_inherit=True), mutation


# --------------------------------------------------------------------------- running


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the mutant's code object for one module name."""

    def __init__(self, name: str, path: Path, code: types.CodeType) -> None:
        self._name, self._path, self._code = name, path, code

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self._name:
            return None
        return importlib.util.spec_from_file_location(fullname, self._path, loader=self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        exec(self._code, module.__dict__)


def _forget_project_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("sa_sessions", "tests"):
            del sys.modules[name]


def _child(module: str, code: types.CodeType | None, tests: Sequence[str], work: Path) -> int:
    """Body of a forked worker: run ``tests`` against ``code`` and return pytest's status."""
    import pytest
    from hypothesis import HealthCheck
    from hypothesis import settings

    work.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(_log_path(work), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    _forget_project_modules()
    if code is not None:
        path = ROOT / (module.replace(".", "/") + ".py")
        sys.meta_path.insert(0, _MutantFinder(module, path, code))
    # Reproducible and quiet: no example database, no deadline or health-check noise.
    settings.register_profile(
        "mutate",
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    settings.load_profile("mutate")
    # Hypothesis is imported before pytest starts (above, and warm in the parent), so
    # pytest cannot rewrite its plugin's asserts; that warning is expected here.
    quiet = "ignore::pytest.PytestAssertRewriteWarning"
    args = [*tests, "-x", "-q", "-p", "no:cacheprovider", "-W", quiet, f"--basetemp={work}"]
    return int(pytest.main(args))


def _log_path(work: Path) -> Path:
    """Where a worker's pytest output goes (shown when the unmutated run fails)."""
    return work.parent / f"{work.name}.log"


def _fork(
    module: str, code: types.CodeType | None, tests: Sequence[str], work: Path, timeout: int
) -> int:
    pid = os.fork()
    if pid == 0:  # the child never returns into the parent's code
        status = 70
        try:
            signal.alarm(timeout)
            os.chdir(ROOT)
            status = _child(module, code, tests, work)
        except BaseException:
            os.write(_STDERR, traceback.format_exc().encode())
        finally:
            os._exit(status)
    return pid


@dataclass
class Result:
    """One module's outcome."""

    path: str
    mutants: int = 0
    killed: int = 0
    survivors: tuple[str, ...] = ()

    @property
    def score(self) -> float:
        return 100.0 if not self.mutants else 100.0 * self.killed / self.mutants


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def run_module(path: str, tests: Sequence[str], jobs: int, work: Path) -> Result:
    """Mutate one module; every mutant is run in its own forked process."""
    module = _module_name(path)
    source_path = ROOT / path
    source = source_path.read_text(encoding="utf-8")
    total = len(mutations(ast.parse(source), pragma_lines(source)))
    missing = [t for t in tests if not (ROOT / t).exists()]
    if missing:
        raise SystemExit(f"{path}: missing test files {missing}")

    started = time.monotonic()
    base = work / "baseline"
    status = _wait(_fork(module, None, tests, base, 600))[1]
    if status != 0:
        output = _log_path(base).read_text(encoding="utf-8", errors="replace")
        print("\n".join(output.splitlines()[-40:]))
        print(f"{path}: the tests fail WITHOUT any mutation (status {status}); fix them first")
        raise SystemExit(2)
    baseline = time.monotonic() - started
    timeout = max(30, int(baseline * 5) + 1)

    result = Result(path, mutants=total)
    survivors: dict[int, str] = {}
    running: dict[int, int] = {}  # pid -> mutant number
    queue = list(range(total))
    while queue or running:
        while queue and len(running) < jobs:
            number = queue.pop(0)
            code, _ = mutant_code(source, source_path, number)
            pid = _fork(module, code, tests, work / f"m{number}", timeout)
            running[pid] = number
        pid, status = _wait(-1)
        number = running.pop(pid)
        shutil.rmtree(work / f"m{number}", ignore_errors=True)
        _log_path(work / f"m{number}").unlink(missing_ok=True)
        if status == 0:
            mutation = mutant_code(source, source_path, number)[1]
            survivors[number] = f"{path}:{mutation.line}: {mutation.describe()}"
        elif status in _TOOL_ERRORS:
            raise SystemExit(f"{path}: mutant {number} could not be run (status {status})")
        else:  # tests failed, collection broke, or the alarm ended a hung mutant
            result.killed += 1
        if sys.stderr.isatty():
            done = total - len(queue) - len(running)
            print(f"\r{path}: {done}/{total}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    result.survivors = tuple(survivors[n] for n in sorted(survivors))
    return result


def _wait(pid: int) -> tuple[int, int]:
    """``(pid, status)``: the exit code, or minus the signal that ended the process."""
    done, raw = os.waitpid(pid, 0)
    if os.WIFSIGNALED(raw):
        return done, -os.WTERMSIG(raw)
    return done, os.WEXITSTATUS(raw)


def _preload() -> None:
    """Import the heavy dependencies once, so every forked mutant starts warm."""
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401

    sys.path.insert(0, str(ROOT))
    try:
        import sa_sessions
        import sa_sessions.codec.blob  # noqa: F401
    finally:
        _forget_project_modules()  # each mutant imports the package afresh


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("modules", nargs="*", help="only modules whose path contains this")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--min-score", type=float, default=98.0)
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    options = parser.parse_args(argv)
    chosen = {
        path: tests
        for path, tests in TARGETS.items()
        if not options.modules or any(part in path for part in options.modules)
    }
    if not chosen:
        parser.error(f"no module matches {options.modules}")
    if options.list:
        for path in chosen:
            source = (ROOT / path).read_text(encoding="utf-8")
            for mutation in mutations(ast.parse(source), pragma_lines(source)):
                print(f"{path}:{mutation.line}: {mutation.describe()}")
        return 0

    _preload()
    results: list[Result] = []
    work = Path(tempfile.mkdtemp(prefix="sa-sessions-mutate-"))
    try:
        for path, tests in chosen.items():
            results.append(run_module(path, tests, max(1, options.jobs), work / "run"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'module':34} {'mutants':>8} {'killed':>7} {'survived':>9} {'score':>7}")
    for result in results:
        print(
            f"{result.path:34} {result.mutants:8} {result.killed:7} "
            f"{result.mutants - result.killed:9} {result.score:6.1f}%"
        )
    survivors = [line for result in results for line in result.survivors]
    if survivors:
        print("\nsurviving mutants:")
        print("\n".join(f"  {line}" for line in survivors))
    low = [r.path for r in results if r.score < options.min_score]
    if low:
        print(f"\nbelow {options.min_score:g} %: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
