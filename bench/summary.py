"""The short forms of a run: the targets table on the terminal, the README's summary."""

from __future__ import annotations

from pathlib import Path

import peers
import targets as targets_mod
from measure import overhead
from measure import scenario_for
from report import fmt
from results import Run

README_START = "<!-- benchmark-summary:start -->"
README_END = "<!-- benchmark-summary:end -->"


def terminal_targets(run: Run) -> str:
    """The targets table for the terminal."""
    rows = targets_mod.summary(run.targets)
    width = max(len(r.target) for r in rows)
    status_width = max(len(r.status) for r in rows)
    out = ["", "Targets" + (" (--quick: timings NOT meaningful)" if run.quick else "") + ":"]
    for r in rows:
        out.append(f"  {r.target:<{width}}  {r.status:<{status_width}}  {r.bound}")
    out.append("")
    for t in run.targets:
        out.append(f"  [{t.status}] {t.cache}: {t.text}")
        out.append(f"      {t.measured}")
    for cache, what, ok, counted in targets_mod.documented_checks(run.results):
        out.append(
            f"  [{'as documented' if ok else 'NOT as documented'}] {cache}: {what}: {counted}"
        )
    return "\n".join(out)


def readme_summary(run: Run) -> str:
    """The README's copy of the headline figures, with the machine they were measured on."""
    info, results = run.info, run.results
    wanted = ("sa_sessions", "sa_sessions_redis", "beaker_db", "beaker_memcached",
              "django_cached_db", "django_cached_db_redis")  # fmt: skip
    names = tuple(n for n in wanted if any(n in c for c in results.values()))
    lines = [
        README_START,
        f"Measured by `make bench` on {info['date']}: {info['machine']}; Python "
        f"{info['python']}; MariaDB {info['mariadb']}; memcached {info['memcached']}; Redis "
        f"{info.get('redis', '?')}; {info['libraries']}.",
        "",
        "Per-request overhead beyond the bare app (µs, median of interleaved rounds, "
        "lower is better):",
        "",
        "| scenario | " + " | ".join(peers.LAYER_TITLES[n] for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, cases in results.items():
        cells = []
        for name in names:
            case = cases.get(name)
            cells.append(
                "—"
                if case is None
                else "n/a"
                if not case.measured
                else fmt(overhead(results, key, name))
            )
        lines.append(f"| {scenario_for(key).title} | " + " | ".join(cells) + " |")
    lines += ["", "The performance targets, judged in this run:", ""]
    lines += ["| target | result |", "|---|---|"]
    lines += [f"| {r.target} | {r.status} |" for r in targets_mod.summary(run.targets)]
    lines += [
        "",
        "docs/benchmarks.md has every row, the floors, the curves and the CPU-time tables.",
        README_END,
    ]
    return "\n".join(lines)


def write_readme_summary(path: Path, summary: str) -> None:
    """Replace the summary between the markers (left alone when they are missing)."""
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < 0:
        return
    path.write_text(text[:start] + summary + text[end + len(README_END) :])
