"""Exact counters: SQL statements, DB round trips, memcached and Redis round trips.

Each counter patches one client library for the duration of a counting pass (never
during the timed rounds), and the cache counts are cross-checked against the servers'
own statistics (memcached ``stats``, Redis ``INFO commandstats``):

* :class:`DriverCounter`: every MySQLdb round trip (statements, COMMIT, ROLLBACK,
  autocommit switches, pings), whatever library sent it;
* :class:`SqlCounter`: statements as each library reports them (SQLAlchemy events,
  Django's ``CaptureQueriesContext``);
* :class:`CacheCounter`: memcached commands in pymemcache and python-memcached;
* :class:`RedisCounter`: Redis commands in redis-py (one per round trip; a pipeline
  counts once).
"""

from __future__ import annotations

# mypy: disable-error-code="import-untyped"
import contextlib
import socket
from collections import Counter
from typing import Any

import peers


class DriverCounter:
    """Counts every MySQLdb round trip: statements, COMMIT, ROLLBACK, autocommit, ping.

    Installed on ``MySQLdb.connections.Connection`` (all three SQL layers use that
    driver), so it sees what SQLAlchemy, Beaker and Django send, including the
    transaction control that statement hooks never show.
    """

    _NAMES = ("query", "commit", "rollback", "autocommit", "ping")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._saved: dict[str, Any] = {}

    def install(self) -> None:
        from MySQLdb import _mysql
        from MySQLdb.connections import Connection

        base = _mysql.connection
        counts = self.counts
        original_query = Connection.query
        self._saved = {name: Connection.__dict__.get(name) for name in self._NAMES}

        def query(conn: Any, sql: Any) -> Any:
            counts["query"] += 1
            return original_query(conn, sql)

        def commit(conn: Any) -> Any:
            counts["commit"] += 1
            return base.commit(conn)

        def rollback(conn: Any) -> Any:
            counts["rollback"] += 1
            return base.rollback(conn)

        def autocommit(conn: Any, on: Any) -> None:
            on = bool(on)
            if conn.get_autocommit() != on:
                counts["autocommit"] += 1
                base.autocommit(conn, on)

        def ping(conn: Any, *args: Any) -> Any:
            counts["ping"] += 1
            return base.ping(conn, *args)

        for name, fn in zip(self._NAMES, (query, commit, rollback, autocommit, ping), strict=True):
            setattr(Connection, name, fn)

    def uninstall(self) -> None:
        from MySQLdb.connections import Connection

        for name, original in self._saved.items():
            if original is None:
                with contextlib.suppress(AttributeError):
                    delattr(Connection, name)
            else:
                setattr(Connection, name, original)
        self._saved = {}

    def total(self) -> int:
        return sum(self.counts.values())


class CacheCounter:
    """Counts memcached round trips in both client libraries, by command.

    pymemcache (sa_sessions, Django, the floors): every network exchange of
    ``pymemcache.client.base.Client`` goes through ``_fetch_cmd``, ``_store_cmd`` or
    ``_misc_cmd``.  python-memcached (Beaker): every command goes through
    ``_Host.send_cmd``/``send_cmds``.  Cross-checked against memcached's own
    ``stats`` counters (:func:`memcached_stats`).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._saved: list[tuple[Any, str, Any]] = []

    @staticmethod
    def _op(name: bytes | str) -> str:
        name = name.decode() if isinstance(name, bytes) else name
        name = name.split(" ", 1)[0].strip().lower()
        if name in ("get", "gets"):
            return "get"
        if name in ("set", "add", "replace", "cas", "append", "prepend"):
            return "set"
        if name == "delete":
            return "delete"
        return name

    def install(self) -> None:
        from pymemcache.client import base as pm

        counts, op = self.counts, self._op
        fetch, store, misc = pm.Client._fetch_cmd, pm.Client._store_cmd, pm.Client._misc_cmd

        def _fetch_cmd(client: Any, name: bytes, *args: Any, **kw: Any) -> Any:
            counts[op(name)] += 1
            return fetch(client, name, *args, **kw)

        def _store_cmd(client: Any, name: bytes, *args: Any, **kw: Any) -> Any:
            counts[op(name)] += 1
            return store(client, name, *args, **kw)

        def _misc_cmd(client: Any, cmds: Any, cmd_name: bytes, *args: Any, **kw: Any) -> Any:
            counts[op(cmd_name)] += 1
            return misc(client, cmds, cmd_name, *args, **kw)

        patches: list[tuple[Any, str, Any]] = [
            (pm.Client, "_fetch_cmd", _fetch_cmd),
            (pm.Client, "_store_cmd", _store_cmd),
            (pm.Client, "_misc_cmd", _misc_cmd),
        ]
        with contextlib.suppress(ImportError):
            import memcache

            send_cmd, send_cmds = memcache._Host.send_cmd, memcache._Host.send_cmds

            def py_send_cmd(host: Any, cmd: Any) -> Any:
                counts[op(cmd)] += 1
                return send_cmd(host, cmd)

            def py_send_cmds(host: Any, cmds: Any) -> Any:
                counts[op(cmds)] += 1
                return send_cmds(host, cmds)

            patches += [
                (memcache._Host, "send_cmd", py_send_cmd),
                (memcache._Host, "send_cmds", py_send_cmds),
            ]
        for owner, name, fn in patches:
            self._saved.append((owner, name, owner.__dict__[name]))
            setattr(owner, name, fn)

    def uninstall(self) -> None:
        for owner, name, original in self._saved:
            setattr(owner, name, original)
        self._saved = []

    def total(self) -> int:
        return sum(self.counts.values())


class SqlCounter:
    """Statements as the libraries report them: SQLAlchemy events, Django's capture."""

    def __init__(self, layer: peers.Layer) -> None:
        self.layer = layer
        self.count = 0
        self._engines: list[Any] = []
        self._capture: Any = None

    def _record(self, *args: Any) -> None:
        self.count += 1

    def install(self) -> None:
        from sqlalchemy import event

        for engine in self.layer.engines():
            event.listen(engine, "before_cursor_execute", self._record)
            self._engines.append(engine)
        if self.layer.django:
            from django.db import connection
            from django.test.utils import CaptureQueriesContext

            self._capture = CaptureQueriesContext(connection)
            self._capture.__enter__()

    def snapshot(self) -> int:
        django = 0
        if self._capture is not None:
            # Django 4.2+ also logs its transaction control (BEGIN = autocommit off,
            # COMMIT, ROLLBACK) as pseudo-queries; the driver counter sees those as round
            # trips, so only real statements are counted here, as with SQLAlchemy.
            django = sum(
                1
                for q in self._capture.captured_queries
                if q["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")
            )
        return self.count + django

    def uninstall(self) -> None:
        from sqlalchemy import event

        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._record)
        self._engines = []
        if self._capture is not None:
            self._capture.__exit__(None, None, None)
            self._capture = None


