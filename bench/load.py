"""Multi-process load on the demo app, with one memcached node killed mid-run.

Starts ``--workers`` processes, each serving ``examples/bottle_app.py``'s ``create_app()``
with waitress on its own loopback port, all configured by the environment exactly as in
production (``SA_SESSIONS_DB_URL``, ``SA_SESSIONS_MEMCACHED`` = a pool of two private
memcached servers started here, and one fixed ``SA_SESSIONS_COOKIE_KEY``).  Then
``--clients`` threads, each with its own cookie jar, drive the app for ``--duration``
seconds, sending consecutive requests to the workers in turn (so every session is served
by every process):

* ``GET /counter`` (``session.increment("visits")``), sometimes three at once once the
  session lives server-side (the merge across processes must count all three);
* ``POST /notes`` (a new note; the first ones are big enough to push an anonymous session
  out of its cookie into a row); half the clients log in first (server-side from the start);
* ``GET /notes`` (a read: the note count must be exactly what this client wrote).

At ``--kill-at`` (a fraction of the duration) one memcached node is killed with SIGKILL;
with ``--restart`` it comes back, empty, on the same port at two thirds of the run.

Afterwards every session is read back, over HTTP (through the cache) and straight from its
row (bypassing it), and every write the client made must be there.  The report: requests
served, errors (must be 0), stale reads, writes verified (must be all), and p50/p99 latency
before, during (the first ``--settle`` seconds) and after the kill.

    python bench/load.py                                   # 30 s, 12 clients, 3 workers
    python bench/load.py --duration 60 --clients 30 --json /tmp/load.json

The database is ``SA_SESSIONS_DB_URL`` (default ``mysql+mysqldb://root@localhost/test``);
a private database ``sa_load_<pid>`` is created on that server and dropped at the end
(the demo's table names are fixed).  Loopback only.  Exit status 1 when any request
failed or any write is missing.
"""

from __future__ import annotations

import argparse
import html
import http.client
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_servers import MemcachedProcess
from cache_servers import free_port
from cache_servers import memcached_binary

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_URL = "mysql+mysqldb://root@localhost/test"
#: Benchmark-only signing key (>= 32 bytes); every worker must use the same one.
COOKIE_KEY = "load-bench-cookie-key-0123456789abcdef-0123456789"
COOKIE = "session"
PASSWORD = "demo"
BIG_NOTE = 600  # characters; about six of them push a session out of its cookie
SMALL_NOTE = 60
_ALPHABET = string.ascii_letters + string.digits + "-_"

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
BIG = re.compile(r'<p class="big">(\d+)</p>')
NOTE_COUNT = re.compile(r"<tr><th>Notes</th><td>(\d+) \(")
NOTE_ITEM = re.compile(r"<li>([^<]*)</li>")


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sa_demo_app", ROOT / "examples/bottle_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- services


