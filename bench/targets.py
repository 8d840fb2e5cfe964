"""The performance targets: each one met or not, with the numbers it was judged on.

Every ratio divides *overheads*: a layer's median per-request time minus the bare
app's (measured in the same rounds), and a floor's own median time (a floor does not
run the app).  Each target is judged twice, on wall time and on CPU time; a target
met on one clock only says so.  "rounds" counts the interleaved rounds whose own
ratio meets the bound (how steady the verdict is on this machine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peers
import shapes
from measure import Results
from measure import noise_band
from measure import overhead
from measure import round_overheads

MET = "met"
NOT_MET = "not met"
CPU_ONLY = "met in CPU time only"
WALL_ONLY = "met in wall time only"
NOT_MEASURED = "not measured"

#: Per cache kind: sa_sessions' default layer, the Django layer, a title.
CACHES = {
    "memcached": ("sa_sessions", "django_cached_db", "memcached"),
    "redis": ("sa_sessions_redis", "django_cached_db_redis", "Redis"),
}
UNTOUCHED_SLACK_US = 1.0
COOKIE_FACTOR = 2.5
READ_FLOOR_FACTOR = 1.3
READ_DJANGO_FRACTION = 1 / 2
WRITE_FLOOR_FACTOR = 1.2
WRITE_DJANGO_FRACTION = 2 / 3


@dataclass
class Target:
    cache: str  # "memcached" or "redis"
    group: str  # "untouched", "cookie", "server read", "server write"
    shape: str | None
    text: str
    status: str
    measured: str

    @property
    def passed(self) -> bool:
        return self.status == MET


def _status(wall_ok: bool | None, cpu_ok: bool | None) -> str:
    if wall_ok is None:
        return NOT_MEASURED
    if wall_ok and (cpu_ok or cpu_ok is None):
        return MET
    if cpu_ok:
        return CPU_ONLY
    if wall_ok:
        return WALL_ONLY
    return NOT_MET


def _rounds(
    results: Results, scenario: str, mine: str, base: str, ok: Callable[[float, float], bool]
) -> str:
    """``k/n rounds``: the rounds whose own (wall) figures meet the bound."""
    a, b = round_overheads(results, scenario, mine), round_overheads(results, scenario, base)
    pairs = list(zip(a, b, strict=False))
    if not pairs:
        return ""
    return f"; {sum(ok(x, y) for x, y in pairs)}/{len(pairs)} rounds"


def _ratio_target(
    results: Results,
    scenario: str,
    mine: str,
    base: str,
    factor: float,
    what: str,
) -> tuple[str, str]:
    """Status and text of ``overhead(mine) <= factor * overhead(base)``."""
    values = {
        cpu: (overhead(results, scenario, mine, cpu), overhead(results, scenario, base, cpu))
        for cpu in (False, True)
    }
    wall_mine, wall_base = values[False]
    if wall_mine is None or wall_base is None or wall_base <= 0:
        return NOT_MEASURED, f"{mine} or {what} not measured"
    cpu_mine, cpu_base = values[True]
    wall_ok = wall_mine <= factor * wall_base
    cpu_ok = None
    cpu_text = ""
    if cpu_mine is not None and cpu_base is not None and cpu_base > 0:
        cpu_ok = cpu_mine <= factor * cpu_base
        cpu_text = f"; CPU {cpu_mine:.1f} / {cpu_base:.1f} µs = {cpu_mine / cpu_base:.2f}x"
    text = (
        f"{wall_mine:.1f} / {wall_base:.1f} µs = {wall_mine / wall_base:.2f}x "
        f"(bound {factor:.2f}x){cpu_text}"
        + _rounds(results, scenario, mine, base, lambda x, y: x <= factor * y)
    )
    return _status(wall_ok, cpu_ok), text


def _is_cache_hit(results: Results, scenario: str, layer: str) -> bool:
    counts = results.get(scenario, {}).get(layer)
    return counts is None or not counts.counts or counts.counts.get("sql") == 0


def evaluate(results: Results) -> list[Target]:
    targets: list[Target] = []
    for cache, (sa, django, title) in CACHES.items():
        if any(sa in cases for cases in results.values()):
            targets += _evaluate_cache(results, cache, sa, django, title)
    return targets


def _evaluate_cache(results: Results, cache: str, sa: str, django: str, title: str) -> list[Target]:
    targets: list[Target] = []

    def add(group: str, shape: str | None, text: str, status: str, measured: str) -> None:
        targets.append(Target(cache, group, shape, text, status, measured))

    # Untouched request vs a middleware that only adds an environ entry.
    if "untouched" in results:
        walls = [overhead(results, "untouched", n) for n in (sa, "middleware_only")]
        cpus = [overhead(results, "untouched", n, cpu=True) for n in (sa, "middleware_only")]
        text = f"untouched request ({title} layer): within 1 µs of the middleware"
        if walls[0] is None or walls[1] is None:
            add("untouched", None, text, NOT_MEASURED, "not measured")
        else:
            wall_diff = walls[0] - walls[1]
            cpu_diff = cpus[0] - cpus[1] if cpus[0] is not None and cpus[1] is not None else 0
            band = noise_band(results, "untouched")
            measured = (
                f"sa_sessions {walls[0]:+.2f} µs, middleware {walls[1]:+.2f} µs: "
                f"{wall_diff:+.2f} µs (CPU {cpu_diff:+.2f} µs); bare app's own wander "
                f"±{band:.2f} µs"
                + _rounds(
                    results,
                    "untouched",
                    sa,
                    "middleware_only",
                    lambda x, y: x - y <= UNTOUCHED_SLACK_US,
                )
            )
            status = _status(wall_diff <= UNTOUCHED_SLACK_US, cpu_diff <= UNTOUCHED_SLACK_US)
            add("untouched", None, text, status, measured)
    # Cookie sessions vs the cookie floors (and Beaker's encrypted cookie).
    for op in ("read", "write"):
        scenario = f"small_{op}"
        if scenario not in results:
            continue
        status, measured = _ratio_target(
            results, scenario, sa, f"floor_cookie_{op}", COOKIE_FACTOR, "the cookie floor"
        )
        mine = overhead(results, scenario, sa)
        beaker = overhead(results, scenario, "beaker_cookie")
        if mine is not None and beaker:
            cpu_mine = overhead(results, scenario, sa, cpu=True) or 0.0
            cpu_beaker = overhead(results, scenario, "beaker_cookie", cpu=True) or 1.0
            measured += (
                f"; vs Beaker cookie (AES): {mine:.1f} / {beaker:.1f} µs = "
                f"1/{beaker / mine:.1f} (CPU 1/{cpu_beaker / max(cpu_mine, 1e-9):.1f})"
            )
        add("cookie", None, f"cookie session {op}: <= 2.5x the cookie floor", status, measured)
    # Server sessions, every shape.
    for shape in shapes.SERVER_SHAPES:
        for op, factor, fraction, group in (
            ("read", READ_FLOOR_FACTOR, READ_DJANGO_FRACTION, "server read"),
            ("write", WRITE_FLOOR_FACTOR, WRITE_DJANGO_FRACTION, "server write"),
        ):
            scenario = f"{shape}_{op}"
            if scenario not in results:
                continue
            floor_name = f"floor_{op}_{cache}"
            floor = results[scenario].get(floor_name)
            label = shapes.SHAPES[shape].title
            what = "read, cache hit" if op == "read" else "write"
            if floor is None or floor.na is not None:
                reason = floor.na if floor is not None else "no floor"
                add(group, shape, f"{label}: {what} <= {factor}x the {op} floor",
                    NOT_MEASURED, reason or "")  # fmt: skip
                add(group, shape, f"{label}: {what} <= {_fraction(fraction)} of Django",
                    NOT_MEASURED, reason or "")  # fmt: skip
                continue
            layer = str(floor.extra.get("source", sa))
            note = (
                f" ({peers.LAYER_TITLES[layer]}: the default keeps this shape in its cookie)"
                if layer != sa
                else ""
            )
            status, measured = _ratio_target(
                results, scenario, layer, floor_name, factor, f"the {op} floor"
            )
            add(
                group,
                shape,
                f"{label}: {what} <= {factor}x the {op} floor{note}",
                status,
                measured,
            )
            status, measured = _ratio_target(
                results, scenario, layer, django, fraction, "Django cached_db"
            )
            if op == "read" and not _is_cache_hit(results, scenario, django):
                measured += "; Django's read is NOT a cache hit here (see the counts)"
            add(
                group,
                shape,
                f"{label}: {what} <= {_fraction(fraction)} of Django cached_db{note}",
                status,
                measured,
            )
    return targets


def _fraction(value: float) -> str:
    return {0.5: "1/2", round(2 / 3, 6): "2/3"}.get(round(value, 6), f"{value:.2f}x")


# --------------------------------------------------------------------------- summary


@dataclass
class SummaryRow:
    target: str
    bound: str
    status: str
    measured: str


def _aggregate(rows: list[Target]) -> str:
    if not rows:
        return NOT_MEASURED
    statuses = [t.status for t in rows]
    if len(set(statuses)) == 1:
        return statuses[0]
    if all(s in (MET, CPU_ONLY) for s in statuses):
        return CPU_ONLY
    if all(s in (MET, WALL_ONLY) for s in statuses):
        return WALL_ONLY
    met = sum(s == MET for s in statuses)
    partly = sum(s in (CPU_ONLY, WALL_ONLY) for s in statuses)
    more = f"; {partly} more on one clock only" if partly else ""
    return f"{NOT_MET} ({met} of {len(rows)} met{more})"


def _worst(rows: list[Target]) -> str:
    failing = [t for t in rows if t.status != MET]
    shown = failing or rows
    return "; ".join(
        f"{t.text.split(':')[0] if t.shape else t.cache}: {t.measured.split(' (bound')[0]}"
        for t in shown[:4]
    ) + (f"; and {len(shown) - 4} more" if len(shown) > 4 else "")


def summary(targets: list[Target]) -> list[SummaryRow]:
    """The headline table: one row per performance target."""
    mc = [t for t in targets if t.cache == "memcached"]
    redis = [t for t in targets if t.cache == "redis"]

    def pick(group: str, rows: list[Target]) -> list[Target]:
        return [t for t in rows if t.group == group]

    out = [
        SummaryRow(
            "untouched request",
            "within 1 µs of the middleware that only adds an environ entry",
            _aggregate(pick("untouched", mc)),
            _worst(pick("untouched", mc)),
        ),
        SummaryRow(
            "cookie session read / write",
            "<= 2.5x the cookie floor (ratio to Beaker's encrypted cookie shown)",
            _aggregate(pick("cookie", mc)),
            "; ".join(f"{t.text.split(':')[0]}: {t.measured}" for t in pick("cookie", mc)),
        ),
        SummaryRow(
            "server session read on a cache hit, every shape (memcached)",
            "<= 1.3x the read floor and <= 1/2 of Django cached_db",
            _aggregate(pick("server read", mc)),
            _worst(pick("server read", mc)),
        ),
        SummaryRow(
            "server session write, every shape (memcached)",
            "<= 1.2x the write floor and <= 2/3 of Django cached_db",
            _aggregate(pick("server write", mc)),
            _worst(pick("server write", mc)),
        ),
        SummaryRow(
            "Redis region",
            "the same rows for Redis as for memcached",
            _aggregate(redis),
            _worst(redis) if redis else "not measured (no redis-server)",
        ),
    ]
    return out


# --------------------------------------------------------------------------- counts


def count_text(c: dict[str, Any]) -> str:
    if not c:
        return "not measured"
    cache = ", ".join(f"{v} {k}" for k, v in sorted(c.get("cache", {}).items())) or "0 cache"
    db = ", ".join(f"{v} {k}" for k, v in sorted(c.get("db", {}).items()))
    return (
        f"{c['sql']} SQL ({c['db_round_trips']} DB round trips{': ' + db if db else ''}); {cache}"
    )


#: What sa_sessions documents (docs/operations.md): per request, on sa_sessions' default layer.
DOCUMENTED: tuple[tuple[str, str, int, dict[str, int]], ...] = (
    ("untouched", "untouched request: 0 SQL, 0 cache calls", 0, {}),
    ("small_read", "cookie session read: 0 SQL, 0 cache calls", 0, {}),
    ("small_write", "cookie session write: 0 SQL, 0 cache calls", 0, {}),
    ("large_read", "server read on a cache hit: 0 SQL + 1 cache get", 0, {"get": 1}),
    (
        "large_write",
        "server write: 1 UPDATE (+ COMMIT) + 1 cache get + 1 cache write",
        1,
        {"get": 1, "set": 1},
    ),
    (
        "large_read_miss",
        "read on a cache miss: 1 SELECT + 1 cache get + 1 cache write",
        1,
        {"get": 1, "set": 1},
    ),
)


def documented_checks(results: Results) -> list[tuple[str, str, bool, str]]:
    """(cache, what, as documented?, counted) for sa_sessions' default layers."""
    out = []
    for cache, (sa, _, _) in CACHES.items():
        for key, what, sql, ops in DOCUMENTED:
            case = results.get(key, {}).get(sa)
            if case is None or not case.counts:
                continue
            c = case.counts
            ok = c["sql"] == sql and c["cache"] == ops and c["exact"] and c["server_check"]
            out.append((cache, what, ok, count_text(c)))
    return out


def to_json(targets: list[Target]) -> list[dict[str, Any]]:
    return [
        {
            "cache": t.cache,
            "group": t.group,
            "shape": t.shape,
            "text": t.text,
            "status": t.status,
            "passed": t.passed,
            "measured": t.measured,
        }
        for t in targets
    ]
