"""Smoke test of the peer benchmark: ``bench/compare.py --quick`` end to end.

Runs the real thing (MariaDB, a private memcached, Beaker, Django) with a handful of
requests per case, then checks that the report covers every layer and scenario and
that sa_sessions' round trips are exactly the targeted ones.  Timings from --quick
mean nothing and are not checked.  Skips locally (fails under
SA_SESSIONS_REQUIRE_SERVICES=1) when a peer library or a service is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_engine
from .conftest import memcached_binary
from .conftest import missing_service

pytestmark = [pytest.mark.slow, pytest.mark.mysql, pytest.mark.memcached]

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {
    "bare": "bare app",
    "sa_sessions": "sa_sessions",
    "sa_sessions_server": "sa_sessions (server-only)",
    "beaker_db": "Beaker ext:database",
    "beaker_memcached": "Beaker ext:memcached",
    "beaker_cookie": "Beaker cookie (AES)",
    "django_cached_db": "Django cached_db",
}
SCENARIOS = {
    "untouched": "untouched session",
    "small_read": "small read (2 keys)",
    "small_write": "small write",
    "large_read": "large read, cache hit",
    "large_write": "large write",
    "large_read_miss": "large read, cache miss",
    "login": "login (create + regenerate id)",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    for module, package in (
        ("beaker", "beaker"),
        ("django", "django"),
        ("matplotlib", "matplotlib"),
        ("memcache", "python-memcached"),
    ):
        if importlib.util.find_spec(module) is None:
            missing_service(f"{package} (pip install -e '.[bench]')")
    if memcached_binary() is None:
        missing_service("memcached binary")
    make_engine("mysql").dispose()  # skips (or fails in CI) without MariaDB
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "compare.py"),
            "--quick",
            "--out-dir",
            str(out),
            "--json",
            str(out / "results.json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "benchmark.png").stat().st_size > 1000
    return (out / "benchmarks.md").read_text(), json.loads((out / "results.json").read_text())


def test_report_lists_every_layer_and_scenario(report: tuple[str, dict[str, Any]]) -> None:
    markdown, data = report
    for title in [*LAYERS.values(), *SCENARIOS.values()]:
        assert title in markdown
    assert set(data["scenarios"]) == set(SCENARIOS)
    for cases in data["scenarios"].values():
        assert set(LAYERS) <= set(cases)
    assert "## Targets" in markdown and "## Floors" in markdown
    # Beaker's cookie sessions refuse 20 KB: reported as n/a with the reason.
    assert "Cookie value is too long" in data["scenarios"]["large_read"]["beaker_cookie"]["na"]


def counts(data: dict[str, Any], scenario: str, layer: str = "sa_sessions") -> dict[str, Any]:
    case = data["scenarios"][scenario][layer]
    assert case["na"] is None, case["na"]
    assert case["counts"]["exact"], case["counts"]
    assert case["counts"]["server_check"], case["counts"]  # memcached's stats agree
    result: dict[str, Any] = case["counts"]
    return result


def test_sa_sessions_round_trips_are_exact(report: tuple[str, dict[str, Any]]) -> None:
    _, data = report
    large_read = counts(data, "large_read")
    assert (large_read["sql"], large_read["db_round_trips"], large_read["cache"]) == (
        0,
        0,
        {"get": 1},
    )
    large_read_miss = counts(data, "large_read_miss")
    # SELECT, then the ROLLBACK that returns the connection to the pool: no COMMIT.
    assert (large_read_miss["sql"], large_read_miss["db"]) == (1, {"query": 1, "rollback": 1})
    large_write = counts(data, "large_write")
    assert large_write["sql"] == 1
    assert large_write["cache"].get("set") == 1
    # The ROLLBACK is the pool's reset on return after the COMMIT (pool_reset_on_return).
    assert large_write["db"] == {"query": 1, "commit": 1, "rollback": 1}
    for scenario in ("untouched", "small_read", "small_write", "login"):
        c = counts(data, scenario)
        assert (c["sql"], c["db_round_trips"], c["cache_round_trips"]) == (0, 0, 0), scenario
    for layer in LAYERS:
        if layer == "bare":
            continue
        c = counts(data, "untouched", layer)
        assert (c["db_round_trips"], c["cache_round_trips"]) == (0, 0), layer
