"""Per-request cost of sa_sessions against Beaker and Django, in one process.

The same tiny Bottle app is wrapped by each session layer (``bench/peers.py``) and
called directly through WSGI (no HTTP), against the same MariaDB, one private
memcached and one private redis-server.  For every scenario (small cookie sessions,
and read on a cache hit / write / read on a cache miss on each session shape of
``bench/shapes.py``) it measures, in interleaved rounds: every layer's per-request
overhead over the bare app (wall and CPU time, ``bench/measure.py``), the floors
(``bench/floors.py``), exact SQL statements, DB round trips and cache round trips
(``bench/counters.py``, cross-checked against the servers' statistics).  Then the
curves ("cost as the session grows", ``bench/curves.py``), a check of the engine
configuration (``pool_pre_ping``), and a breakdown of sa_sessions' time
(``bench/breakdown.py``).

It prints the targets table (``bench/targets.py``, ``bench/summary.py``) and writes a
Markdown report (``benchmarks.md``, ``bench/report.py``) with its charts
(``bench/charts.py``) to ``--out-dir`` (default: ``docs/``, which also updates the
README's summary), keeping the sections of ``bench/http_throughput.py`` and
``bench/purge_at_scale.py``; ``--json`` saves the raw results (``bench/results.py``).
``--quick`` runs a few requests per case (the smoke test uses it; its timings are not
meaningful).

    python bench/compare.py                 # full run, five to six minutes
    python bench/compare.py --quick --out-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import breakdown
import charts
import counters
import curves
import machine
import measure
import peers
import report
import summary
import targets
from floors import Floors
from results import Run
from results import from_json
from results import to_json

ROOT = Path(__file__).resolve().parent.parent
#: The main scenarios run every layer but the configuration check's.
MAIN_LAYERS = peers.LAYERS
CONFIG_LAYERS = ("bare", "sa_sessions", "sa_sessions_no_pre_ping")
CONFIG_SCENARIOS = ("large_read", "large_write", "large_read_miss")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few requests per case")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=ROOT / "docs",
        help="where benchmarks.md and the charts go (default: docs/, which also updates "
        "the README summary)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument("--rounds", type=int, help="rounds per scenario")
    parser.add_argument("--batch-seconds", type=float, help="time per case per round")
    parser.add_argument(
        "--memcached",
        help="host:port of a memcached to use (default: start a private one; its stats "
        "cross-check the counts)",
    )
    parser.add_argument("--redis", help="redis:// URL to use (default: start a private one)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis layers")
    parser.add_argument("--layers", help="comma-separated subset of: " + ",".join(peers.LAYERS))
    parser.add_argument(
        "--scenarios",
        help="comma-separated subset of: " + ",".join(s.key for s in measure.SCENARIOS),
    )
    parser.add_argument("--no-curves", action="store_true", help="skip the curves")
    parser.add_argument("--no-extras", action="store_true", help="skip config check, breakdown")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is not met")
    parser.add_argument(
        "--render-from",
        type=Path,
        metavar="JSON",
        help="only re-render benchmarks.md and the charts from a saved --json file",
    )
    return parser.parse_args(argv)


def _readme_for(out_dir: Path, quick: bool) -> Path | None:
    docs = (ROOT / "docs").resolve()
    return ROOT / "README.md" if out_dir.resolve() == docs and not quick else None


def write(run: Run, out_dir: Path) -> Path:
    """benchmarks.md and every chart into ``out_dir``; the README's summary when that is
    docs/ (and the run is not --quick)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "benchmarks.md"
    report.write(run, md_path)
    charts.chart(run.results, out_dir / "benchmark.png", run.quick)
    for family in curves.FAMILIES.values():
        if family.key in run.curves:
            curves.chart(family, run.curves[family.key], out_dir / family.png, run.quick)
    readme = _readme_for(out_dir, run.quick)
    if readme is not None:
        summary.write_readme_summary(readme, summary.readme_summary(run))
    return md_path


def rerender(path: Path, out_dir: Path) -> int:
    run = from_json(json.loads(path.read_text()))
    md_path = write(run, out_dir)
    print(summary.terminal_targets(run))
    print(f"wrote {md_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render_from:
        return rerender(args.render_from, args.out_dir)
    settings = measure.Settings.quick() if args.quick else measure.Settings()
    if args.rounds:
        settings.rounds = args.rounds
    if args.batch_seconds:
        settings.batch_seconds = args.batch_seconds
    names = tuple(args.layers.split(",")) if args.layers else MAIN_LAYERS
    if args.no_redis:
        names = tuple(n for n in names if n not in peers.REDIS_LAYERS)
    names = tuple(dict.fromkeys(("bare", *names)))
    scenarios = measure.SCENARIOS
    if args.scenarios:
        wanted = args.scenarios.split(",")
        scenarios = tuple(s for s in measure.SCENARIOS if s.key in wanted)
    warnings.simplefilter("ignore")  # Beaker/Django deprecation chatter

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    use_redis = not args.no_redis and any(n in peers.REDIS_LAYERS for n in names)
    with (
        peers.memcached_server(args.memcached) as memcached,
        peers.redis_server(args.redis) if use_redis else contextlib.nullcontext() as redis,
    ):
        servers = measure.Servers(memcached, redis)
        info = machine.machine_info(memcached, redis)
        log(f"memcached {memcached}; redis {redis}; MariaDB {peers.MYSQL_URL}; building layers")
        build = names
        if not args.no_extras:
            build = tuple(dict.fromkeys((*names, *CONFIG_LAYERS)))
        layers, services = peers.build_layers(memcached, build, redis=redis)
        floors = Floors(servers)
        curve_results: dict[str, measure.Results] = {}
        config: measure.Results = {}
        profile: dict[str, list[breakdown.Row]] = {}
        try:
            main_layers = {n: layers[n] for n in names}
            results = measure.run_scenarios(main_layers, floors, scenarios, settings, servers, log)
            if not args.no_curves and {"sa_sessions_server", "django_cached_db"} <= set(layers):
                curve_floors = Floors(servers, kinds=("memcached",))
                try:
                    curve_results = curves.run_curves(layers, curve_floors, settings, servers, log)
                finally:
                    curve_floors.close()
            if not args.no_extras:
                log("  configuration check: pool_pre_ping")
                chosen = tuple(s for s in measure.SCENARIOS if s.key in CONFIG_SCENARIOS)
                config = measure.run_scenarios(
                    {n: layers[n] for n in CONFIG_LAYERS}, None, chosen, settings, servers, log
                )
                if "sa_sessions" in layers:
                    log("  breakdown of sa_sessions' time")
                    profile = breakdown.breakdown(layers["sa_sessions"], settings)
            stats = counters.memcached_stats(memcached)
            info["memcached_evictions"] = str(stats.get("evictions", "?"))
        finally:
            floors.close()
            peers.close_layers(layers, services)
    elapsed = time.monotonic() - started
    run = Run(
        results=results,
        info=info,
        settings=settings,
        quick=args.quick,
        elapsed=elapsed,
        targets=targets.evaluate(results),
        curves=curve_results,
        config=config,
        profile=profile,
        end_load=machine.loadavg(),
    )
    md_path = write(run, args.out_dir)
    if args.json:
        args.json.write_text(json.dumps(to_json(run), indent=1))
    print(summary.terminal_targets(run))
    log(f"wrote {md_path} and its charts in {elapsed:.0f} s")
    failed = [t for t in run.targets if not t.passed]
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
