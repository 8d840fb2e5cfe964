"""Chaos run: check the session cache's coherence guarantees while its nodes misbehave.

Server-side sessions are one sealed blob in a SQL row, read through a cache (memcached or
Redis).  The cache is a copy, so every fault of it is a chance to serve an old copy.  This
script checks three promises from the outside, over HTTP, while cache nodes are killed,
frozen, flapped and flushed:

* read-your-writes: no response shows session data older than what the server last
  acknowledged to that client (an append that returned 200, or the data it returned);
* no lost write: every acknowledged value is in the row when the session ends or the run
  stops (a value computed from a stale cached copy must never overwrite a newer row);
* ended means ended: once a logout (``session.terminate()``), a login
  (``session.regenerate_id()``) or ``store.revoke()`` has returned, the old cookie serves
  nothing while the cache is healthy; under a cache fault at most for ``--max-staleness``
  seconds (plus one second of slack for scheduling), never after.

What runs: 2-3 private cache nodes on free loopback ports, a private table, ``--workers``
processes (this script in ``--serve`` mode), each a waitress server with ``--threads``
threads serving a tiny WSGI app behind ``SessionMiddleware(cookie_only_threshold=0)`` (so
every session lives server-side), and ``--clients`` client threads here.  Each client is
strictly sequential, has its own cookie, and sends consecutive requests to different
workers (round robin), so every session is read and written by every process:

* ``POST /append?v=...`` appends a unique value (read, append, assign) and returns the list;
* ``GET /show`` returns the list;
* ``POST /login`` calls ``regenerate_id()``, ``POST /logout`` calls ``terminate()`` and
  ``POST /revoke`` calls ``store.revoke()`` on the client's sessions; after each the old
  cookie is replayed at once, again within the staleness bound, and again after it.

Faults (each recorded with its start and end): kill (SIGKILL, restarted empty), freeze
(SIGSTOP for 4-8 times the 0.25 s client timeout, then SIGCONT: the node comes back with
its OLD data), flap (four quick freeze/thaw or kill/restart cycles) and flush (flush_all
or FLUSHALL).  They start after a short warm-up and stop at 80 % of ``--duration``, so the
end of the run is healthy; the first round of the chosen kinds always completes.
``--faults none`` is the control run: with a healthy cache every count must be 0.

What is counted (the JSON has the same names, plus a few samples of each):

* ``errors``: any failed request or non-2xx answer (the cache must never be fatal);
* ``stale_reads``: answers of the live session missing an acknowledged value, or showing
  values out of order (``stale_reads_healthy``: those with no fault within the bound);
* ``unexpected_reads``: answers showing a value that was never acknowledged;
* ``lost_writes``: acknowledged values missing from the row, read straight from the
  database (a ``SessionStore`` without a cache, the id taken from the signed cookie)
  whenever a session ends and at the end; a row out of order counts once more;
* ``resurrections``: an old cookie replayed after its session ended that still shows old
  values, while no fault was active or had ended within ``--max-staleness`` + 1 s, or
  later than that after the end (``tolerated_stale_replays``: the others, allowed).

Features the installed sa_sessions may lack are probed, not assumed: a missing
``redis_region`` makes the run "unsupported"; a ``SessionStore`` without ``max_staleness``
is listed as unsupported but the run goes on (the bound still classifies the replays).
Set ``PYTHONPATH`` to test another copy of the library; the workers inherit it.

    python bench/chaos.py --backend memcached --nodes 2 --duration 30
    python bench/chaos.py --backend redis --nodes 3 --clients 12 --json /tmp/chaos.json
    python bench/chaos.py --faults none --duration 20            # control run

The database is ``--db-url`` (default ``SA_SESSIONS_DB_URL``, else MariaDB on localhost);
a table ``sa_chaos_<pid>`` is created there and dropped at the end.  Loopback only.  Exit
status: 0 every guarantee held; 1 a request failed or a guarantee was violated (errors,
stale, unexpected or resurrected reads, lost writes); 2 the harness itself could not run;
3 this sa_sessions lacks what the backend needs (reported as "unsupported").
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import inspect
import json
import logging
import os
import platform
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol
from urllib.parse import parse_qs
from urllib.parse import quote

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# Last: an installed sa_sessions or PYTHONPATH (e.g. a copy of another revision) wins, and
# the checkout this script lives in is only the fallback.  The workers inherit the choice.
sys.path.append(str(ROOT))

from cache_servers import MemcachedProcess  # noqa: E402
from cache_servers import RedisProcess  # noqa: E402
from cache_servers import free_port  # noqa: E402
from cache_servers import memcached_binary  # noqa: E402
from cache_servers import redis_binary  # noqa: E402

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment
    from dogpile.cache.region import CacheRegion
    from sqlalchemy import Engine

DEFAULT_DB_URL = "mysql+mysqldb://root@localhost/test"
#: Benchmark-only key (cookies and blobs); every worker and the auditor must share it.
KEY = "chaos-bench-cookie-key-0123456789abcdef-0123456789"
COOKIE = "chaos"
#: Generous on purpose: the harness must never report a slow answer as a failure.
REQUEST_TIMEOUT = 10.0
#: The cache client timeouts the workers ask for (seconds).
CACHE_TIMEOUT = 0.25
FAULT_KINDS = ("kill", "freeze", "flap", "flush")
#: Samples kept per kind of problem (the counts are always complete).
MAX_SAMPLES = 20

EXIT_OK, EXIT_VIOLATED, EXIT_HARNESS, EXIT_UNSUPPORTED = 0, 1, 2, 3


class HarnessError(Exception):
    """The harness could not do its job (a process did not start, a node did not resume)."""


# --------------------------------------------------------------------------- features


@dataclass
class Features:
    """What the installed sa_sessions offers, found by inspection rather than by version.

    The library is being extended while this harness exists, so it probes instead of
    assuming: the same script runs against the code before and after the change.
    """

    region_factory: str | None
    region_kwargs: dict[str, float]
    max_staleness: bool
    unsupported: list[str] = field(default_factory=list)

    @property
    def backend_ok(self) -> bool:
        return self.region_factory is not None


def _explicit_parameters(func: Callable[..., Any]) -> set[str]:
    """Names ``func`` declares itself (``**kwargs`` catch-alls do not count)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _redis_factory() -> Callable[..., CacheRegion] | None:
    import sa_sessions

    factory = getattr(sa_sessions, "redis_region", None)
    if factory is None:
        factory = getattr(getattr(sa_sessions, "cache", None), "redis_region", None)
    return factory if callable(factory) else None


