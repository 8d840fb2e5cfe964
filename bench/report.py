"""The Markdown report (benchmarks.md): targets, shapes, tables, floors, curves, method.

Sections that other scripts own are kept verbatim between their markers when the
report is rewritten (``bench/http_throughput.py``: ``http-throughput``;
``bench/purge_at_scale.py``: ``purge-at-scale``); a placeholder holds their place
until they have run.
"""

from __future__ import annotations

from pathlib import Path

import curves
import peers
import shapes
import targets as targets_mod
from breakdown import BREAKDOWN_SCENARIOS
from breakdown import Row
from measure import Case
from measure import Results
from measure import overhead
from measure import scenario_for
from results import Run
from sections import markers

#: Sections of other scripts kept in benchmarks.md: (marker, title, script, command).
KEPT_SECTIONS = (
    ("http-throughput", "HTTP throughput", "bench/http_throughput.py", "make bench-http"),
    (
        "purge-at-scale",
        "Purge at scale",
        "bench/purge_at_scale.py",
        "python bench/purge_at_scale.py --out-dir docs",
    ),
)

MEMCACHED_LAYERS = peers.MEMCACHED_TABLE
REDIS_LAYERS = peers.REDIS_TABLE
#: Peers compared with sa_sessions in the ratio tables, per cache kind.
RATIO_PEERS = {
    "memcached": (
        "sa_sessions",
        ("beaker_db", "beaker_memcached", "beaker_cookie", "django_cached_db"),
    ),
    "redis": ("sa_sessions_redis", ("django_cached_db_redis",)),
}


# --------------------------------------------------------------------------- cells


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


class Footnotes:
    """Numbered notes under a table: "n/a [2]" in the cell, the reason below."""

    def __init__(self) -> None:
        self.texts: dict[str, int] = {}

    def mark(self, text: str) -> str:
        return f"[{self.texts.setdefault(text, len(self.texts) + 1)}]"

    def lines(self) -> list[str]:
        if not self.texts:
            return []
        return ["", *(f"[{n}] {text}  " for text, n in self.texts.items())]


def _cell(case: Case | None, value: float | None, notes: Footnotes) -> str:
    if case is None:
        return "—"
    title = peers.LAYER_TITLES.get(case.name, case.name)
    if case.na is not None:
        return "n/a " + notes.mark(f"{title}: {case.na}")
    text = fmt(value)
    return f"{text} {notes.mark(f'{title}: {case.note}')}" if case.note else text


def count_cell(case: Case | None) -> str:
    if case is None:
        return "—"
    if case.na is not None or not case.counts:
        return "n/a"
    c = case.counts
    cache = c.get("cache", {})
    parts = [f"{c['sql']} / {c['db_round_trips']}"]
    ops = " ".join(f"{cache[k]}{k[0]}" for k in ("get", "set", "delete") if cache.get(k))
    others = {k: v for k, v in cache.items() if k not in ("get", "set", "delete")}
    ops += "".join(f" {v} {k}" for k, v in others.items())
    parts.append(ops.strip() or "0")
    cell = " · ".join(parts)
    if not c.get("exact", True):
        cell += " (varies)"
    if not c.get("server_check", True):
        cell += " (server disagrees!)"
    return cell


def _title(key: str) -> str:
    return scenario_for(key).title


# --------------------------------------------------------------------------- sections


def _overhead_tables(lines: list[str], results: Results, names: tuple[str, ...]) -> None:
    present = [n for n in names if any(n in cases for cases in results.values())]
    notes = Footnotes()
    for cpu in (False, True):
        if cpu:
            lines += [
                "",
                "CPU time (`time.thread_time_ns`) per request minus the bare app's: the work "
                "itself, without the waits for MariaDB (COMMIT fsyncs), the cache servers "
                "and other processes.",
                "",
            ]
        lines.append("| scenario | " + " | ".join(peers.LAYER_TITLES[n] for n in present) + " |")
        lines.append("|---|" + "---:|" * len(present))
        for key, cases in results.items():
            cells = []
            for name in present:
                case = cases.get(name)
                if name == "bare" and case is not None and case.measured:
                    cells.append(fmt(case.cpu_median if cpu else case.median))
                    continue
                cells.append(_cell(case, overhead(results, key, name, cpu=cpu), notes))
            lines.append(f"| {_title(key)} | " + " | ".join(cells) + " |")
        if not cpu:
            lines += notes.lines()