@contextmanager
def private_database(url: str) -> Iterator[str]:
    """A database (MySQL/MariaDB) or schema (PostgreSQL) of this run only; SQLite as is."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() not in ("mysql", "mariadb", "postgresql"):
        yield url
        return
    name = f"sa_load_{os.getpid()}"
    probe = create_engine(url)
    if parsed.get_backend_name() == "postgresql":
        create, drop = f"CREATE SCHEMA {name}", f"DROP SCHEMA IF EXISTS {name} CASCADE"
        private = parsed.update_query_dict({"options": f"-csearch_path={name}"})
    else:
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name}"
        private = parsed.set(database=name)
    with probe.begin() as conn:
        conn.exec_driver_sql(drop)
        conn.exec_driver_sql(create)
    try:
        yield private.render_as_string(hide_password=False)
    finally:
        with probe.begin() as conn:
            conn.exec_driver_sql(drop)
        probe.dispose()


def serve(port: int, threads: int) -> None:
    """Child process: the demo app from the environment, served until terminated."""
    import logging

    import waitress  # type: ignore[import-untyped]

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("waitress").setLevel(logging.ERROR)
    app = load_demo().create_app()
    server = waitress.create_server(
        app, host="127.0.0.1", port=port, threads=threads, connection_limit=1000
    )
    print("READY", flush=True)
    server.run()


@dataclass
class Worker:
    port: int
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_workers(count: int, threads: int, env: dict[str, str], logs: Path) -> list[Worker]:
    workers = []
    for i in range(count):
        port = free_port()
        log = logs / f"worker{i}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(port), "--threads", str(threads)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
        workers.append(Worker(port, proc, log))
    for worker in workers:
        assert worker.proc.stdout is not None
        if worker.proc.stdout.readline().strip() != "READY":
            for w in workers:
                w.proc.kill()
            raise RuntimeError(f"a worker did not start; see {worker.log}")
    return workers


# --------------------------------------------------------------------------- clients


@dataclass
class Sample:
    at: float  # seconds since the load started
    ms: float
    op: str
    ok: bool


@dataclass
class Response:
    status: int
    body: str
    cookies: list[tuple[str, str | None]]  # (name, value or None when deleted)


class Client:
    """One browser: its own cookie jar; remembers every write it made."""

    def __init__(self, index: int, ports: list[int], began: float, rng: random.Random) -> None:
        self.index = index
        self.ports = ports
        self.began = began
        self.rng = rng
        self.jar: dict[str, str] = {}
        self.turn = index
        self.conns: dict[int, http.client.HTTPConnection] = {}
        self.csrf: str | None = None
        self.visits = 0  # increments acknowledged
        self.notes: list[str] = []  # notes acknowledged, in order
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.stale: list[str] = []
        self.lock = threading.Lock()
        self.username: str | None = None

    # ------------------------------------------------------------------ HTTP

    def _conn(self, port: int) -> http.client.HTTPConnection:
        conn = self.conns.get(port)
        if conn is None:
            conn = self.conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        return conn

    def _next_port(self) -> int:
        with self.lock:
            self.turn += 1
            return self.ports[self.turn % len(self.ports)]

    def request(
        self,
        method: str,
        path: str,
        op: str,
        form: dict[str, str] | None = None,
        *,
        port: int | None = None,
        conn: http.client.HTTPConnection | None = None,
        cookie: str | None = None,
    ) -> Response | None:
        """One request; None (and an error recorded) when it failed."""
        port = port or self._next_port()
        own = conn is None
        conn = conn or self._conn(port)
        headers = {"Cookie": cookie if cookie is not None else self.cookie_header()}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.monotonic()
        expected = 303 if method == "POST" else 200
        try:
            conn.request(method, path, body=body, headers=headers)
            raw = conn.getresponse()
            text = raw.read().decode("utf-8", "replace")
            status = raw.status
            cookies = [_parse_set_cookie(v) for k, v in raw.getheaders() if k == "Set-Cookie"]
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if own:
                self.conns.pop(port, None)
            self._sample(started, op, False)
            self.errors.append(f"{op}: {type(exc).__name__}: {exc}")
            return None
        ok = status == expected
        self._sample(started, op, ok)
        if not ok:
            self.errors.append(f"{op}: status {status}")
            return None
        return Response(status, text, cookies)

    def _sample(self, started: float, op: str, ok: bool) -> None:
        now = time.monotonic()
        with self.lock:
            self.samples.append(Sample(started - self.began, (now - started) * 1000, op, ok))

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.jar.items())

    def keep(self, response: Response) -> None:
        for name, value in response.cookies:
            if value is None:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value

    @property
    def server_side(self) -> bool:
        return self.jar.get(COOKIE, "").startswith("v1.i")

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()

    # ------------------------------------------------------------------ actions

    def refresh_csrf(self) -> bool:
        response = self.request("GET", "/notes", "read")
        if response is None:
            return False
        self.keep(response)
        match = CSRF.search(response.body)
        self.csrf = match.group(1) if match else None
        return self.check_notes(response.body)

    def login(self) -> None:
        if not self.refresh_csrf() or self.csrf is None:
            return
        self.username = f"load{os.getpid()}-{self.index}"
        form = {"username": self.username, "password": PASSWORD, "csrf_token": self.csrf}
        response = self.request("POST", "/login", "login", form)
        if response is not None:
            self.keep(response)
            self.refresh_csrf()  # a new token comes with the new session id
            home = self.request("GET", "/", "read")  # shows (and pops) the flash
            if home is not None:
                self.keep(home)

    def count(self) -> None:
        response = self.request("GET", "/counter", "counter")
        if response is None:
            return
        self.keep(response)
        self.visits += 1
        shown = _int(BIG, response.body)
        if shown != self.visits:
            self.stale.append(f"counter shows {shown}, expected {self.visits}")
            self.visits = max(self.visits, shown or 0)

    def burst(self, size: int = 3) -> None:
        """``size`` parallel increments of this server-side session (merged on save)."""
        cookie = self.cookie_header()
        ports = [self._next_port() for _ in range(size)]
        results: list[Response | None] = [None] * size

        def one(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", ports[i], timeout=30)
            try:
                results[i] = self.request(
                    "GET", "/counter", "burst", port=ports[i], conn=conn, cookie=cookie
                )
            finally:
                conn.close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for response in results:  # a browser keeps the cookie of the response it saw last
            if response is not None:
                if any(value is None for _, value in response.cookies):
                    self.errors.append("burst: a server-side session deleted its cookie")
                self.keep(response)
                self.visits += 1

    def add_note(self) -> None:
        if self.csrf is None and not self.refresh_csrf():
            return
        size = SMALL_NOTE if self.server_side else BIG_NOTE
        text = f"c{self.index}-{len(self.notes)}-" + "".join(self.rng.choices(_ALPHABET, k=size))
        form = {"csrf_token": self.csrf or "", "action": "add", "note": text}
        response = self.request("POST", "/notes", "note", form)
        if response is not None:
            self.keep(response)
            self.notes.append(text)

    def read(self) -> None:
        response = self.request("GET", "/notes", "read")
        if response is not None:
            self.keep(response)
            self.check_notes(response.body)

    def check_notes(self, body: str) -> bool:
        shown = _int(NOTE_COUNT, body)
        if shown != len(self.notes):
            self.stale.append(f"notes page shows {shown} notes, expected {len(self.notes)}")
        return True

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.40:
            self.count()
        elif roll < 0.50 and self.server_side:
            self.burst()
        elif roll < 0.70:
            self.add_note()
        else:
            self.read()


def _int(pattern: re.Pattern[str], body: str) -> int | None:
    match = pattern.search(body)
    return int(match.group(1)) if match else None


def _parse_set_cookie(line: str) -> tuple[str, str | None]:
    first, *attrs = [part.strip() for part in line.split(";")]
    name, _, value = first.partition("=")
    deleted = any(a.lower() == "max-age=0" for a in attrs)
    return name, None if deleted else value


# --------------------------------------------------------------------------- verification


@dataclass
class Verification:
    writes: int = 0
    verified: int = 0
    problems: list[str] = field(default_factory=list)


def verify(clients: list[Client], db_url: str, demo: ModuleType) -> Verification:
    """Every client's notes and visits, read over HTTP and straight from the row."""
    from sqlalchemy import create_engine

    from sa_sessions import SessionStore
    from sa_sessions.cookies import CookieCodec

    engine = create_engine(db_url)
    store = SessionStore(demo.WebSession, engine, secret_keys=COOKIE_KEY)  # no cache
    codec = CookieCodec(COOKIE_KEY, cookie_name=COOKIE)
    result = Verification()
    try:
        for c in clients:
            result.writes += c.visits + len(c.notes)
            found_notes: list[str] = []
            response = c.request("GET", "/notes", "verify")
            if response is not None:
                c.keep(response)
                found_notes = [html.unescape(n) for n in NOTE_ITEM.findall(response.body)]
            visits = None
            response = c.request("GET", "/counter", "verify")
            if response is not None:
                c.keep(response)
                visits = (_int(BIG, response.body) or 0) - 1  # this read counted too
            row_notes: list[str] | None = None
            row_visits = None
            state = codec.decode(c.jar.get(COOKIE, ""), now=datetime.now(timezone.utc))
            if state is not None and state.kind == "id":
                record = store.load(state.session_id)
                if record is None:
                    result.problems.append(f"client {c.index}: its row is gone")
                    continue
                row_notes = list(record.data.get("notes", []))
                row_visits = int(record.data.get("visits", 0)) - 1
            notes_ok = found_notes == c.notes and row_notes in (None, c.notes)
            visits_ok = visits == c.visits and row_visits in (None, c.visits)
            result.verified += (len(c.notes) if notes_ok else 0) + (c.visits if visits_ok else 0)
            if not notes_ok:
                result.problems.append(
                    f"client {c.index}: {len(c.notes)} notes written, {len(found_notes)} "
                    f"shown, {None if row_notes is None else len(row_notes)} in the row"
                )
            if not visits_ok:
                result.problems.append(
                    f"client {c.index}: {c.visits} visits counted, {visits} shown, "
                    f"{row_visits} in the row"
                )
    finally:
        engine.dispose()
    return result