def _region_factory(backend: str) -> Callable[..., CacheRegion] | None:
    import sa_sessions

    return sa_sessions.memcached_region if backend == "memcached" else _redis_factory()


def detect_features(backend: str) -> Features:
    """Probe the region factory, its timeout keywords and ``SessionStore(max_staleness=)``."""
    import sa_sessions

    factory = _region_factory(backend)
    unsupported: list[str] = []
    kwargs: dict[str, float] = {}
    name: str | None = None
    if factory is None:
        unsupported.append(f"{backend}_region (sa_sessions has no {backend}_region)")
    else:
        name = f"sa_sessions.{factory.__name__}"
        declared = _explicit_parameters(factory)
        # The first spelling the factory declares wins; none declared means its default.
        for spellings in (
            ("timeout", "socket_timeout"),
            ("connect_timeout", "socket_connect_timeout"),
        ):
            for spelling in spellings:
                if spelling in declared:
                    kwargs[spelling] = CACHE_TIMEOUT
                    break
    staleness = "max_staleness" in _explicit_parameters(sa_sessions.SessionStore.__init__)
    if not staleness:
        unsupported.append("SessionStore(max_staleness=...)")
    return Features(name, kwargs, staleness, unsupported)


def build_region(backend: str, nodes: list[str], features: Features) -> CacheRegion:
    factory = _region_factory(backend)
    if factory is None:
        raise HarnessError(f"no region factory for {backend}")
    return factory(nodes, **features.region_kwargs)


def build_store(
    model: type[Any],
    engine: Engine,
    region: CacheRegion | None,
    *,
    max_staleness: float | None,
) -> Any:
    """The store every worker uses; ``region=None`` gives the auditor's database-only view."""
    from sa_sessions import SessionStore

    options: dict[str, Any] = {"columns": {"owner": _owner_of}}
    if region is not None and max_staleness is not None:
        options["max_staleness"] = timedelta(seconds=max_staleness)
    return SessionStore(model, engine, region=region, secret_keys=KEY, **options)


def _owner_of(data: Any) -> Any:
    """Derived column: which client a session belongs to, so it can be revoked by owner."""
    return data.get("owner")


def make_model(table: str) -> type[Any]:
    """The session model of this run: ``SessionModel`` plus an ``owner`` column.

    Declared in a function because the table name is only known at run time; the ORM
    names it uses are imported at module level, where SQLAlchemy resolves annotations.
    """
    from sa_sessions import SessionModel

    class Base(DeclarativeBase):
        pass

    class S(SessionModel, Base):
        __tablename__ = table
        owner: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)

    return S


# --------------------------------------------------------------------------- worker side


class ChaosApp:
    """The tiny WSGI app the workers serve; every answer is JSON with the worker's index."""

    def __init__(self, store: Any, model: type[Any], index: int) -> None:
        self.store = store
        self.model = model
        self.index = index

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        from sa_sessions import get_current_session

        session = get_current_session()
        route = (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
        query = parse_qs(environ.get("QUERY_STRING", ""))
        body: dict[str, Any]
        if route == ("POST", "/append"):
            # Read, append, assign: a write computed from whatever copy this request saw.
            notes = [*session.get("notes", []), query["v"][0]]
            session["notes"] = notes
            owner = query.get("owner", [None])[0]
            if owner is not None and session.get("owner") != owner:
                session["owner"] = owner
            body = {"notes": notes}
        elif route == ("GET", "/show"):
            body = {"notes": list(session.get("notes", []))}
        elif route == ("POST", "/login"):
            session.regenerate_id()
            session["marker"] = query.get("m", ["login"])[0]
            body = {"notes": list(session.get("notes", []))}
        elif route == ("POST", "/logout"):
            session.terminate()
            body = {"notes": []}
        elif route == ("POST", "/revoke"):
            owner = query["owner"][0]
            body = {"revoked": self.store.revoke(self.model.owner == owner)}
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        body["worker"] = self.index
        data = json.dumps(body).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]