def _ratio_table(lines: list[str], results: Results, cache: str) -> None:
    sa, peer_names = RATIO_PEERS[cache]
    present = [p for p in peer_names if any(p in cases for cases in results.values())]
    if not present or not any(sa in cases for cases in results.values()):
        return
    lines += [
        "",
        f"Peer overhead ÷ {peers.LAYER_TITLES[sa]} overhead (> 1: sa_sessions is faster); "
        "wall time, then CPU time in parentheses. On shapes the default keeps in its "
        "cookie (the cart) this compares the cookie session with the peers' server sessions.",
        "",
        "| scenario | " + " | ".join(peers.LAYER_TITLES[p] for p in present) + " |",
        "|---|" + "---:|" * len(present),
    ]

    def ratio(key: str, peer: str, cpu: bool) -> str:
        mine = overhead(results, key, sa, cpu=cpu)
        theirs = overhead(results, key, peer, cpu=cpu)
        if mine is None or theirs is None or mine <= 0.5:
            return "—"
        return f"{theirs / mine:.1f}x"

    for key, cases in results.items():
        if sa not in cases:
            continue
        cells = []
        for peer in present:
            case = cases.get(peer)
            if case is None or not case.measured:
                cells.append("n/a")
            else:
                cells.append(f"{ratio(key, peer, False)} ({ratio(key, peer, True)})")
        lines.append(f"| {_title(key)} | " + " | ".join(cells) + " |")
    lines += ["", "— : sa_sessions' overhead is under 0.5 µs (within noise): no ratio."]