def memcached_stats(address: str) -> dict[str, int]:
    """memcached's own counters (independent of any client library)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    stats: dict[str, int] = {}
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            with contextlib.suppress(ValueError):
                stats[parts[1]] = int(parts[2])
    return stats


def memcached_ops(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Client-visible commands by kind, from two memcached ``stats`` snapshots."""

    def delta(*names: str) -> int:
        return sum(after.get(n, 0) - before.get(n, 0) for n in names)

    return {
        "get": delta("cmd_get"),
        "set": delta("cmd_set"),
        "delete": delta("delete_hits", "delete_misses"),
    }


# --------------------------------------------------------------------------- Redis

#: Redis commands by the kind of cache call they are (a compare-and-swap script is a write).
_REDIS_KINDS = {
    "get": "get",
    "mget": "get",
    "getex": "get",
    "set": "set",
    "setex": "set",
    "psetex": "set",
    "setnx": "set",
    "mset": "set",
    "evalsha": "set",
    "eval": "set",
    "del": "delete",
    "unlink": "delete",
}


class RedisCounter:
    """Counts redis-py round trips by command (``Redis.execute_command``; a pipeline's
    ``execute`` is one round trip, counted as ``pipeline``).

    ``raw`` keeps the command names; ``counts`` maps them to get/set/delete like the
    memcached counter (``EVALSHA``, sa_sessions' compare-and-swap script, is a set).
    ``script_writes`` counts the scripts that answered 1: the CAS script then ran one
    ``SET`` inside the server, which Redis' own command statistics include.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.raw: Counter[str] = Counter()
        self.script_writes = 0
        self._saved: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        try:
            from redis.client import Pipeline
            from redis.client import Redis
        except ImportError:
            return
        counter = self
        execute_command: Any = Redis.execute_command
        pipeline_execute: Any = Pipeline.execute

        def counted_execute_command(client: Any, *args: Any, **options: Any) -> Any:
            if isinstance(client, Pipeline):  # queued, sent by execute()
                return execute_command(client, *args, **options)
            name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            name = name.split(" ", 1)[0].lower()
            counter.raw[name] += 1
            counter.counts[_REDIS_KINDS.get(name, name)] += 1
            result = execute_command(client, *args, **options)
            if name in ("evalsha", "eval") and result == 1:
                counter.script_writes += 1
            return result

        def counted_pipeline_execute(pipe: Any, *args: Any, **kw: Any) -> Any:
            counter.raw["pipeline"] += 1
            counter.counts["pipeline"] += 1
            return pipeline_execute(pipe, *args, **kw)

        for owner, name, fn in (
            (Redis, "execute_command", counted_execute_command),
            (Pipeline, "execute", counted_pipeline_execute),
        ):
            self._saved.append((owner, name, owner.__dict__[name]))
            setattr(owner, name, fn)

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved = []


def redis_stats(url: str) -> dict[str, int]:
    """Calls per command from ``INFO commandstats`` (a connection of its own)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("commandstats")
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_").lower(): int(value["calls"])
        for name, value in info.items()
        if isinstance(value, dict)
    }


def redis_ops(before: dict[str, int], after: dict[str, int], script_writes: int) -> dict[str, int]:
    """Client-visible commands by kind, from two ``INFO commandstats`` snapshots.

    A script's inner commands are in the server's statistics too: each CAS script that
    stored its value ran one inner ``SET``, so ``script_writes`` of them are taken off.
    """

    def delta(*names: str) -> int:
        return sum(after.get(n, 0) - before.get(n, 0) for n in names)

    return {
        "get": delta("get", "mget", "getex"),
        "set": delta("set", "setex", "psetex", "setnx", "mset", "evalsha", "eval") - script_writes,
        "delete": delta("del", "unlink"),
    }