def _exit_with_parent(parent: int) -> None:
    """Leave when the orchestrator is gone (even SIGKILLed): no orphan keeps a port."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def serve(args: argparse.Namespace) -> None:
    """Child process: one waitress server with the chaos app, until terminated."""
    import waitress  # type: ignore[import-untyped]
    from sqlalchemy import create_engine

    from sa_sessions import SessionMiddleware

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("waitress").setLevel(logging.ERROR)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    features = detect_features(args.backend)
    model = make_model(args.table)
    engine = create_engine(
        os.environ["SA_CHAOS_DB_URL"],
        pool_size=args.threads,
        max_overflow=args.threads,
        pool_pre_ping=True,
    )
    region = build_region(args.backend, args.serve_nodes.split(","), features)
    staleness = args.max_staleness if features.max_staleness else None
    store = build_store(model, engine, region, max_staleness=staleness)
    app = SessionMiddleware(
        ChaosApp(store, model, args.worker_index),
        store,
        cookie_key=KEY,
        cookie_name=COOKIE,
        cookie_only_threshold=0,
    )
    server = waitress.create_server(
        app, host="127.0.0.1", port=args.serve, threads=args.threads, connection_limit=1000
    )
    print("READY", flush=True)
    server.run()


# --------------------------------------------------------------------------- the ledger


@dataclass
class Fault:
    kind: str
    node: int
    start: float
    end: float | None = None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "start_s": round(self.start, 3),
            "end_s": None if self.end is None else round(self.end, 3),
            "detail": self.detail,
        }


@dataclass
class Tally:
    """A count and the first few examples of one kind of problem."""

    count: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: Run time of the latest one: shows whether a problem outlived the faults.
    last_t: float | None = None

    def add(self, sample: dict[str, Any], weight: int = 1) -> None:
        self.count += weight
        at = sample.get("t")
        if isinstance(at, float) and (self.last_t is None or at > self.last_t):
            self.last_t = at
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(sample)


class Ledger:
    """Everything the run observed, shared by the client threads and the fault thread."""

    def __init__(self, max_staleness: float) -> None:
        self.began = time.monotonic()
        #: A stale answer is tolerated only this long after the end of a session.
        self.bound = max_staleness + 1.0
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.operations: dict[str, int] = {}
        self.errors = Tally()
        self.stale = Tally()
        self.stale_values: set[str] = set()
        #: Stale reads with no fault active or ended within the bound: a healthy cache.
        self.stale_healthy = 0
        self.unexpected = Tally()
        self.lost = Tally()
        self.resurrections = Tally()
        self.tolerated = Tally()
        self.anomalies = Tally()
        self.audits = 0
        self.acknowledged = 0
        self.replays = 0
        self.replays_strict = 0
        self.ended: dict[str, int] = {"logout": 0, "login": 0, "revoke": 0}
        #: Set when the run is interrupted: clients stop at once instead of finishing.
        self.aborted = threading.Event()

    def now(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.began

    def count(self, op: str) -> None:
        with self.lock:
            self.operations[op] = self.operations.get(op, 0) + 1

    def note(self, tally: Tally, sample: dict[str, Any], weight: int = 1) -> None:
        with self.lock:
            tally.add(sample, weight)

    def begin_fault(self, kind: str, node: int) -> Fault:
        fault = Fault(kind, node, self.now())
        with self.lock:
            self.faults.append(fault)
        return fault

    def end_fault(self, fault: Fault, detail: str) -> None:
        with self.lock:
            fault.end = self.now()
            fault.detail = detail

    def fault_between(self, begin: float, end: float) -> Fault | None:
        """A fault active at some moment of ``[begin, end]``, if any."""
        with self.lock:
            for fault in self.faults:
                if fault.start <= end and (fault.end is None or fault.end >= begin):
                    return fault
        return None

    def fault_context(self, at: float) -> str:
        """Which fault is active at ``at``, or how long ago the last one ended."""
        with self.lock:
            faults = list(self.faults)
        active = [f for f in faults if f.start <= at and (f.end is None or f.end >= at)]
        if active:
            f = active[-1]
            return f"{f.kind} of node {f.node} active (since {at - f.start:.2f} s)"
        past = [f for f in faults if f.end is not None and f.end < at]
        if not past:
            return "no fault yet"
        f = max(past, key=lambda item: item.end or 0.0)
        return f"{f.kind} of node {f.node} ended {at - (f.end or 0.0):.2f} s before"


# --------------------------------------------------------------------------- clients


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    cookies: list[tuple[str, str | None]]  # (name, value or None when deleted)
    sent_at: float
    worker: int


@dataclass
class Ended:
    """A session that ended; its old cookie is replayed to prove it serves nothing."""

    how: str
    cookie: str  # "name=value" as sent in a Cookie header
    values: frozenset[str]
    sent_at: float  # when the ending request was sent
    ended_at: float  # when its response came back
    due: list[float]  # run times of the replays still to do


def _parse_set_cookie(line: str) -> tuple[str, str | None]:
    first, *attrs = [part.strip() for part in line.split(";")]
    name, _, value = first.partition("=")
    deleted = not value or any(a.lower() == "max-age=0" for a in attrs)
    return name, None if deleted else value


def _notes(reply: Reply) -> list[str]:
    notes = reply.body.get("notes")
    return [str(v) for v in notes] if isinstance(notes, list) else []


class Client:
    """One browser: its own cookie, strictly one request at a time."""

    def __init__(
        self,
        index: int,
        ports: list[int],
        ledger: Ledger,
        rng: random.Random,
        auditor: Callable[[str], list[str] | None],
    ) -> None:
        self.index = index
        self.ports = ports
        self.ledger = ledger
        self.rng = rng
        self.auditor = auditor
        self.owner = f"c{index}"
        self.turn = index
        self.serial = 0
        self.conns: dict[int, http.client.HTTPConnection] = {}
        self.jar: dict[str, str] = {}
        #: The session data as last acknowledged (the list the last append returned).
        self.expected: list[str] = []
        #: Every value acknowledged in the current session, in order.
        self.acked: list[str] = []
        self.acked_set: set[str] = set()
        self.pending: list[Ended] = []

    # ------------------------------------------------------------------ HTTP

    def request(self, method: str, path: str, op: str, cookie: str | None) -> Reply | None:
        """One request to the next worker; None (and an error recorded) when it failed."""
        self.turn += 1
        worker = self.turn % len(self.ports)
        port = self.ports[worker]
        conn = self.conns.get(port)
        if conn is None:
            conn = self.conns[port] = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=REQUEST_TIMEOUT
            )
        headers = {"Cookie": cookie} if cookie else {}
        sent_at = self.ledger.now()
        self.ledger.count(op)
        try:
            conn.request(method, path, headers=headers)
            raw = conn.getresponse()
            text = raw.read()
            cookies = [_parse_set_cookie(v) for k, v in raw.getheaders() if k == "Set-Cookie"]
            status = raw.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.conns.pop(port, None)
            self._error(op, worker, sent_at, f"{type(exc).__name__}: {exc}")
            return None
        if not 200 <= status < 300:
            self._error(op, worker, sent_at, f"status {status}: {text[:200]!r}")
            return None
        try:
            body = json.loads(text)
        except ValueError:
            self._error(op, worker, sent_at, f"not JSON: {text[:200]!r}")
            return None
        return Reply(status, body, cookies, sent_at, worker)

    def _error(self, op: str, worker: int, at: float, detail: str) -> None:
        self.ledger.note(
            self.ledger.errors,
            {"t": round(at, 3), "client": self.index, "op": op, "worker": worker, "error": detail},
        )

    def cookie(self) -> str | None:
        value = self.jar.get(COOKIE)
        return None if value is None else f"{COOKIE}={value}"

    def keep(self, reply: Reply) -> None:
        for name, value in reply.cookies:
            if value is None:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()

    # ------------------------------------------------------------------ checks

    def check(self, op: str, reply: Reply, got: list[str], expected: list[str]) -> None:
        """Stale: an acknowledged value is missing or out of order; unexpected: never acked."""
        got_set, expected_set = set(got), set(expected)
        missing = [v for v in expected if v not in got_set]
        misordered = [v for v in got if v in expected_set] != [v for v in expected if v in got_set]
        if missing or misordered:
            healthy = (
                self.ledger.fault_between(reply.sent_at - self.ledger.bound, reply.sent_at) is None
            )
            with self.ledger.lock:
                self.ledger.stale_values.update(missing)
                self.ledger.stale_healthy += int(healthy)
            self.ledger.note(
                self.ledger.stale,
                {
                    "t": round(reply.sent_at, 3),
                    "client": self.index,
                    "op": op,
                    "worker": reply.worker,
                    "missing": missing[:5],
                    "missing_count": len(missing),
                    "misordered": misordered,
                    "expected_len": len(expected),
                    "got_len": len(got),
                    "healthy": healthy,
                    "fault": self.ledger.fault_context(reply.sent_at),
                },
            )
        unexpected = [v for v in got if v not in self.acked_set]
        if unexpected:
            self.ledger.note(
                self.ledger.unexpected,
                {
                    "t": round(reply.sent_at, 3),
                    "client": self.index,
                    "op": op,
                    "worker": reply.worker,
                    "values": unexpected[:5],
                    "fault": self.ledger.fault_context(reply.sent_at),
                },
            )

    def audit(self, reason: str) -> None:
        """Compare the row (read straight from the database) with what was acknowledged."""
        value = self.jar.get(COOKIE)
        if value is None or not self.acked:
            return
        row = self.auditor(value)
        with self.ledger.lock:
            self.ledger.audits += 1
        if row is None:
            self.ledger.note(
                self.ledger.anomalies,
                {"t": round(self.ledger.now(), 3), "client": self.index, "what": "bad cookie"},
            )
            row = []
        row_set = set(row)
        missing = [v for v in self.acked if v not in row_set]
        misordered = [v for v in row if v in self.acked_set] != [
            v for v in self.acked if v in row_set
        ]
        if missing or misordered:
            self.ledger.note(
                self.ledger.lost,
                {
                    "t": round(self.ledger.now(), 3),
                    "client": self.index,
                    "when": reason,
                    "missing": missing[:5],
                    "missing_count": len(missing),
                    "misordered": misordered,
                    "acknowledged": len(self.acked),
                    "in_row": len(row),
                },
                weight=len(missing) + int(misordered),
            )

    # ------------------------------------------------------------------ actions

    def step(self) -> None:
        self.replay_due()
        if COOKIE not in self.jar or len(self.expected) < 2 or len(self.acked) < 2:
            self.append()
            return
        # Mostly writes and reads; one step in ten ends the session, so sessions grow to
        # about ten values and each end is followed by three replays.
        roll = self.rng.random()
        if roll < 0.55:
            self.append()
        elif roll < 0.90:
            self.show()
        elif roll < 0.94:
            self.login()
        elif roll < 0.98:
            self.logout()
        else:
            self.revoke()

    def append(self) -> None:
        value = f"c{self.index}-{self.serial}"
        self.serial += 1
        path = f"/append?v={value}&owner={quote(self.owner)}"
        reply = self.request("POST", path, "append", self.cookie())
        if reply is None:
            return
        self.keep(reply)
        self.acked.append(value)
        self.acked_set.add(value)
        with self.ledger.lock:
            self.ledger.acknowledged += 1
        got = _notes(reply)
        self.check("append", reply, got, [*self.expected, value])
        # What the server acknowledged is now the reference, even if it lost something
        # (that loss is counted here as stale and again by the audit as lost).
        self.expected = got

    def show(self) -> None:
        reply = self.request("GET", "/show", "show", self.cookie())
        if reply is not None:
            self.keep(reply)
            self.check("show", reply, _notes(reply), self.expected)

    def login(self) -> None:
        old = self.jar.get(COOKIE)
        reply = self.request("POST", f"/login?m=m{self.serial}", "login", self.cookie())
        if reply is None or old is None:
            return
        ended_at = self.ledger.now()
        self.keep(reply)
        self.check("login", reply, _notes(reply), self.expected)
        if self.jar.get(COOKIE) in (None, old):
            self._anomaly("login did not issue a new cookie")
        self.ended("login", old, reply.sent_at, ended_at)

    def logout(self) -> None:
        self.audit("logout")
        old = self.jar.get(COOKIE)
        reply = self.request("POST", "/logout", "logout", self.cookie())
        if reply is not None:
            self.keep(reply)
            if COOKIE in self.jar:
                self._anomaly("logout did not delete the cookie")
        if reply is not None and old is not None:
            self.ended("logout", old, reply.sent_at, self.ledger.now())
        self.forget()

    def revoke(self) -> None:
        self.audit("revoke")
        old = self.jar.get(COOKIE)
        reply = self.request("POST", f"/revoke?owner={quote(self.owner)}", "revoke", None)
        if reply is not None:
            if int(reply.body.get("revoked", 0)) < 1:
                self._anomaly("revoke matched no row")
            if old is not None:
                self.ended("revoke", old, reply.sent_at, self.ledger.now())
        self.forget()

    def forget(self) -> None:
        """The session is over: start the next one from nothing."""
        self.jar.pop(COOKIE, None)
        self.expected = []
        self.acked = []
        self.acked_set = set()

    def _anomaly(self, what: str) -> None:
        self.ledger.note(
            self.ledger.anomalies,
            {"t": round(self.ledger.now(), 3), "client": self.index, "what": what},
        )

    # ------------------------------------------------------------------ replays

    def ended(self, how: str, old: str, sent_at: float, ended_at: float) -> None:
        """Replay the old cookie now, once within the staleness bound, once after it."""
        with self.ledger.lock:
            self.ledger.ended[how] += 1
        if not self.acked:
            return  # nothing that could be served again
        bound = self.ledger.bound
        session = Ended(
            how,
            f"{COOKIE}={old}",
            frozenset(self.acked),
            sent_at,
            ended_at,
            [
                ended_at + self.rng.uniform(0.1, 0.8 * bound),
                ended_at + bound + self.rng.uniform(0.3, 1.2),
            ],
        )
        self.replay(session, write=False)
        self.pending.append(session)

    def replay_due(self) -> None:
        now = self.ledger.now()
        for session in list(self.pending):
            while session.due and session.due[0] <= now:
                session.due.pop(0)
                self.replay(session, write=self.rng.random() < 0.5)
            if not session.due:
                self.pending.remove(session)

    def drain(self) -> None:
        """Wait for and do every replay still scheduled (they are due within seconds)."""
        while self.pending:
            due = min(s.due[0] for s in self.pending)
            if self.ledger.aborted.wait(max(0.0, due - self.ledger.now())):
                return
            self.replay_due()

    def replay(self, session: Ended, *, write: bool) -> None:
        """Send the ended session's cookie; any of its old values in the answer is served."""
        if write:
            value = f"r{self.index}-{self.serial}"
            self.serial += 1
            reply = self.request("POST", f"/append?v={value}", "replay", session.cookie)
        else:
            reply = self.request("GET", "/show", "replay", session.cookie)
        if reply is None:
            return
        served = [v for v in _notes(reply) if v in session.values]
        late = reply.sent_at - session.ended_at > self.ledger.bound
        fault = self.ledger.fault_between(session.sent_at - self.ledger.bound, reply.sent_at)
        strict = late or fault is None
        with self.ledger.lock:
            self.ledger.replays += 1
            self.ledger.replays_strict += int(strict)
        if served:
            sample = {
                "t": round(reply.sent_at, 3),
                "client": self.index,
                "ended_by": session.how,
                "after_s": round(reply.sent_at - session.ended_at, 3),
                "op": "append" if write else "show",
                "worker": reply.worker,
                "served": served[:5],
                "served_count": len(served),
                "fault": self.ledger.fault_context(reply.sent_at),
            }
            self.ledger.note(self.ledger.resurrections if strict else self.ledger.tolerated, sample)


