"""Smoke test of the peer benchmark: ``bench/compare.py --quick`` end to end.

Runs the real thing (MariaDB, a private memcached and redis-server, Beaker, Django)
with a handful of requests per case, then checks that the report covers every layer,
session shape, scenario, floor, target, the Redis tables and the curves, and that
sa_sessions' round trips per request are exactly the ones the library documents.
Timings from --quick mean nothing and are not checked.  Skips locally (fails under
SA_SESSIONS_REQUIRE_SERVICES=1) when a peer library or a service is missing.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_engine
from .conftest import memcached_binary
from .conftest import missing_service
from .conftest import redis_binary
from .conftest import run_bench

pytestmark = [pytest.mark.slow, pytest.mark.mysql, pytest.mark.memcached, pytest.mark.redis]

ROOT = Path(__file__).resolve().parent.parent
MEMCACHED_LAYERS = {
    "bare": "bare app",
    "middleware_only": "middleware only",
    "sa_sessions": "sa_sessions",
    "sa_sessions_server": "sa_sessions (server-only)",
    "beaker_db": "Beaker ext:database",
    "beaker_memcached": "Beaker ext:memcached",
    "beaker_cookie": "Beaker cookie (AES)",
    "django_cached_db": "Django cached_db",
}
REDIS_LAYERS = {
    "sa_sessions_redis": "sa_sessions (Redis)",
    "sa_sessions_redis_server": "sa_sessions (Redis, server-only)",
    "django_cached_db_redis": "Django cached_db (Redis)",
}
LAYERS = {**MEMCACHED_LAYERS, **REDIS_LAYERS}
SHAPES = {
    "large": "large mix",
    "value20k": "one 20 KB value",
    "keys200": "200 keys x 100 B",
    "cart": "cart of 50",
    "mb1": "1 MB",
}
SCENARIOS = {
    "untouched": "untouched session",
    "small_read": "small read (cookie)",
    "small_write": "small write (cookie)",
    **{f"{key}_read": f"{title}: read, cache hit" for key, title in SHAPES.items()},
    **{f"{key}_write": f"{title}: write" for key, title in SHAPES.items()},
    **{f"{key}_read_miss": f"{title}: read, cache miss" for key, title in SHAPES.items()},
    "login": "login (create + regenerate id)",
}
STATUSES = ("met", "not met", "met in CPU time only", "met in wall time only")
#: sa_sessions' default layer per cache kind, and its server-only twin.
SA = {"memcached": ("sa_sessions", "sa_sessions_server"), "redis": ("sa_sessions_redis",
      "sa_sessions_redis_server")}  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    for module, package in (
        ("beaker", "beaker"),
        ("django", "django"),
        ("matplotlib", "matplotlib"),
        ("memcache", "python-memcached"),
        ("redis", "redis"),
    ):
        if importlib.util.find_spec(module) is None:
            missing_service(f"{package} (pip install -e '.[bench]')")
    if memcached_binary() is None:
        missing_service("memcached binary")
    if redis_binary() is None:
        missing_service("redis-server binary")
    make_engine("mysql").dispose()  # skips (or fails in CI) without MariaDB
    out = tmp_path_factory.mktemp("bench")
    proc = run_bench("compare.py", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Targets" in proc.stdout  # the targets table is printed
    for png in ("benchmark.png", "benchmark-curve-size.png", "benchmark-curve-keys.png"):
        assert (out / png).stat().st_size > 1000, png
    return (
        (out / "benchmarks.md").read_text(),
        json.loads((out / "results.json").read_text()),
        out,
    )


def section(markdown: str, heading: str) -> str:
    """The text of the section under ``heading`` (up to the next heading of its level)."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(heading + "\n")
    end = re.search(rf"^{level} ", markdown[start + len(heading) :], re.M)
    return markdown[start : start + len(heading) + (end.start() if end else len(markdown))]


