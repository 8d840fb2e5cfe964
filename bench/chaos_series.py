"""Several chaos runs in a row on each cache backend, and one table of their totals.

``make chaos`` runs ``bench/chaos.py`` ten times on memcached and ten times on Redis
(30 s each, a different seed every run) and prints, per backend: runs, runs passed,
requests, faults, failed requests, stale reads, lost writes and resurrections.  A
guarantee that holds "most of the time" shows up here as a non-zero total.

    python bench/chaos_series.py --runs 10 --duration 30 [--busy] [--json out.json]

``--busy`` runs a CPU hog (one busy process per core) beside every run, so the series
also covers a machine busy with other work.  Exit status 1 when any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COUNTS = ("requests", "errors", "stale_reads", "lost_writes", "resurrections")


def run_once(backend: str, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One chaos run; its JSON result, with ``exit`` and ``wall_s`` added."""
    command = [
        sys.executable,
        str(HERE / "chaos.py"),
        "--backend",
        backend,
        "--nodes",
        str(args.nodes),
        "--duration",
        str(args.duration),
        "--seed",
        str(seed),
        "--json",
        str(out),
    ]
    hogs = [_hog() for _ in range(os.cpu_count() or 1)] if args.busy else []
    began = time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    result["exit"] = proc.returncode
    result["wall_s"] = round(time.monotonic() - began, 1)
    if proc.returncode != 0:
        result["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return result


def _hog() -> subprocess.Popen[bytes]:
    """A process that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def summarize(backend: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {"backend": backend, "runs": len(results)}
    totals["passed"] = sum(1 for r in results if r["exit"] == 0)
    for count in COUNTS:
        totals[count] = sum(int(r.get(count, 0)) for r in results)
    totals["faults"] = sum(len(r.get("faults", [])) for r in results)
    totals["replays"] = sum(int(r.get("replays", 0)) for r in results)
    totals["sessions_ended"] = sum(sum(r.get("sessions_ended", {}).values()) for r in results)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memcached,redis", help="comma-separated")
    parser.add_argument("--runs", type=int, default=10, help="runs per backend (10)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run (30)")
    parser.add_argument("--nodes", type=int, choices=(2, 3), default=2)
    parser.add_argument("--busy", action="store_true", help="a CPU hog per core beside each run")
    parser.add_argument("--json", type=Path, help="write every run and the totals here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"busy": args.busy, "backends": {}}
    failed = False
    with tempfile.TemporaryDirectory(prefix="sa-chaos-") as scratch:
        for backend in args.backends.split(","):
            results = []
            for seed in range(1, args.runs + 1):
                result = run_once(backend, seed, args, Path(scratch) / f"{backend}-{seed}.json")
                results.append(result)
                print(
                    f"{backend} run {seed}: exit {result['exit']}, "
                    + ", ".join(f"{c} {result.get(c, '?')}" for c in COUNTS)
                    + f", {len(result.get('faults', []))} faults, {result['wall_s']} s",
                    flush=True,
                )
                failed = failed or result["exit"] != 0
            report["backends"][backend] = {"totals": summarize(backend, results), "runs": results}
    print()
    print(
        "| backend | runs (passed) | requests | faults | sessions ended | replays "
        "| failed requests | stale reads | lost writes | resurrections |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend, entry in report["backends"].items():
        t = entry["totals"]
        print(
            f"| {backend} | {t['runs']} ({t['passed']}) | {t['requests']:,} | {t['faults']} "
            f"| {t['sessions_ended']:,} | {t['replays']:,} | {t['errors']} | {t['stale_reads']} "
            f"| {t['lost_writes']} | {t['resurrections']} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