# --------------------------------------------------------------------------- processes


class CacheNode(Protocol):
    """What the fault thread needs of a node (MemcachedProcess and RedisProcess have it)."""

    proc: subprocess.Popen[bytes] | None

    def start(self) -> None: ...
    def kill(self) -> None: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def flush(self) -> None: ...


@dataclass
class Worker:
    index: int
    port: int
    proc: subprocess.Popen[str]
    log: Path


@dataclass
class Cluster:
    """Every process and table this run made, so one idempotent close() removes them all.

    Called from ``finally`` and again from ``atexit``; each part is torn down at most once
    and a failure in one part does not keep the others alive.
    """

    nodes: list[CacheNode] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    drop_table: Callable[[], None] | None = None
    closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for worker in self.workers:
            _end_process(worker.proc)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()  # SIGKILL also ends a node that is frozen (SIGSTOP)
        if self.drop_table is not None:
            try:
                self.drop_table()
            except Exception as exc:  # cleanup must go on; say what is left behind
                print(f"[chaos] could not drop the table: {exc}", file=sys.stderr)


def _end_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def start_workers(
    args: argparse.Namespace, nodes: list[str], db_url: str, table: str, logs: Path
) -> list[Worker]:
    """Start the worker processes and wait (up to 60 s) until each says READY."""
    env = {**os.environ, "SA_CHAOS_DB_URL": db_url}  # not on the command line (passwords)
    workers: list[Worker] = []
    for index in range(args.workers):
        port = free_port()
        log = logs / f"worker{index}.log"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            str(port),
            "--worker-index",
            str(index),
            "--backend",
            args.backend,
            "--threads",
            str(args.threads),
            "--table",
            args.table,
            "--max-staleness",
            str(args.max_staleness),
            "--serve-nodes",
            ",".join(nodes),
        ]
        with open(log, "wb") as err:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        workers.append(Worker(index, port, proc, log))
    return workers


