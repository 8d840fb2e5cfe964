"""Smoke test of the HTTP benchmark: ``bench/http_throughput.py --quick`` end to end.

Real waitress servers (one process per layer), MariaDB, a private memcached, Beaker
and Django, a fraction of a second per case.  Checks that every layer ran every shape
and scenario (or says why it could not), that no request failed, and that the report
section has its table, its verdicts and its markers.  Timings from --quick mean
nothing and are not checked.  Skips locally (fails under
SA_SESSIONS_REQUIRE_SERVICES=1) when a peer library or a service is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_engine
from .conftest import memcached_binary
from .conftest import missing_service
from .conftest import run_bench

pytestmark = [pytest.mark.slow, pytest.mark.mysql, pytest.mark.memcached]

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("small", "value20k", "keys200", "cart", "mb1", "large")
LAYERS = ("sa_sessions", "beaker_db", "django_cached_db")
VERDICTS = ("met", "not met", "no peer to compare")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    for module, package in (("beaker", "beaker"), ("django", "django"), ("waitress", "waitress")):
        if importlib.util.find_spec(module) is None:
            missing_service(f"{package} (pip install -e '.[bench]')")
    if memcached_binary() is None:
        missing_service("memcached binary")
    make_engine("mysql").dispose()  # skips (or fails in CI) without MariaDB
    out = tmp_path_factory.mktemp("http-bench")
    (out / "benchmarks.md").write_text("# Benchmarks\n\nkept text\n")
    proc = run_bench("http_throughput.py", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return (out / "benchmarks.md").read_text(), json.loads((out / "results.json").read_text())


def test_every_layer_ran_every_shape_and_scenario(report: tuple[str, dict[str, Any]]) -> None:
    _, data = report
    assert data["settings"]["threads"] == 4 and data["settings"]["clients"] == 8
    by = {(r["layer"], r["shape"], r["scenario"]): r for r in data["results"]}
    for scenario in ("read", "write"):
        assert by["bare", None, scenario]["requests"] > 0
        for shape in SHAPES:
            for layer in LAYERS:
                r = by[layer, shape, scenario]
                if r["na"] is None:
                    assert r["requests"] > 0 and r["errors"] == 0, r
                    assert r["p50_ms"] <= r["p99_ms"], r
                else:
                    assert r["requests"] == 0 and r["na"], r
            # sa_sessions stores every shape; so does Django (its cache or its table).
            assert by["sa_sessions", shape, scenario]["na"] is None
            assert by["django_cached_db", shape, scenario]["na"] is None


def test_the_section_has_the_table_and_a_verdict_per_shape(
    report: tuple[str, dict[str, Any]],
) -> None:
    markdown, data = report
    assert markdown.startswith("# Benchmarks\n\nkept text\n")  # the rest is kept
    section = markdown.split("<!-- http-throughput:start -->")[1]
    assert "<!-- http-throughput:end -->" in section
    assert "waitress `threads=4`" in section and "8 keep-alive connections" in section
    verdict_table = section.split("| shape | read | write | target on this shape |")[1]
    for shape in ("small", "one 20 KB value", "200 keys x 100 B", "cart of 50", "1 MB"):
        assert f"| {shape} | read |" in section and f"| {shape} | write |" in section
        row = next(line for line in verdict_table.splitlines() if line.startswith(f"| {shape} |"))
        assert row.rstrip(" |").endswith(("| met", "| not met")), row
    for shape, verdicts in data["verdicts"].items():
        assert shape in SHAPES
        assert all(v.startswith(VERDICTS) for v in verdicts.values()), verdicts
    assert "vs Django cached_db" in section and "vs Beaker ext:database" in section