# --------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def versions(db_url: str, memcached: str) -> dict[str, str]:
    import dogpile
    import pymemcache
    import sqlalchemy
    from sqlalchemy import create_engine

    found = {
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "dogpile.cache": dogpile.__version__,
        "pymemcache": pymemcache.__version__,
        "cpus": str(os.cpu_count()),
        "machine": f"{platform.system()} {platform.machine()}",
    }
    try:
        engine = create_engine(db_url)
        with engine.connect() as conn:
            found["database"] = str(conn.exec_driver_sql("SELECT version()").scalar())
        engine.dispose()
    except Exception as exc:  # informative only
        found["database"] = f"? ({type(exc).__name__})"
    try:
        out = subprocess.run([memcached, "-V"], capture_output=True, text=True, timeout=5)
        found["memcached"] = out.stdout.strip()
    except OSError:
        found["memcached"] = "?"
    return found


def phases(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    kill_at = args.duration * args.kill_at
    settle_end = min(args.duration, kill_at + args.settle)
    restart_at = args.duration * 2 / 3 if args.restart else args.duration
    found = [
        ("before kill", 0.0, kill_at),
        (f"during (first {args.settle:g}s)", kill_at, settle_end),
    ]
    if settle_end < restart_at:
        found.append(("after kill", settle_end, restart_at))
    if args.restart:
        found.append(("after restart", max(settle_end, restart_at), args.duration + 60))
    return found


def report(
    args: argparse.Namespace,
    clients: list[Client],
    check: Verification,
    info: dict[str, str],
    events: dict[str, float],
    logs: dict[str, int],
) -> dict[str, Any]:
    samples = [s for c in clients for s in c.samples if s.op != "verify"]
    table = []
    for name, begin, end in phases(args):
        chosen = [s.ms for s in samples if begin <= s.at < end]
        table.append(
            {
                "phase": name,
                "requests": len(chosen),
                "p50_ms": round(percentile(chosen, 0.50), 1),
                "p99_ms": round(percentile(chosen, 0.99), 1),
                "max_ms": round(max(chosen), 1) if chosen else None,
            }
        )
    ops: dict[str, int] = {}
    for s in samples:
        ops[s.op] = ops.get(s.op, 0) + 1
    return {
        "duration_s": args.duration,
        "clients": args.clients,
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "requests": len(samples),
        "requests_per_s": round(len(samples) / args.duration, 1),
        "operations": ops,
        "errors": sum(len(c.errors) for c in clients),
        "error_samples": [e for c in clients for e in c.errors][:10],
        "stale_reads": sum(len(c.stale) for c in clients),
        "stale_samples": [e for c in clients for e in c.stale][:10],
        "writes": check.writes,
        "writes_verified": check.verified,
        "verification_problems": check.problems[:10],
        "server_side_sessions": sum(1 for c in clients if c.server_side),
        "phases": table,
        "events_s": {k: round(v, 2) for k, v in events.items()},
        "worker_log_lines": logs,
        "versions": info,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['requests']} requests in {result['duration_s']:g} s "
        f"({result['requests_per_s']}/s), {result['clients']} clients, "
        f"{result['workers']} workers x {result['threads_per_worker']} threads",
        f"errors: {result['errors']}   stale reads: {result['stale_reads']}   "
        f"writes verified: {result['writes_verified']} / {result['writes']}   "
        f"server-side sessions: {result['server_side_sessions']}",
        f"operations: {result['operations']}",
        f"events (s): {result['events_s']}",
        "worker log lines: "
        + (", ".join(f"{n} x {m!r}" for m, n in result["worker_log_lines"].items()) or "none"),
        "",
        "| phase | requests | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["phases"]:
        lines.append(
            f"| {row['phase']} | {row['requests']} | {row['p50_ms']} | {row['p99_ms']} "
            f"| {row['max_ms']} |"
        )
    for key in ("error_samples", "stale_samples", "verification_problems"):
        if result[key]:
            lines.append(f"{key}: {result[key]}")
    lines.append(f"versions: {result['versions']}")
    return "\n".join(lines)


def count_log_lines(paths: list[Path]) -> dict[str, int]:
    """The workers' log lines (WARNING and worse), counted by message."""
    counts: dict[str, int] = {}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            level = line.split(" ", 1)[0]
            if level in ("WARNING", "ERROR", "CRITICAL", "Traceback"):
                counts[line] = counts.get(line, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    binary = memcached_binary()
    if binary is None:
        raise SystemExit("memcached binary not found (set SA_SESSIONS_MEMCACHED_BIN)")
    base_url = os.environ.get("SA_SESSIONS_DB_URL") or DEFAULT_DB_URL
    demo = load_demo()
    pool = [MemcachedProcess(binary), MemcachedProcess(binary)]
    workers: list[Worker] = []
    logs = Path(tempfile.mkdtemp(prefix="sa-load-"))
    with private_database(base_url) as db_url:
        try:
            for server in pool:
                server.start()
            from sqlalchemy import create_engine

            engine = create_engine(db_url)
            demo.Base.metadata.create_all(engine)  # once, before the workers race to it
            engine.dispose()
            env = dict(os.environ)
            env.update(
                SA_SESSIONS_DB_URL=db_url,
                SA_SESSIONS_MEMCACHED=",".join(s.address for s in pool),
                SA_SESSIONS_COOKIE_KEY=COOKIE_KEY,
            )
            workers = start_workers(args.workers, args.threads, env, logs)
            ports = [w.port for w in workers]
            clients, events = drive(args, ports, pool)
            check = verify(clients, db_url, demo)
            for c in clients:
                c.close()
            info = versions(base_url, binary)
        finally:
            for worker in workers:
                worker.stop()
            for server in pool:
                server.stop()
        lines = count_log_lines([w.log for w in workers])
        shutil.rmtree(logs, ignore_errors=True)
    return report(args, clients, check, info, events, lines)


def drive(args: argparse.Namespace, ports: list[int], pool: list[MemcachedProcess]) -> Any:
    began = time.monotonic()
    clients = [
        Client(i, ports, began, random.Random(args.seed * 1000 + i)) for i in range(args.clients)
    ]
    stop = threading.Event()
    events: dict[str, float] = {}

    def loop(c: Client) -> None:
        if c.index % 2 == 0:
            c.login()
        else:
            c.count()
        while not stop.is_set():
            c.step()

    threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    victim = pool[1]
    kill_at = args.duration * args.kill_at
    restart_at = args.duration * 2 / 3
    while (now := time.monotonic() - began) < args.duration:
        if "killed" not in events and now >= kill_at:
            victim.kill()
            events["killed"] = now
        if args.restart and "killed" in events and "restarted" not in events and now >= restart_at:
            victim.start()
            events["restarted"] = now
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join(60)
    events["stopped"] = time.monotonic() - began
    return clients, events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (30)")
    parser.add_argument("--clients", type=int, default=12, help="concurrent browsers (12)")
    parser.add_argument("--workers", type=int, default=3, help="app processes (3)")
    parser.add_argument("--threads", type=int, default=4, help="waitress threads each (4)")
    parser.add_argument("--kill-at", type=float, default=1 / 3, help="fraction of the run")
    parser.add_argument("--settle", type=float, default=5.0, help="'during' phase, seconds")
    parser.add_argument("--restart", action="store_true", help="restart the node at 2/3")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.threads)
        return 0
    result = run(args)
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = result["errors"] or result["writes_verified"] != result["writes"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