def wait_ready(workers: list[Worker], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for worker in workers:
        stdout = worker.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = stdout.readline() if ready else ""
        if line.strip() != "READY":
            tail = worker.log.read_text(errors="replace")[-2000:]
            raise HarnessError(f"worker {worker.index} did not start:\n{tail}")


def summarize_logs(paths: Iterable[Path]) -> dict[str, Any]:
    """The workers' WARNING-and-worse lines, counted by message."""
    counts: dict[str, int] = {}
    levels = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0, "Traceback": 0}
    for path in paths:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                level = line.split(" ", 1)[0]
                if level in levels:
                    levels[level] += 1
                    counts[line] = counts.get(line, 0) + 1
    top = dict(sorted(counts.items(), key=lambda item: -item[1])[:10])
    return {"by_level": levels, "top": top}


# --------------------------------------------------------------------------- faults


class FaultInjector:
    """Runs the fault schedule on the cache nodes in its own thread.

    A node is always brought back (thawed or restarted) before the next fault, so at
    most one fault is active at a time and every recorded window has an end.
    """

    def __init__(
        self,
        nodes: list[CacheNode],
        ledger: Ledger,
        rng: random.Random,
        kinds: tuple[str, ...],
        start_at: float,
        stop_at: float,
    ) -> None:
        self.nodes = nodes
        self.kinds = kinds
        self.ledger = ledger
        self.rng = rng
        self.start_at = start_at
        self.stop_at = stop_at
        self.abort = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="faults", daemon=True)

    def _run(self) -> None:
        try:
            self._schedule()
        except BaseException as exc:  # reported by the main thread
            self.failure = exc

    def _schedule(self) -> None:
        if not self.kinds or self.abort.wait(max(0.0, self.start_at - self.ledger.now())):
            return
        first_round = True
        while not self.abort.is_set():
            kinds = list(self.kinds)
            self.rng.shuffle(kinds)
            for kind in kinds:
                if self.abort.is_set():
                    return
                if not first_round and self.ledger.now() >= self.stop_at:
                    return
                self.inject(kind, self.rng.randrange(len(self.nodes)))
                self.abort.wait(self.rng.uniform(1.0, 2.5))
            first_round = False

    def inject(self, kind: str, index: int) -> None:
        node = self.nodes[index]
        fault = self.ledger.begin_fault(kind, index)
        steps: list[str] = []
        frozen = False
        try:
            if kind == "kill":
                node.kill()
                down = self.rng.uniform(0.8, 1.5)
                self.abort.wait(down)
                node.start()
                steps.append(f"down {down:.2f} s, restarted empty")
            elif kind == "freeze":
                node.freeze()
                frozen = True
                held = self.rng.uniform(4 * CACHE_TIMEOUT, 8 * CACHE_TIMEOUT)
                self.abort.wait(held)
                node.thaw()
                frozen = False
                steps.append(f"stopped {held:.2f} s, resumed with its old data")
            elif kind == "flap":
                for _ in range(4):
                    if self.abort.is_set():
                        break
                    if self.rng.random() < 0.5:
                        node.freeze()
                        frozen = True
                        held = self.rng.uniform(0.3, 0.5)
                        self.abort.wait(held)
                        node.thaw()
                        frozen = False
                        steps.append(f"stop {held:.2f}")
                    else:
                        node.kill()
                        held = self.rng.uniform(0.2, 0.4)
                        self.abort.wait(held)
                        node.start()
                        steps.append(f"kill {held:.2f}")
                    self.abort.wait(self.rng.uniform(0.2, 0.4))
            elif kind == "flush":
                node.flush()
                steps.append("flushed")
            else:
                raise ValueError(f"unknown fault {kind!r}")
        finally:
            if frozen:
                node.thaw()
            if node.proc is None:
                node.start()
            self.ledger.end_fault(fault, "; ".join(steps))
        print(f"[chaos] {fault.start:6.2f}s {kind} node {index}: {fault.detail}", flush=True)


