"""Cost as the session grows: read-one-key on a cache hit, over session size and key count.

Two families, each point a scenario of its own run like the main ones (interleaved
rounds, exact counts, the read floor built from the bytes sa_sessions stored):

* ``size``: one value of 1, 4, 16, 64, 256 and 1,024 KB (KB = 1,000 bytes) plus
  ``user_id``: one key holding nearly all of the session;
* ``keys``: 1, 10, 100, 300 and 1,000 values of 100 characters plus ``user_id``.

Measured on memcached for sa_sessions (server-only: the default would keep the
smallest points in its cookie, which is not a cache read) and Django cached_db.
Each family gets a table and a log-log chart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path

import peers
import shapes
from measure import FloorFactory
from measure import Results
from measure import Servers
from measure import Settings
from measure import overhead
from measure import run_scenarios
from measure import scenario_for

CURVE_LAYERS = ("bare", "sa_sessions_server", "django_cached_db")
SA, DJANGO, FLOOR = "sa_sessions_server", "django_cached_db", "floor_read_memcached"


@dataclass(frozen=True)
class Family:
    key: str
    title: str
    axis: str
    points: tuple[str, ...]
    values: tuple[float, ...]  # x of each point
    png: str


FAMILIES = {
    "size": Family(
        "size",
        "session size: one value holding nearly all of it, plus `user_id`",
        "session size (KB, log scale)",
        tuple(f"size_{n}" for n in shapes.SIZE_POINTS),
        tuple(n / 1000 for n in shapes.SIZE_POINTS),
        "benchmark-curve-size.png",
    ),
    "keys": Family(
        "keys",
        "number of keys: 100-character values, plus `user_id`",
        "number of keys (log scale)",
        tuple(f"keys_{n}" for n in shapes.KEY_POINTS),
        tuple(float(n) for n in shapes.KEY_POINTS),
        "benchmark-curve-keys.png",
    ),
}


def curve_settings(settings: Settings) -> Settings:
    """Fewer, shorter rounds than the main scenarios (11 points, 4 cases each)."""
    return replace(
        settings,
        rounds=max(2, settings.rounds - 2),
        batch_seconds=settings.batch_seconds * 0.6,
    )


def run_curves(
    layers: dict[str, peers.Layer],
    floors: FloorFactory,
    settings: Settings,
    servers: Servers,
    log: Callable[[str], None],
) -> dict[str, Results]:
    chosen = {name: layers[name] for name in CURVE_LAYERS if name in layers}
    out: dict[str, Results] = {}
    for family in FAMILIES.values():
        log(f"  curve: {family.key}")
        scenarios = tuple(scenario_for(f"curve_{point}") for point in family.points)
        out[family.key] = run_scenarios(
            chosen, floors, scenarios, curve_settings(settings), servers, log
        )
    return out


def _label(family: Family, point: str) -> str:
    number = int(point.split("_", 1)[1])
    return f"{number / 1000:g} KB" if family.key == "size" else f"{number:,}"


def table(family: Family, results: Results) -> list[str]:
    lines = [
        f"| {family.axis.split(' (')[0]} | pickled bytes | sa_sessions (server-only) µs | "
        "Django cached_db µs | read floor µs | sa_sessions ÷ floor | Django ÷ sa_sessions |"
        " Django SQL per read |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in family.points:
        key = f"curve_{point}"
        if key not in results:
            continue
        sa = overhead(results, key, SA)
        django = overhead(results, key, DJANGO)
        floor = overhead(results, key, FLOOR)
        dj_case = results[key].get(DJANGO)
        dj_sql = dj_case.counts.get("sql", "n/a") if dj_case and dj_case.counts else "n/a"

        def fmt(v: float | None) -> str:
            return "n/a" if v is None else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}")

        ratio = f"{sa / floor:.2f}x" if sa is not None and floor else "n/a"
        vs = f"{django / sa:.1f}x" if sa and django is not None else "n/a"
        lines.append(
            f"| {_label(family, point)} | {shapes.pickled_size(point):,} | {fmt(sa)} | "
            f"{fmt(django)} | {fmt(floor)} | {ratio} | {vs} | {dj_sql} |"
        )
    return lines


def chart(family: Family, results: Results, path: Path, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, label, style in (
        (SA, "sa_sessions (server-only)", "o-"),
        (DJANGO, "Django cached_db", "s-"),
        (FLOOR, "read floor (get + MAC + one value)", "^--"),
    ):
        xs, ys = [], []
        for point, x in zip(family.points, family.values, strict=True):
            value = overhead(results, f"curve_{point}", name)
            if value is not None:
                xs.append(x)
                ys.append(max(value, 0.1))
        if xs:
            ax.plot(xs, ys, style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(family.axis)
    ax.set_ylabel("read one key on a cache hit, µs over the bare app (log)")
    title = f"Cost as the session grows: {family.key} (memcached)"
    if quick:
        title += " [--quick: not meaningful]"
    ax.set_title(title)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