def test_report_lists_every_layer_shape_and_scenario(
    report: tuple[str, dict[str, Any], Path],
) -> None:
    markdown, data, _ = report
    for title in [*LAYERS.values(), *SCENARIOS.values(), *SHAPES.values()]:
        assert title in markdown, title
    assert set(data["scenarios"]) == set(SCENARIOS)
    for key, cases in data["scenarios"].items():
        expected = set(LAYERS) - ({"middleware_only"} if key != "untouched" else set())
        assert expected <= set(cases), key
    # Every shape's exact pickled size is in the report.
    shapes = section(markdown, "## Session shapes")
    for key, title in SHAPES.items():
        size = data["shapes"][key]["pickled_bytes"]
        assert f"| {title} |" in shapes and f"{size:,}" in shapes, key
    assert 19_000 < data["shapes"]["value20k"]["pickled_bytes"] < 21_000
    assert data["shapes"]["keys200"]["keys"] == 201
    assert 990_000 < data["shapes"]["mb1"]["pickled_bytes"] < 1_010_000
    for key in SHAPES:  # realistic data, not "x" * n
        assert data["shapes"][key]["zlib_ratio"] < 4, key
    # Beaker's cookie sessions refuse 20 KB: reported as n/a with the reason.
    assert "Cookie value is too long" in data["scenarios"]["large_read"]["beaker_cookie"]["na"]


def test_redis_gets_the_same_tables(report: tuple[str, dict[str, Any], Path]) -> None:
    markdown, _, _ = report
    for cache in ("memcached (and the peers without a cache)", "Redis"):
        overhead = section(markdown, f"## Per-request overhead, {cache} (µs, lower is better)")
        assert "CPU time" in overhead
        assert f"### Round trips per request, {cache} (exact)" in overhead
        for title in SCENARIOS.values():
            assert f"| {title} |" in overhead, (cache, title)
    redis = section(markdown, "## Per-request overhead, Redis (µs, lower is better)")
    for title in REDIS_LAYERS.values():
        assert title in redis


def test_floors_are_measured_per_shape_and_cache(
    report: tuple[str, dict[str, Any], Path],
) -> None:
    markdown, data, _ = report
    floors = section(markdown, "## Floors")
    scenarios = data["scenarios"]
    for op in ("read", "write"):
        floor = scenarios[f"small_{op}"][f"floor_cookie_{op}"]
        assert floor["na"] is None and floor["median_us"] is not None
        assert floor["counts"]["cache_round_trips"] == 0
        assert floor["counts"]["db_round_trips"] == 0
        for shape, title in SHAPES.items():
            for cache in ("memcached", "redis"):
                name = f"floor_{op}_{cache}"
                floor = scenarios[f"{shape}_{op}"][name]
                assert floor["na"] is None, (shape, name, floor["na"])
                assert floor["median_us"] is not None
                assert floor["extra"]["mac_verified"], (shape, name)
                assert floor["extra"]["source"] in SA[cache]
                assert (
                    f"| {title}: {'read, cache hit' if op == 'read' else 'write'} | {name} |"
                    in floors
                )
                counts = floor["counts"]
                assert counts["exact"] and counts["server_check"], counts
                if op == "read":
                    assert (counts["db_round_trips"], counts["cache"]) == (0, {"get": 1})
                else:
                    assert counts["db"] == {"query": 1, "commit": 1}
                    assert counts["cache"] == {"get": 1, "set": 1}
    # The cart fits the default's cookie: its server rows use the server-only layer.
    assert scenarios["cart_read"]["floor_read_memcached"]["extra"]["source"] == "sa_sessions_server"


def test_targets_table_has_a_verdict_per_row(report: tuple[str, dict[str, Any], Path]) -> None:
    markdown, data, _ = report
    targets = section(markdown, "## Targets")
    rows = [line for line in targets.splitlines() if line.startswith("| ") and " | " in line]
    for name in (
        "untouched request",
        "cookie session read / write",
        "server session read on a cache hit, every shape (memcached)",
        "server session write, every shape (memcached)",
        "Redis region",
    ):
        row = next(r for r in rows if r.startswith(f"| {name} |"))
        verdict = row.split(" | ")[2].strip("* ")
        assert verdict.startswith(STATUSES), row
    # The two rows measured by other scripts have their place.
    assert "| cleanup rate |" in targets and "| HTTP throughput |" in targets
    # Every detailed row, for both caches, has a verdict.
    assert {t["cache"] for t in data["targets"]} == {"memcached", "redis"}
    groups = {(t["cache"], t["group"]) for t in data["targets"]}
    for cache in ("memcached", "redis"):
        for group in ("untouched", "cookie", "server read", "server write"):
            assert (cache, group) in groups
        for shape in SHAPES:
            assert sum(t["shape"] == shape and t["cache"] == cache for t in data["targets"]) == 4
    for t in data["targets"]:
        assert t["status"] in STATUSES, t
    # The sections other scripts write are kept in place.
    for name in ("http-throughput", "purge-at-scale"):
        assert f"<!-- {name}:start -->" in markdown and f"<!-- {name}:end -->" in markdown