# --------------------------------------------------------------------------- the run


def versions(args: argparse.Namespace, binary: str) -> dict[str, str]:
    """Informative only: what ran (never fails the run)."""
    import dogpile
    import sqlalchemy

    import sa_sessions

    found = {
        "python": platform.python_version(),
        "sa_sessions": str(getattr(sa_sessions, "__version__", "?")),
        "sqlalchemy": sqlalchemy.__version__,
        "dogpile.cache": dogpile.__version__,
        "cpus": str(os.cpu_count()),
    }
    client = "pymemcache" if args.backend == "memcached" else "redis"
    try:
        found[client] = str(__import__(client).__version__)
    except Exception:
        found[client] = "?"
    flag = "-V" if args.backend == "memcached" else "--version"
    try:
        out = subprocess.run([binary, flag], capture_output=True, text=True, timeout=5)
        found["server"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"
    except OSError:
        found["server"] = "?"
    return found


def make_nodes(backend: str, count: int) -> tuple[list[CacheNode], list[str], str]:
    """Unstarted nodes, their addresses as the region factory wants them, and the binary."""
    if backend == "memcached":
        binary = memcached_binary()
        if binary is None:
            raise HarnessError("memcached binary not found (set SA_SESSIONS_MEMCACHED_BIN)")
        memcached = [MemcachedProcess(binary) for _ in range(count)]
        return list(memcached), [n.address for n in memcached], binary
    binary = redis_binary()
    if binary is None:
        raise HarnessError("redis-server binary not found (set SA_SESSIONS_REDIS_BIN)")
    redis = [RedisProcess(binary) for _ in range(count)]
    return list(redis), [n.url for n in redis], binary


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    features = detect_features(args.backend)
    base = {
        "backend": args.backend,
        "nodes": args.nodes,
        "workers": args.workers,
        "threads": args.threads,
        "clients": args.clients,
        "duration_s": args.duration,
        "seed": args.seed,
        "max_staleness_s": args.max_staleness,
        "fault_kinds": list(args.faults),
        "features": {
            "region_factory": features.region_factory,
            "region_kwargs": features.region_kwargs,
            "max_staleness": features.max_staleness,
        },
        "unsupported": features.unsupported,
    }
    if not features.backend_ok:
        return {**base, "supported": False, "passed": None}, EXIT_UNSUPPORTED

    from sqlalchemy import create_engine

    cluster = Cluster()
    atexit.register(cluster.close)
    logs: Path | None = None
    try:
        nodes, addresses, binary = make_nodes(args.backend, args.nodes)
        for node in nodes:
            cluster.nodes.append(node)
            node.start()
        engine = create_engine(args.db_url, pool_size=args.clients + 2, pool_pre_ping=True)
        model = make_model(args.table)

        def drop() -> None:
            model.metadata.drop_all(engine)
            engine.dispose()

        model.metadata.drop_all(engine)
        model.metadata.create_all(engine)
        cluster.drop_table = drop
        # Build the workers' store once here: a factory that rejects its arguments is
        # "unsupported", reported cleanly, not a crash in every worker.
        try:
            region = build_region(args.backend, addresses, features)
            build_store(
                model,
                engine,
                region,
                max_staleness=args.max_staleness if features.max_staleness else None,
            )
        except Exception as exc:
            features.unsupported.append(f"region or store rejected: {type(exc).__name__}: {exc}")
            return {**base, "supported": False, "passed": None}, EXIT_UNSUPPORTED
        logs = Path(tempfile.mkdtemp(prefix="sa-chaos-"))
        cluster.workers = start_workers(args, addresses, args.db_url, args.table, logs)
        wait_ready(cluster.workers)
        auditor_store = build_store(model, engine, None, max_staleness=None)
        codec = _cookie_codec()

        def auditor(cookie_value: str) -> list[str] | None:
            state = codec.decode(cookie_value, now=datetime.now(timezone.utc))
            if state is None or state.kind != "id":
                return None
            record = auditor_store.load(state.session_id)
            return [] if record is None else [str(v) for v in record.data.get("notes", [])]

        print(
            f"[chaos] {args.backend} x{args.nodes}, {args.workers} workers x {args.threads} "
            f"threads, {args.clients} clients, {args.duration:g} s, seed {args.seed}; "
            f"unsupported: {', '.join(features.unsupported) or 'nothing'}",
            flush=True,
        )
        ledger = Ledger(args.max_staleness)
        drive(args, cluster, nodes, ledger, auditor)
        elapsed = ledger.now()
        info = versions(args, binary)
    finally:
        cluster.close()
    result = report(base, ledger, elapsed, info, summarize_logs(w.log for w in cluster.workers))
    assert logs is not None
    if result["passed"]:
        shutil.rmtree(logs, ignore_errors=True)
    else:  # kept for a post-mortem
        result["worker_logs"] = str(logs)
    return result, EXIT_OK if result["passed"] else EXIT_VIOLATED


def _cookie_codec() -> Any:
    from sa_sessions.cookies import CookieCodec

    return CookieCodec(KEY, cookie_name=COOKIE)


def drive(
    args: argparse.Namespace,
    cluster: Cluster,
    nodes: list[CacheNode],
    ledger: Ledger,
    auditor: Callable[[str], list[str] | None],
) -> None:
    """Clients and faults for ``--duration`` seconds, then replays, final reads and audits."""
    ports = [w.port for w in cluster.workers]
    clients = [
        Client(i, ports, ledger, random.Random(args.seed * 1000 + i), auditor)
        for i in range(args.clients)
    ]
    injector = FaultInjector(
        nodes,
        ledger,
        random.Random(args.seed),
        args.faults,
        start_at=min(2.0, 0.1 * args.duration),
        stop_at=0.8 * args.duration,
    )
    stop = threading.Event()
    crashed: list[BaseException] = []

    def loop(client: Client) -> None:
        try:
            while not stop.is_set():
                client.step()
            client.drain()
            if not ledger.aborted.is_set():
                for _ in ports:  # one read per worker, the cache healthy again
                    client.show()
                client.audit("end")
        except BaseException as exc:  # a harness bug: reported, never hidden
            crashed.append(exc)
        finally:
            client.close()

    threads = [
        threading.Thread(target=loop, args=(c,), name=f"client{c.index}", daemon=True)
        for c in clients
    ]
    injector.thread.start()
    for thread in threads:
        thread.start()
    finished = False
    try:
        # Run for --duration, and until the first round of faults is complete.
        while ledger.now() < args.duration or injector.thread.is_alive():
            if injector.failure is not None or crashed:
                break
            time.sleep(0.05)
        finished = True
    finally:
        if not finished:  # interrupted (SIGTERM, Ctrl-C): stop now, the cleanup follows
            ledger.aborted.set()
        stop.set()
        injector.abort.set()
        # The node being faulted is restored before this returns: a node restarted
        # after the cleanup killed the others would outlive the run.
        injector.thread.join(30)
        for thread in threads:
            thread.join(4 * REQUEST_TIMEOUT + 2 * ledger.bound if finished else 1.0)
    if injector.failure is not None:
        raise HarnessError(f"fault injection failed: {injector.failure!r}")
    if crashed:
        raise HarnessError(f"a client thread crashed: {crashed[0]!r}")


def report(
    base: dict[str, Any],
    ledger: Ledger,
    elapsed: float,
    info: dict[str, str],
    logs: dict[str, Any],
) -> dict[str, Any]:
    fault_counts = {kind: 0 for kind in base["fault_kinds"]}
    for fault in ledger.faults:
        fault_counts[fault.kind] += 1
    result = {
        **base,
        "supported": True,
        "elapsed_s": round(elapsed, 2),
        "requests": sum(ledger.operations.values()),
        "operations": dict(sorted(ledger.operations.items())),
        "errors": ledger.errors.count,
        "error_samples": ledger.errors.samples,
        "stale_reads": ledger.stale.count,
        "stale_values": len(ledger.stale_values),
        "stale_reads_healthy": ledger.stale_healthy,
        "stale_last_s": ledger.stale.last_t,
        "stale_samples": ledger.stale.samples,
        "unexpected_reads": ledger.unexpected.count,
        "unexpected_samples": ledger.unexpected.samples,
        "lost_writes": ledger.lost.count,
        "lost_samples": ledger.lost.samples,
        "values_acknowledged": ledger.acknowledged,
        "audits": ledger.audits,
        "sessions_ended": ledger.ended,
        "replays": ledger.replays,
        "replays_strict": ledger.replays_strict,
        "resurrections": ledger.resurrections.count,
        "resurrection_samples": ledger.resurrections.samples,
        "resurrection_last_s": ledger.resurrections.last_t,
        "tolerated_stale_replays": ledger.tolerated.count,
        "tolerated_samples": ledger.tolerated.samples,
        "anomalies": ledger.anomalies.count,
        "anomaly_samples": ledger.anomalies.samples,
        "faults": [f.as_json() for f in ledger.faults],
        "fault_counts": fault_counts,
        "worker_log": logs,
        "versions": info,
    }
    result["passed"] = not (
        result["errors"]
        or result["stale_reads"]
        or result["unexpected_reads"]
        or result["lost_writes"]
        or result["resurrections"]
    )
    return result


def render(result: dict[str, Any]) -> str:
    head = (
        f"chaos: {result['backend']} x{result['nodes']} nodes, {result['workers']} workers x "
        f"{result['threads']} threads, {result['clients']} clients, {result['duration_s']:g} s, "
        f"seed {result['seed']}, max_staleness {result['max_staleness_s']:g} s"
    )
    unsupported = ", ".join(result["unsupported"]) or "nothing"
    if not result["supported"]:
        return f"{head}\nUNSUPPORTED: {unsupported}"
    rows = [
        (
            "requests",
            result["requests"],
            ", ".join(f"{k} {v}" for k, v in result["operations"].items()),
        ),
        ("errors", result["errors"], "must be 0: the cache is never fatal"),
        (
            "stale reads",
            result["stale_reads"],
            f"{result['stale_values']} distinct values, {result['stale_reads_healthy']} with "
            f"the cache healthy, last at {result['stale_last_s']} s",
        ),
        ("unexpected reads", result["unexpected_reads"], "values never acknowledged"),
        (
            "lost writes",
            result["lost_writes"],
            f"{result['audits']} row audits, {result['values_acknowledged']} values acked",
        ),
        (
            "resurrections",
            result["resurrections"],
            f"{result['replays']} replays, {result['replays_strict']} strict, "
            f"last at {result['resurrection_last_s']} s",
        ),
        (
            "tolerated replays",
            result["tolerated_stale_replays"],
            "old data within the bound, under a fault",
        ),
        ("anomalies", result["anomalies"], "protocol surprises (not failures)"),
        ("sessions ended", sum(result["sessions_ended"].values()), str(result["sessions_ended"])),
        ("faults", len(result["faults"]), str(result["fault_counts"])),
    ]
    lines = [
        head,
        f"unsupported: {unsupported}",
        "",
        "| metric | count | notes |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {count} | {notes} |" for name, count, notes in rows]
    lines.append("")
    lines.append("faults (s since start):")
    for f in result["faults"]:
        window = f"{f['start_s']:7.2f} - {f['end_s']:7.2f}"
        lines.append(f"  {window}  {f['kind']:6} node {f['node']}  {f['detail']}")
    for key in (
        "error_samples",
        "stale_samples",
        "unexpected_samples",
        "lost_samples",
        "resurrection_samples",
        "anomaly_samples",
    ):
        if result[key]:
            lines.append(f"{key} (first {min(5, len(result[key]))}):")
            lines += [f"  {json.dumps(sample)}" for sample in result[key][:5]]
    levels = result["worker_log"]["by_level"]
    lines.append(f"worker log: {levels}")
    for message, count in list(result["worker_log"]["top"].items())[:5]:
        lines.append(f"  {count} x {message}")
    if "worker_logs" in result:
        lines.append(f"worker logs kept in {result['worker_logs']}")
    lines.append(f"elapsed {result['elapsed_s']} s; versions: {result['versions']}")
    lines.append("PASSED" if result["passed"] else "FAILED")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=("memcached", "redis"), default="memcached")
    parser.add_argument("--nodes", type=int, choices=(2, 3), default=2, help="cache nodes (2)")
    parser.add_argument("--workers", type=int, default=3, help="app processes (3)")
    parser.add_argument("--threads", type=int, default=4, help="waitress threads each (4)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (8)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (30)")
    parser.add_argument(
        "--max-staleness",
        type=float,
        default=2.0,
        help="seconds an ended session may still be served under a cache fault (2)",
    )
    parser.add_argument(
        "--faults",
        type=_fault_kinds,
        default=FAULT_KINDS,
        help="comma-separated fault kinds, or 'none' for a control run "
        f"(default: {','.join(FAULT_KINDS)})",
    )
    parser.add_argument("--seed", type=int, default=1, help="client and fault schedule seed")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument(
        "--db-url",
        default=os.environ.get("SA_SESSIONS_DB_URL") or DEFAULT_DB_URL,
        help="SQLAlchemy URL (default: SA_SESSIONS_DB_URL, else local MariaDB)",
    )
    # Worker mode (internal).
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve-nodes", default="", help=argparse.SUPPRESS)
    parser.add_argument("--table", default=f"sa_chaos_{os.getpid()}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1 or args.clients < 1 or args.duration <= 0:
        parser.error("--workers, --threads, --clients and --duration must be positive")
    if args.max_staleness < 0:
        parser.error("--max-staleness must not be negative")
    return args


def _fault_kinds(text: str) -> tuple[str, ...]:
    """``--faults``: a subset of the kinds, in the given order; ``none`` for none."""
    if text.strip() == "none":
        return ()
    kinds = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {unknown}; choose from {', '.join(FAULT_KINDS)} or 'none'"
        )
    return kinds


def _raise_exit(signum: int, frame: Any) -> None:
    """SIGTERM ends the run through the normal ``finally`` cleanup."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        serve(args)
        return 0
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        result, status = run(args)
    except HarnessError as exc:
        print(f"[chaos] harness failure: {exc}", file=sys.stderr)
        return EXIT_HARNESS
    except Exception:  # e.g. no database: the harness could not run, nothing was measured
        traceback.print_exc()
        print("[chaos] harness failure (see the traceback above)", file=sys.stderr)
        return EXIT_HARNESS
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
