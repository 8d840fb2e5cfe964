"""Where sa_sessions spends its time: inclusive timers on named internals.

A pass after the timed rounds wraps named sa_sessions functions (and pymemcache,
SQLAlchemy, MySQLdb ones) with timers and reports the inclusive CPU and wall time
per request spent in each.  Names that no longer exist are skipped, so the table
follows the library as it changes.
"""

from __future__ import annotations

import time
from typing import Any

import peers
from measure import SCENARIO_BY_KEY
from measure import Case
from measure import Settings
from measure import prepare

#: One row: label, depth, calls per request, CPU µs, wall µs.
Row = tuple[str, int, float, float, float]

#: (module, attribute path, label, depth): sa_sessions internals timed in the breakdown
#: pass (inclusive; names that no longer exist are skipped).
BREAKDOWN = (
    ("sa_sessions.wsgi", "SessionMiddleware.__call__", "whole request in SessionMiddleware", 0),
    ("sa_sessions.cookies", "CookieCodec.decode", "read cookie: verify HMAC + parse", 1),
    ("sa_sessions.store", "SessionStore.find", "SessionStore.find (cache, else row)", 1),
    ("sa_sessions.store", "SessionStore.load", "SessionStore.load", 1),
    ("sa_sessions.cache.guard", "SessionCache.read", "cache read (entry tag checked)", 2),
    ("pymemcache.client.base", "Client._fetch_cmd", "pymemcache round trip + parsing", 3),
    ("sa_sessions.codec.blob", "BlobCodec.open_lazy", "BlobCodec.open_lazy (MAC, key index)", 2),
    ("sa_sessions.codec.inflate", "inflate", "inflate", 3),
    ("sa_sessions.codec.blob", "BlobCodec._unpickle", "restricted unpickle", 3),
    ("sa_sessions.codec.packed", "Packed.from_payload", "key index (format 3)", 3),
    ("sa_sessions.codec.blob", "Packed.value", "decode a value the app reads", 1),
    ("sa_sessions.codec.packed", "Packed.value", "decode a value the app reads", 1),
    ("sa_sessions.saving", "Saver.save", "save at start_response", 1),
    ("sa_sessions.saving", "Saver._data_cookie", "try the whole session as a cookie", 2),
    ("sa_sessions.cookies", "CookieCodec.encode", "CookieCodec.encode (JSON, deflate, sign)", 3),
    ("sa_sessions.store", "SessionStore.save", "SessionStore.save", 2),
    ("sa_sessions.codec.blob", "BlobCodec.seal", "BlobCodec.seal", 3),
    ("zlib", "compress", "zlib.compress", 4),
    ("sqlalchemy.engine.base", "Connection.execute", "SQLAlchemy execute (UPDATE)", 3),
    ("sqlalchemy.dialects.mysql.mysqldb", "MySQLDialect_mysqldb.do_ping", "pool pre-ping", 3),
    ("MySQLdb.connections", "Connection.commit", "COMMIT", 3),
    ("MySQLdb.connections", "Connection.rollback", "ROLLBACK (pool reset on return)", 3),
    ("sa_sessions.cache.guard", "SessionCache.publish", "cache publish (compare-and-swap)", 3),
)
BREAKDOWN_SCENARIOS = ("small_read", "small_write", "large_read", "large_write")


def _resolve(module: str, path: str) -> tuple[Any, str] | None:
    import importlib

    try:
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        getattr(owner, name)
    except (ImportError, AttributeError):
        return None
    return owner, name


def breakdown(layer: peers.Layer, settings: Settings) -> dict[str, list[Row]]:
    """Inclusive CPU/wall µs per request spent in named sa_sessions internals."""
    report: dict[str, list[Row]] = {}
    for key in BREAKDOWN_SCENARIOS:
        scenario = SCENARIO_BY_KEY[key]
        case = Case(layer.name, scenario, layer)
        prepare(case)
        assert case.op is not None
        for _ in range(settings.warmup):
            case.op()
        totals: dict[str, list[int]] = {}
        patched: list[tuple[Any, str, Any, bool]] = []
        seen: set[tuple[int, str]] = set()
        for module, path, label, _depth in BREAKDOWN:
            found = _resolve(module, path)
            if found is None or (id(found[0]), found[1]) in seen:
                continue  # gone, or the same function under another name
            owner, name = found
            seen.add((id(owner), name))
            original = getattr(owner, name)
            own = name in getattr(owner, "__dict__", {})
            acc = totals.setdefault(label, [0, 0, 0])

            def timed(*args: Any, _f: Any = original, _acc: list[int] = acc, **kw: Any) -> Any:
                c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                try:
                    return _f(*args, **kw)
                finally:
                    _acc[0] += time.thread_time_ns() - c0
                    _acc[1] += time.perf_counter_ns() - t0
                    _acc[2] += 1

            setattr(owner, name, timed)
            patched.append((owner, name, original if own else None, own))
        n = settings.breakdown_requests * (1 if "write" in key else 4)
        try:
            for _ in range(n):
                case.op()
        finally:
            for owner, name, original, own in reversed(patched):
                if own:
                    setattr(owner, name, original)
                else:
                    delattr(owner, name)
        rows: list[Row] = []
        for _module, _path, label, depth in BREAKDOWN:
            if label in totals and totals[label][2]:
                cpu_ns, wall_ns, calls = totals[label]
                rows.append((label, depth, calls / n, cpu_ns / n / 1000, wall_ns / n / 1000))
        report[key] = rows
    return report