def test_curves_have_a_table_and_a_chart(report: tuple[str, dict[str, Any], Path]) -> None:
    markdown, data, _ = report
    curves = section(markdown, "## Cost as the session grows")
    for png in ("benchmark-curve-size.png", "benchmark-curve-keys.png"):
        assert f"]({png})" in curves
    sizes = ("1 KB", "4 KB", "16 KB", "64 KB", "256 KB", "1024 KB")
    for label in sizes:
        assert f"| {label} |" in curves, label
    for label in ("1", "10", "100", "300", "1,000"):
        assert f"| {label} |" in curves, label
    assert len(data["curves"]["size"]) == 6 and len(data["curves"]["keys"]) == 5
    for family in data["curves"].values():
        for cases in family.values():
            for name in ("sa_sessions_server", "django_cached_db", "floor_read_memcached"):
                assert cases[name]["na"] is None and cases[name]["median_us"] is not None
            read = cases["sa_sessions_server"]["counts"]
            assert (read["sql"], read["cache"]) == (0, {"get": 1})


def counts(data: dict[str, Any], scenario: str, layer: str) -> dict[str, Any]:
    case = data["scenarios"][scenario][layer]
    assert case["na"] is None, case["na"]
    assert case["counts"]["exact"], case["counts"]
    assert case["counts"]["server_check"], case["counts"]  # the servers' stats agree
    result: dict[str, Any] = case["counts"]
    return result


@pytest.mark.parametrize("cache", ["memcached", "redis"])
def test_sa_sessions_round_trips_are_the_documented_ones(
    report: tuple[str, dict[str, Any], Path], cache: str
) -> None:
    _, data, _ = report
    default, _server = SA[cache]
    # Cookie sessions and untouched requests: no SQL, no cache call.
    for scenario in ("untouched", "small_read", "small_write", "login"):
        c = counts(data, scenario, default)
        assert (c["sql"], c["db_round_trips"], c["cache_round_trips"]) == (0, 0, 0), scenario
    for shape in SHAPES:
        layer = data["scenarios"][f"{shape}_read"][f"floor_read_{cache}"]["extra"]["source"]
        # Read on a cache hit: 0 SQL + 1 cache get.
        c = counts(data, f"{shape}_read", layer)
        assert (c["sql"], c["db_round_trips"], c["cache"]) == (0, 0, {"get": 1}), shape
        # Write: 1 UPDATE + COMMIT, 1 cache get (the read) + 1 cache write (CAS).  The
        # other DB round trips: the pool's pre-ping on checkout (pool_pre_ping=True) and
        # its ROLLBACK on return (reset_on_return).
        c = counts(data, f"{shape}_write", layer)
        assert (c["sql"], c["cache"]) == (1, {"get": 1, "set": 1}), shape
        assert c["db"] == {"ping": 1, "query": 1, "commit": 1, "rollback": 1}, shape
        # Read on a cache miss: 1 SELECT + 1 cache get + 1 cache write (the refill).
        c = counts(data, f"{shape}_read_miss", layer)
        assert (c["sql"], c["cache"]) == (1, {"get": 1, "set": 1}), shape
        assert c["db"] == {"ping": 1, "query": 1, "rollback": 1}, shape
    # The default keeps the cart in its cookie: no server round trip at all.
    c = counts(data, "cart_read", default)
    assert (c["sql"], c["db_round_trips"], c["cache_round_trips"]) == (0, 0, 0)


def test_no_layer_does_server_work_on_an_untouched_request(
    report: tuple[str, dict[str, Any], Path],
) -> None:
    _, data, _ = report
    for layer in LAYERS:
        if layer == "bare":
            continue
        c = counts(data, "untouched", layer)
        assert (c["db_round_trips"], c["cache_round_trips"]) == (0, 0), layer


def test_configuration_check_measures_pre_ping(report: tuple[str, dict[str, Any], Path]) -> None:
    markdown, data, _ = report
    assert "## Configuration check: `pool_pre_ping`" in markdown
    write = data["config_check"]["large_write"]
    assert write["sa_sessions"]["counts"]["db"].get("ping") == 1
    assert "ping" not in write["sa_sessions_no_pre_ping"]["counts"]["db"]