def _count_table(lines: list[str], results: Results, names: tuple[str, ...], what: str) -> None:
    present = [
        n
        for n in names
        if n not in ("bare", "middleware_only") and any(n in c for c in results.values())
    ]
    lines += [
        "",
        f"Cell: `SQL statements / DB round trips · {what} round trips` (g = get, s = set or "
        "compare-and-swap, d = delete). DB round trips include COMMIT, ROLLBACK, pings and "
        "autocommit switches.",
        "",
        "| scenario | " + " | ".join(peers.LAYER_TITLES[n] for n in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for key, cases in results.items():
        cells = [count_cell(cases.get(n)) for n in present]
        lines.append(f"| {_title(key)} | " + " | ".join(cells) + " |")


def _shapes_section(lines: list[str], results: Results) -> None:
    lines += [
        "## Session shapes",
        "",
        "Deterministic (seeded) data built from words, numbers and punctuation "
        "(`bench/shapes.py`). *pickled* is the exact size of the shape pickled as one dict "
        "(protocol 5); *zlib* is how much zlib level 1 shrinks that pickle; the sa_sessions "
        "columns are what it stored for the read scenario (memcached), read back from the "
        "row and the cache.",
        "",
        "| shape | what | keys | pickled bytes | zlib | sa_sessions blob | cache entry | "
        "compressed | where the default keeps it |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for key in ("small", *shapes.SERVER_SHAPES):
        shape = shapes.SHAPES[key]
        floor = results.get(f"{key}_read", {}).get("floor_read_memcached")
        info = floor.extra if floor is not None and floor.na is None else {}
        if key == "small":
            where = "cookie"
        elif info:
            where = (
                "server (row + cache)"
                if info.get("source") == "sa_sessions"
                else "cookie (fits: server-only layer measured for the server rows)"
            )
        else:
            where = "n/a"
        lines.append(
            f"| {shape.title} | {shape.description} | {len(shapes.data(key))} | "
            f"{shapes.pickled_size(key):,} | {shapes.compress_ratio(key):.2f}x | "
            f"{info.get('blob_bytes', 0):,} | {info.get('entry_bytes', 0):,} | "
            f"{info.get('compressed', '—')} | {where} |"
        )
    lines.append("")


def _floors_section(lines: list[str], results: Results) -> None:
    lines += [
        "## Floors",
        "",
        "Measured in the same interleaved rounds as the layers; µs, median over rounds. "
        "A floor does not run the app, so it compares with a layer's overhead.",
        "",
        "| scenario | floor | parts (µs) | floor (µs) | layer | layer overhead (µs) | ratio | "
        "ratio on CPU time |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for key, cases in results.items():
        for name, case in cases.items():
            if not name.startswith("floor_"):
                continue
            if case.na is not None:
                lines.append(f"| {_title(key)} | {name} | n/a ({case.na}) | | | | | |")
                continue
            if not case.measured:
                continue
            source = str(case.extra.get("source", "sa_sessions"))
            mine = overhead(results, key, source)
            cpu_mine = overhead(results, key, source, cpu=True)
            parts = ", ".join(f"{p} {case.part(p):.1f}" for p in case.parts)
            notes = []
            if case.extra.get("mac_verified") is False:
                notes.append("MAC not verified")
            if key.endswith("_read") and "inflate" in cases and cases["inflate"].measured:
                notes.append(f"not in the floor: inflate {cases['inflate'].median:.1f}")
            if notes:
                parts += " (" + "; ".join(notes) + ")"
            ratio = f"{mine / case.median:.2f}x" if mine is not None and case.median else "n/a"
            cpu_ratio = (
                f"{cpu_mine / case.cpu_median:.2f}x"
                if cpu_mine is not None and case.cpu_median
                else "n/a"
            )
            lines.append(
                f"| {_title(key)} | {name} | {parts or '—'} | {fmt(case.median)} | "
                f"{peers.LAYER_TITLES.get(source, source)} | {fmt(mine)} | {ratio} | {cpu_ratio} |"
            )
    lines.append("")


def _targets_section(lines: list[str], run: Run) -> None:
    lines += [
        "## Targets",
        "",
        f"Judged in this run (one process, interleaved rounds; load average {run.info['load']} "
        f"at the start, {run.end_load or 'unknown'} at the end). *met in CPU time only*: the "
        "bound holds on CPU time but not on wall time, whose extra is waiting (COMMIT fsyncs, "
        "network, other processes on this shared machine): expect it to hold on wall time "
        "only on a quiet machine. What is divided by what: see *How it is measured*.",
        "",
        "| target | bound | result | measured |",
        "|---|---|---|---|",
    ]
    for row in targets_mod.summary(run.targets):
        lines.append(f"| {row.target} | {row.bound} | **{row.status}** | {row.measured} |")
    lines += [
        "| cleanup rate | measured by `bench/purge_at_scale.py` | see its section at the end "
        "(*Purge at scale*) | — |",
        "| HTTP throughput | measured by `bench/http_throughput.py` | see its section at the "
        "end (*HTTP throughput*) | — |",
        "",
    ]
    for cache, title in (("memcached", "memcached"), ("redis", "Redis")):
        rows = [t for t in run.targets if t.cache == cache]
        if not rows:
            continue
        lines += [
            f"### Every target row, {title}",
            "",
            "| target | result | measured |",
            "|---|---|---|",
        ]
        lines += [f"| {t.text} | {t.status} | {t.measured} |" for t in rows]
        lines.append("")
    lines += _documented_counts(run.results)


def _documented_counts(results: Results) -> list[str]:
    checks = targets_mod.documented_checks(results)
    if not checks:
        return []
    lines = [
        "### Round trips, as sa_sessions documents them",
        "",
        "Exact counts per request (the `large` shape); the DB round trips beyond the "
        "statement are the pool's pre-ping and its ROLLBACK on return.",
        "",
        "| cache | documented | as documented | counted |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {cache} | {what} | {'yes' if ok else '**no**'} | {counted} |"
        for cache, what, ok, counted in checks
    ]
    return [*lines, ""]


def _curves_section(lines: list[str], run: Run) -> None:
    if not run.curves:
        return
    lines += [
        "## Cost as the session grows",
        "",
        "Reading one key (`user_id`) on a cache hit (memcached), overhead over the bare app "
        "in µs, as the session grows. sa_sessions is measured server-only (its default "
        "would keep the smallest points in the cookie); each point is its own scenario with "
        "interleaved rounds, exact counts and the read floor of the bytes sa_sessions stored.",
        "",
    ]
    for family in curves.FAMILIES.values():
        results = run.curves.get(family.key)
        if not results:
            continue
        lines += [
            f"### {family.title[0].upper()}{family.title[1:]}",
            "",
            f"![{family.key} curve]({family.png})",
            "",
            *curves.table(family, results),
            "",
        ]


def _config_section(lines: list[str], run: Run) -> None:
    if not run.config:
        return
    lines += [
        "## Configuration check: `pool_pre_ping`",
        "",
        "Every SQLAlchemy engine now has `pool_pre_ping=True, pool_recycle=1800` (what the "
        "README recommends); earlier runs used `create_engine(url)` defaults. Both are "
        "measured here in the same interleaved rounds, on the `large` shape (memcached):",
        "",
        "| scenario | with pre-ping (µs) | without (µs) | difference (µs) | CPU difference (µs) | "
        "DB round trips with / without |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key, cases in run.config.items():
        with_, without = "sa_sessions", "sa_sessions_no_pre_ping"
        a, b = overhead(run.config, key, with_), overhead(run.config, key, without)
        ca, cb = (
            overhead(run.config, key, with_, cpu=True),
            overhead(run.config, key, without, cpu=True),
        )
        diff = f"{a - b:+.1f}" if a is not None and b is not None else "n/a"
        cdiff = f"{ca - cb:+.1f}" if ca is not None and cb is not None else "n/a"

        lines.append(
            f"| {_title(key)} | {fmt(a)} | {fmt(b)} | {diff} | {cdiff} | "
            f"{_trips(cases.get(with_))} / {_trips(cases.get(without))} |"
        )
    lines.append("")


def _pre_ping_text(config: Results) -> str:
    """One sentence: what pool_pre_ping cost in this run."""
    parts = []
    for key, what in (("large_write", "a write"), ("large_read_miss", "a cache miss"),
                      ("large_read", "a cache hit")):  # fmt: skip
        a = overhead(config, key, "sa_sessions")
        b = overhead(config, key, "sa_sessions_no_pre_ping")
        ca = overhead(config, key, "sa_sessions", cpu=True)
        cb = overhead(config, key, "sa_sessions_no_pre_ping", cpu=True)
        if a is None or b is None or ca is None or cb is None:
            continue
        parts.append(f"{a - b:+.0f} µs wall ({ca - cb:+.0f} µs CPU) on {what}")
    if not parts:
        return ""
    return "In this run: " + "; ".join(parts) + " (differences of a few µs are noise)."


def _trips(case: Case | None) -> str:
    if case is None or not case.counts:
        return "n/a"
    db = case.counts.get("db", {})
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(db.items())) or "none"
    return f"{case.counts['db_round_trips']} ({kinds})"


def _profile_section(lines: list[str], profile: dict[str, list[Row]]) -> None:
    if not profile:
        return
    keys = [k for k in BREAKDOWN_SCENARIOS if k in profile]
    lines += [
        "## Where sa_sessions spends its time",
        "",
        "Inclusive time per request in named functions (CPU µs, wall µs in parentheses), "
        "from a separate pass with timing wrappers (about 1 µs each); indented rows are "
        "part of the row above.",
        "",
        "| function | " + " | ".join(_title(k) for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    seen: dict[str, int] = {}
    for k in keys:
        for label, depth, *_ in profile[k]:
            seen.setdefault(label, depth)
    for label, depth in seen.items():
        cells = []
        for k in keys:
            row = next((r for r in profile[k] if r[0] == label), None)
            if row is None:
                cells.append("—")
            else:
                calls = f" x{row[2]:.0f}" if row[2] >= 1.5 else ""
                cells.append(f"{row[3]:.0f} ({row[4]:.0f}){calls}")
        lines.append(f"| {'&nbsp;&nbsp;' * depth}{label} | " + " | ".join(cells) + " |")
    lines.append("")


METHOD = """\
## How it is measured

* **One process, direct WSGI calls.** Each layer wraps the same Bottle app
  (`bench/peers.py`); a request is a fresh PEP 3333 environ passed to the layer's WSGI
  callable, the body is consumed and closed. No HTTP, no threads.
* **Rounds.** Within a round every layer and every floor of a scenario runs in small
  slices, all of them in turn, {passes} times over, the order rotated, with
  `gc.collect()` at the start of the round ({rounds} rounds); so a slow drift of a shared
  machine hits all cases alike. Each request is timed alone with `perf_counter_ns` (wall)
  and `thread_time_ns` (CPU); the cache eviction of a "cache miss" scenario happens
  outside the clock.
* **What is divided by what.** A layer's *overhead* = the median over rounds of its mean
  time per request, minus the same figure for the bare app (the same routes with a plain
  dict instead of a session), measured in the same rounds. A floor does not run the app:
  its figure is its own median time. Floor targets divide sa_sessions' overhead by the
  floor; Django targets divide sa_sessions' overhead by Django's overhead; the untouched
  target subtracts the overhead of the middleware that only adds an environ entry from
  sa_sessions'. Every target is judged on wall time and on CPU time, and "k/n rounds"
  counts the rounds whose own wall-time figures meet it.
* **Requests.** Reads read one key (`user_id`); writes read and increment one key
  (`hits`); login = no cookie, then regenerate the id (Django: `cycle_key()`, what
  `django.contrib.auth.login()` calls; Beaker cookie: `invalidate()`, because
  `CookieSession.regenerate_id()` raises `AttributeError` in Beaker 1.14) and store 3
  keys. Shapes: see *Session shapes*.
* **Configurations, as each project documents them.** sa_sessions: `SessionMiddleware` +
  `SessionStore(model, engine, region=memcached_region([address]))` or
  `region=redis_region(url)`, every default (small sessions in the signed cookie);
  *server-only* is the same with `cookie_only_threshold=0`. Every SQLAlchemy engine
  (sa_sessions', and Beaker's through `session.sa_opts`) is
  `create_engine(url, pool_pre_ping=True, pool_recycle=1800)`, as the README recommends.
  Beaker server sessions use `save_accessed_time=False` (its fastest setting: otherwise
  every read also writes) and an explicit `session.save()` on writes; Beaker cookie
  sessions keep the default. Django runs `cached_db` through a WSGI copy of its
  `SessionMiddleware` (same steps, no `HttpRequest`/`HttpResponse` objects), persistent
  connection, on `PyMemcacheCache` or on its own `RedisCache` (`SESSION_CACHE_ALIAS`
  selects the cache; here a `cached_db.SessionStore` subclass does, so both run in one
  process). ONE private memcached ({memcached}; 256 MB, default 1 MB item limit) and ONE
  private redis-server ({redis}) serve every layer. **Against the old settings:** the
  old benchmark already shared one memcached between every layer and used
  `memcached_region([address])` with its defaults, so only `pool_pre_ping` changed; the
  *Configuration check* section measures it: it adds one ping round trip to every
  request that checks a connection out of the pool (writes and cache misses; a cache
  hit checks none out). {pre_ping}
* **SQL statements** are counted the way each library exposes them: SQLAlchemy
  `before_cursor_execute` events on sa_sessions' engine and on the engine Beaker
  registers; Django's `CaptureQueriesContext` (without the `BEGIN`/`COMMIT`
  pseudo-queries Django logs). **DB round trips** are counted one level lower, on
  `MySQLdb.connections.Connection` (`query`, `commit`, `rollback`, `autocommit`,
  `ping`), which all of them use.
* **Cache round trips** are counted in the client libraries (pymemcache
  `Client._fetch_cmd/_store_cmd/_misc_cmd`; python-memcached `_Host.send_cmd(s)`;
  redis-py `Redis.execute_command`, a pipeline counting once) and cross-checked against
  the servers' own counters: memcached `stats` (`cmd_get`, `cmd_set`, `delete_hits +
  delete_misses`) and Redis `INFO commandstats` (GET, SET + EVALSHA less the SETs run
  inside sa_sessions' compare-and-swap script, DEL): {server_check}. Counting runs in a
  separate pass, so the counters never slow down the timed rounds.
* **Floors** (`bench/floors.py`), on the bytes sa_sessions stored (read back from the row
  and the cache, so they follow its layout): *cookie read floor* = find the session
  cookie in the `Cookie` header, base64url-decode, `hmac.digest` SHA-256, `json.loads`,
  check the expiry; *cookie write floor* = the same, then change the value, `json.dumps`,
  base64url, HMAC and the `Set-Cookie` text. *Read floor* = raw pymemcache `Client.get`
  or redis-py `GET` (a plain client with the regions' default socket timeouts) of
  sa_sessions' own cache entry + one HMAC-SHA256 over the blob in it
  + `pickle.loads` of the bytes of the one value read (`user_id`): nothing for the keys
  the request never reads, nor for locating the value (done once, before timing, with
  `store.codec.open_lazy`), nor for decompressing a compressed blob (shown apart as
  *inflate*), nor for the entry's own tag (sa_sessions checks a second, short HMAC).
  *Write floor* = the read floor on `hits` + raw `UPDATE {table} SET data=%s WHERE id=%s`
  + `COMMIT` on a driver connection of the same engine (its own row, alternating two
  blobs of the stored size so every UPDATE changes the row) + a raw cache set of the
  entry; it does not re-seal the session (no pickling, no new MAC), which any layer
  has to do. The untouched reference is a WSGI middleware that only sets an environ
  entry; sa_sessions also builds its lazy Session object and sets the context variable
  behind `get_current_session()`.
* **Noise.** On a shared 2-core virtual machine wall times move by tens of percent
  between runs, and a COMMIT costs whatever the disk's fsync costs at that moment;
  compare cases within one run, prefer the CPU-time figures for the work itself, and
  trust the counts, which are exact.
"""


def render(run: Run) -> str:
    results, info, settings = run.results, run.info, run.settings
    lines: list[str] = [
        "# Benchmarks: sa_sessions vs Beaker and Django",
        "",
        "Generated by `python bench/compare.py`"
        + (" --quick (timings NOT meaningful)" if run.quick else "")
        + f" on {info['date']}"
        + (f" in {run.elapsed:.0f} s" if run.elapsed == run.elapsed else "")
        + ". Do not edit by hand.",
        "",
        f"* Machine: {info['machine']}; load average {info['load']} at the start, "
        f"{run.end_load or 'unknown'} at the end",
        f"* Python {info['python']}; MariaDB {info['mariadb']}; memcached {info['memcached']} "
        f"({info.get('memcached_evictions', '?')} evictions during the run); "
        f"Redis {info.get('redis', 'unknown')}",
        f"* Libraries: {info['libraries']}",
        f"* Rounds: {settings.rounds}, each interleaving every case of a scenario in "
        f"{settings.passes} passes; about {settings.batch_seconds:g} s of requests per case "
        f"per round ({settings.min_requests} to {settings.max_requests} requests)",
        "",
        "![per-request overhead](benchmark.png)",
        "",
    ]
    _targets_section(lines, run)
    _shapes_section(lines, results)
    for title, names, what, cache in (
        ("memcached (and the peers without a cache)", MEMCACHED_LAYERS, "memcached", "memcached"),
        ("Redis", REDIS_LAYERS, "Redis", "redis"),
    ):
        if not any(n in cases for n in names[2:] for cases in results.values()):
            continue
        lines += [
            f"## Per-request overhead, {title} (µs, lower is better)",
            "",
            "Median over rounds of the mean time per request, minus the bare app; the bare "
            "column is its absolute time.",
            "",
        ]
        _overhead_tables(lines, results, names)
        _ratio_table(lines, results, cache)
        lines += ["", f"### Round trips per request, {title} (exact)"]
        _count_table(lines, results, names, what)
        lines.append("")
    _floors_section(lines, results)
    _curves_section(lines, run)
    _config_section(lines, run)
    _profile_section(lines, run.profile)
    checks = [
        c.counts.get("server_check") for cs in results.values() for c in cs.values() if c.counts
    ]
    server_check = (
        "client counts matched the servers' in every case"
        if all(checks)
        else "MISMATCH in some case (marked in the tables; see the JSON output)"
    )
    lines.append(
        METHOD.format(
            pre_ping=_pre_ping_text(run.config),
            passes=settings.passes,
            rounds=settings.rounds,
            memcached=info.get("memcached", "?"),
            redis=info.get("redis", "?"),
            table=peers.SA_TABLE,
            server_check=server_check,
        )
    )
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- kept sections


def kept_sections(path: Path) -> str:
    """The other scripts' sections of an existing report, or placeholders."""
    text = path.read_text() if path.exists() else ""
    out = []
    for name, title, script, command in KEPT_SECTIONS:
        start, end = markers(name)
        i, j = text.find(start), text.find(end)
        if i >= 0 and j > i:
            out.append(text[i : j + len(end)])
        else:
            out.append(
                f"{start}\n## {title}\n\nNot measured yet: `{command}` ({script}) writes this "
                f"section; `bench/compare.py` keeps it when it rewrites this file.\n{end}"
            )
    return "\n\n".join(out) + "\n"


def write(run: Run, md_path: Path) -> None:
    """Write benchmarks.md, keeping the sections other scripts wrote there."""
    kept = kept_sections(md_path)
    md_path.write_text(render(run) + "\n" + kept)
