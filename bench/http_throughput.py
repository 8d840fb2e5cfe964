"""Throughput over real HTTP, per session shape: sa_sessions vs Beaker ext:database vs Django.

Each layer's app (the same Bottle app as ``bench/compare.py``, see ``bench/peers.py``)
is served in its own process by waitress (``threads=--threads``) on a free loopback
port; all servers start at once and idle while another is driven.  A load generator in
this process opens ``--clients`` keep-alive connections (one thread each, a minimal
HTTP/1.1 client on a raw socket so that the client's own work stays small), every
client with its OWN session of the shape under test (so writes never conflict), and
a cookie jar that takes every ``Set-Cookie`` as a browser would.

For every shape of ``bench/shapes.py`` (small cookie session, one 20 KB value,
200 keys x 100 B, a cart of 50 dicts, 1 MB, the realistic ~20 KB mix) and both
scenarios (``GET /read`` reads one key; ``GET /write`` increments one), each layer is
driven for ``--duration`` seconds after a warm-up, in ``--rounds`` rounds whose layer
order alternates, so that a change of machine load hits every layer alike.  The bare
app (no sessions) runs once per scenario, as the ceiling.  Before measuring, every
client's session is read back: a layer that cannot store a shape is reported as n/a
with the reason, not measured.

The target: with waitress at 4 threads and 8 keep-alive clients, requests/s
>= 1.5x Django cached_db and >= 2x Beaker ext:database on every shape.  The Markdown
section (requests/s, p50/p99, ratios, met/not met per scenario and per shape) goes
into ``benchmarks.md`` in ``--out-dir`` between markers, so ``compare.py`` keeps it
when it rewrites the file; ``--json`` writes the numbers too.

    python bench/http_throughput.py                         # about 7 minutes
    python bench/http_throughput.py --quick --out-dir /tmp/bench   # seconds: a smoke run

Loopback only.  The load generator is Python too: on a 2-core machine it shares the
CPUs with the servers, MariaDB and memcached, so the numbers compare layers with each
other, not with nginx.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
import shapes
from cache_servers import free_port
from sections import write_section

ROOT = Path(__file__).resolve().parent.parent
MINE = "sa_sessions"
DJANGO = "django_cached_db"
BEAKER = "beaker_db"
BARE = "bare"
LAYERS = (BARE, MINE, BEAKER, DJANGO)
#: The target: sa_sessions' requests/s over each peer's, at least.
TARGET = {DJANGO: 1.5, BEAKER: 2.0}
#: Shapes in the order of the table (keys of ``shapes.SHAPES``).
SHAPES = ("small", "value20k", "keys200", "cart", "mb1", "large")
SCENARIOS = (("read", "/read"), ("write", "/write"))
#: What ``/read`` answers when the session holds ``user_id`` (``peers.make_app``).
READ_BODY = f"user {shapes.USER_ID}".encode()
MET, NOT_MET = "met", "not met"


# --------------------------------------------------------------------------- server


def serve(layer_name: str, memcached: str, port: int, threads: int) -> None:
    """Child process: build one layer and serve it until terminated."""
    import logging

    import waitress  # type: ignore[import-untyped]

    warnings.simplefilter("ignore")
    logging.getLogger("waitress").setLevel(logging.ERROR)
    # Tables of this process only, so that a concurrent compare.py run on the same
    # database does not drop them under us (Django's table name is fixed by Django).
    suffix = f"_http{os.getpid()}"
    for name in ("SA_TABLE", "BEAKER_TABLE"):
        if hasattr(peers, name):
            setattr(peers, name, getattr(peers, name) + suffix)
    # Stop cleanly on terminate(), so the layer drops its tables on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    layers, services = peers.build_layers(memcached, (layer_name,))
    server = waitress.create_server(
        guarded(layers[layer_name].wsgi),
        host="127.0.0.1",
        port=port,
        threads=threads,
        connection_limit=1000,
        channel_timeout=60,
    )
    print("READY", flush=True)
    try:
        server.run()
    finally:
        peers.close_layers(layers, services)


def guarded(app: Callable[..., Any]) -> Callable[..., Any]:
    """The app, answering an exception with a 500 whose body names it (one line)."""

    def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            return app(environ, start_response)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            start_response("500 Internal Server Error", headers, sys.exc_info())
            return [f"{type(exc).__name__}: {first}".encode()]

    return call


@dataclass
class Server:
    layer: str
    port: int
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def launch(layer: str, memcached: str, threads: int) -> Server:
    port = free_port()
    command = [sys.executable, __file__, "--serve", layer, "--memcached", memcached]
    command += ["--port", str(port), "--threads", str(threads)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    return Server(layer, port, proc)


def wait_ready(server: Server) -> None:
    assert server.proc.stdout is not None
    line = server.proc.stdout.readline()
    if line.strip() != "READY":
        server.proc.kill()
        raise RuntimeError(f"server for {server.layer} did not start (exit {server.proc.wait()})")


@contextmanager
def servers(layers: tuple[str, ...], memcached: str, threads: int) -> Iterator[dict[str, Server]]:
    """Every layer's server, started together (each sets up its own tables meanwhile)."""
    started: dict[str, Server] = {}
    try:
        for layer in layers:
            started[layer] = launch(layer, memcached, threads)
        for server in started.values():
            wait_ready(server)
        yield started
    finally:
        for server in started.values():
            server.stop()


# --------------------------------------------------------------------------- client


class HttpError(Exception):
    """The connection broke or the response could not be parsed."""


class Client:
    """One keep-alive HTTP/1.1 connection with a cookie jar, on a raw socket.

    Sends ``GET`` requests and reads ``Content-Length`` or chunked responses; every
    ``Set-Cookie`` updates the jar (``Max-Age=0`` removes the cookie), as a browser's.
    """

    def __init__(self, port: int, jar: dict[str, str] | None = None) -> None:
        self.port = port
        self.jar: dict[str, str] = dict(jar or {})
        self.sock: socket.socket | None = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def get(self, path: str) -> tuple[int, bytes]:
        """``(status, body)``; reconnects once if a kept-alive connection was closed."""
        for attempt in (1, 2):
            reused = self.sock is not None
            try:
                return self._get(path)
            except (OSError, HttpError):
                self.close()
                if attempt == 2 or not reused:
                    raise
        raise AssertionError("unreachable")

    def _get(self, path: str) -> tuple[int, bytes]:
        sock = self._connect()
        cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if cookie:
            request += f"Cookie: {cookie}\r\n"
        sock.sendall((request + "\r\n").encode("latin-1"))
        head = self._read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
            elif name == "set-cookie":
                self._take_cookie(value)
        if chunked:
            body = self._read_chunked()
        elif length is not None:
            body = self._read_exactly(length)
        else:
            raise HttpError("response without a length")
        if close:
            self.close()
        return status, body

    def _take_cookie(self, header: str) -> None:
        pair, _, attributes = header.partition(";")
        name, _, value = pair.strip().partition("=")
        gone = any(a.strip().lower().replace(" ", "") == "max-age=0" for a in attributes.split(";"))
        if gone or not value:
            self.jar.pop(name, None)
        else:
            self.jar[name] = value

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(262_144)
        if not data:
            raise HttpError("connection closed by the server")
        self.buffer += data

    def _read_until(self, marker: bytes) -> bytes:
        while True:
            at = self.buffer.find(marker)
            if at >= 0:
                head, self.buffer = self.buffer[:at], self.buffer[at + len(marker) :]
                return head
            self._fill()

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        body, self.buffer = self.buffer[:n], self.buffer[n:]
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")
                return b"".join(chunks)
            chunks.append(self._read_exactly(size))
            self._read_exactly(2)


# --------------------------------------------------------------------------- load


@dataclass
class Result:
    layer: str
    shape: str | None  # None: the bare app, whose work does not depend on the shape
    scenario: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ms
    na: str | None = None

    @property
    def measured(self) -> bool:
        return self.na is None and self.requests > 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def as_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "shape": self.shape,
            "scenario": self.scenario,
            "na": self.na,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(0.5), 3) if self.latencies else None,
            "p99_ms": round(self.percentile(0.99), 3) if self.latencies else None,
        }


def drive(port: int, path: str, jars: list[dict[str, str]], duration: float) -> Result:
    """``len(jars)`` keep-alive clients hammering ``path`` for ``duration`` seconds.

    Each client updates its own jar from the responses (the caller's list too), so the
    next run continues with the cookies the server last set.
    """
    result = Result("", None, "")
    start_gate = threading.Barrier(len(jars) + 1)
    stop_at = [0.0]
    lock = threading.Lock()

    def client(index: int) -> None:
        conn = Client(port, jars[index])
        lat: list[float] = []
        errors = 0
        clock = time.perf_counter
        start_gate.wait()
        while True:
            t0 = clock()
            if t0 >= stop_at[0]:
                break
            try:
                status, _ = conn.get(path)
            except (OSError, HttpError):
                errors += 1
                time.sleep(0.01)
                continue
            if status != 200:
                errors += 1
                continue
            lat.append((clock() - t0) * 1000)
        conn.close()
        jars[index] = conn.jar
        with lock:
            result.latencies.extend(lat)
            result.requests += len(lat)
            result.errors += errors

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(jars))]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + duration
    began = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    return result


def setup_sessions(port: int, shape: str, clients: int) -> tuple[list[dict[str, str]], str | None]:
    """One session of ``shape`` per client, each read back; ``(jars, why not)``."""
    jars: list[dict[str, str]] = []
    for _ in range(clients):
        conn = Client(port)
        try:
            status, body = conn.get(f"/setup/{shape}")
            if status != 200:
                detail = body.decode(errors="replace").strip()
                return [], f"storing it failed (HTTP {status}{': ' if detail else ''}{detail})"
            if not conn.jar:
                return [], "no session cookie came back"
            status, body = conn.get("/read")
            if status != 200 or body != READ_BODY:
                return [], f"the session was not stored (read back: HTTP {status} {body[:30]!r})"
        except (OSError, HttpError) as exc:
            return [], f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        jars.append(conn.jar)
    return jars, None


@dataclass
class Plan:
    duration: float
    warmup: float
    rounds: int
    clients: int


def measure_case(
    ports: dict[str, int],
    jars: dict[str, list[dict[str, str]]],
    shape: str | None,
    scenario: str,
    path: str,
    plan: Plan,
    log: Callable[[str], None],
) -> list[Result]:
    """One (shape, scenario) for every layer in ``jars``: warm-ups, then alternating rounds."""
    names = list(jars)
    totals = {name: Result(name, shape, scenario) for name in names}
    for name in names:
        drive(ports[name], path, jars[name], plan.warmup)
    for round_no in range(plan.rounds):
        order = names if round_no % 2 == 0 else names[::-1]
        for name in order:
            part = drive(ports[name], path, jars[name], plan.duration / plan.rounds)
            total = totals[name]
            total.requests += part.requests
            total.errors += part.errors
            total.seconds += part.seconds
            total.latencies += part.latencies
    for r in totals.values():
        log(
            f"  {shape or '-':9s} {scenario:5s} {peers.LAYER_TITLES[r.layer]:22s} "
            f"{r.rps:8.0f} req/s  p50 {r.percentile(0.5):7.2f} ms  "
            f"p99 {r.percentile(0.99):7.2f} ms  errors {r.errors}"
        )
    return list(totals.values())


def run(args: argparse.Namespace, log: Callable[[str], None]) -> list[Result]:
    layers = tuple(args.layers.split(","))
    plan = Plan(args.duration, args.warmup, args.rounds, args.clients)
    results: list[Result] = []
    with (
        peers.memcached_server(args.memcached) as memcached,
        servers(layers, memcached, args.threads) as running,
    ):
        ports = {name: server.port for name, server in running.items()}
        if BARE in ports:
            bare_jars: dict[str, list[dict[str, str]]] = {BARE: [{} for _ in range(args.clients)]}
            for scenario, path in SCENARIOS:
                results += measure_case(ports, bare_jars, None, scenario, path, plan, log)
        for shape in args.shapes.split(","):
            jars: dict[str, list[dict[str, str]]] = {}
            for name in (n for n in layers if n != BARE):
                made, why = setup_sessions(ports[name], shape, args.clients)
                if why is None:
                    jars[name] = made
                    continue
                log(f"  {shape:9s} {peers.LAYER_TITLES[name]}: n/a ({why})")
                for scenario, _ in SCENARIOS:
                    results.append(Result(name, shape, scenario, na=why))
            for scenario, path in SCENARIOS:
                if jars:
                    results += measure_case(ports, jars, shape, scenario, path, plan, log)
    return results


# --------------------------------------------------------------------------- report


def ratio(mine: Result | None, theirs: Result | None) -> float | None:
    if mine is None or theirs is None or not mine.measured or not theirs.measured:
        return None
    return mine.rps / theirs.rps if theirs.rps else None


def verdict(by: dict[tuple[str, str | None, str], Result], shape: str, scenario: str) -> str:
    """``met`` / ``not met`` for one shape and scenario, with what it could not compare."""
    mine = by.get((MINE, shape, scenario))
    if mine is None or not mine.measured:
        return f"{NOT_MET} (sa_sessions n/a)" if mine is not None else "not measured"
    ok, missing = True, []
    for peer, bound in TARGET.items():
        theirs = by.get((peer, shape, scenario))
        value = ratio(mine, theirs)
        if value is None:
            missing.append(peers.LAYER_TITLES[peer])
        elif value < bound:
            ok = False
    if len(missing) == len(TARGET):
        return "no peer to compare"
    text = MET if ok else NOT_MET
    if missing:
        text += f" ({' and '.join(missing)} n/a)"
    return text


def _cell(r: Result | None) -> tuple[str, str, str]:
    if r is None:
        return "", "", ""
    if not r.measured:
        return "n/a", "", ""
    errors = f" ({r.errors} errors)" if r.errors else ""
    return f"{r.rps:,.0f}{errors}", f"{r.percentile(0.5):.1f}", f"{r.percentile(0.99):.1f}"


def _ratio_cell(mine: Result | None, theirs: Result | None, bound: float) -> str:
    value = ratio(mine, theirs)
    if value is None:
        return "n/a"
    return f"{value:.2f}x" + ("" if value >= bound else f" (<{bound:g}x)")


def render(results: list[Result], args: argparse.Namespace, started: str, load: str) -> str:
    by = {(r.layer, r.shape, r.scenario): r for r in results}
    layers = tuple(args.layers.split(","))
    shape_keys = args.shapes.split(",")
    peer_titles = [peers.LAYER_TITLES[p] for p in (DJANGO, BEAKER) if p in layers]
    lines = [
        "## HTTP throughput per session shape (bench/http_throughput.py)",
        "",
        f"Generated on {started}: waitress `threads={args.threads}`, one server process per "
        f"layer; {args.clients} keep-alive connections from one Python process (raw-socket "
        f"HTTP/1.1 clients with a cookie jar), each with its own session of the shape; "
        f"{args.duration:g} s per case in {args.rounds} alternating round(s) after a "
        f"{args.warmup:g} s warm-up; loopback; {os.cpu_count()} CPUs shared by the servers, "
        f"the clients, MariaDB and memcached (load average {load}). Same layer "
        "configurations as the tables above.",
        "",
        "Target: requests/s >= "
        + " and ".join(f"{TARGET[p]:g}x {peers.LAYER_TITLES[p]}" for p in TARGET)
        + " on every shape (read and write). Latencies in ms.",
        "",
        "| shape | scenario | sa_sessions req/s | p50 | p99 | "
        + " | ".join(f"{t} req/s | p50 | p99" for t in peer_titles)
        + " | vs Django cached_db | vs Beaker ext:database | target |",
        "|---|---|" + "---:|" * (3 + 3 * len(peer_titles) + 2) + "---|",
    ]
    notes: list[str] = []
    for shape in shape_keys:
        title = shapes.SHAPES[shape].title
        for scenario, _ in SCENARIOS:
            mine = by.get((MINE, shape, scenario))
            cells = [title, scenario, *_cell(mine)]
            for peer in (DJANGO, BEAKER):
                if peer in layers:
                    cells += _cell(by.get((peer, shape, scenario)))
            for peer in (DJANGO, BEAKER):
                cells.append(_ratio_cell(mine, by.get((peer, shape, scenario)), TARGET[peer]))
            cells.append(verdict(by, shape, scenario))
            lines.append("| " + " | ".join(cells) + " |")
            for layer in layers:
                r = by.get((layer, shape, scenario))
                if r is not None and r.na and scenario == SCENARIOS[0][0]:
                    notes.append(f"{title}, {peers.LAYER_TITLES[layer]}: n/a, {r.na}")
    lines += ["", "| shape | read | write | target on this shape |", "|---|---|---|---|"]
    for shape in shape_keys:
        marks = [verdict(by, shape, scenario) for scenario, _ in SCENARIOS]
        overall = MET if all(m.startswith(MET) for m in marks) else NOT_MET
        lines.append(f"| {shapes.SHAPES[shape].title} | {marks[0]} | {marks[1]} | {overall} |")
    bare = [by.get((BARE, None, scenario)) for scenario, _ in SCENARIOS]
    if any(r is not None and r.measured for r in bare):
        ceiling = ", ".join(
            f"{r.scenario} {r.rps:,.0f} req/s (p50 {r.percentile(0.5):.1f} ms, "
            f"p99 {r.percentile(0.99):.1f} ms)"
            for r in bare
            if r is not None and r.measured
        )
        notes.append(f"The bare app (no sessions, the same routes) as the ceiling: {ceiling}.")
    shape_lines = [f"{shapes.SHAPES[s].title}: {shapes.SHAPES[s].description}" for s in shape_keys]
    notes.append("Shapes (bench/shapes.py): " + "; ".join(shape_lines) + ".")
    lines += ["", *[f"* {n}" for n in notes]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=7.0, help="seconds per case and layer")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per case")
    parser.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.3 s per case")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--memcached", help="host:port (default: start a private one)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.memcached, args.port, args.threads)
        return 0
    if args.quick:
        args.duration, args.warmup, args.rounds = 0.3, 0.1, 1
    unknown = set(args.shapes.split(",")) - set(shapes.SHAPES)
    if unknown or args.rounds < 1 or args.clients < 1:
        parser.error(f"unknown shapes {sorted(unknown)}" if unknown else "rounds/clients >= 1")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    results = run(args, log)
    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    log(f"done in {time.perf_counter() - t0:.0f} s")
    section = render(results, args, started, load)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_section(args.out_dir / "benchmarks.md", "http-throughput", section)
    if args.json:
        by = {(r.layer, r.shape, r.scenario): r for r in results}
        payload = {
            "settings": {
                "threads": args.threads,
                "clients": args.clients,
                "duration": args.duration,
                "rounds": args.rounds,
                "warmup": args.warmup,
            },
            "results": [r.as_json() for r in results],
            "verdicts": {
                shape: {scenario: verdict(by, shape, scenario) for scenario, _ in SCENARIOS}
                for shape in args.shapes.split(",")
            },
        }
        args.json.write_text(json.dumps(payload, indent=2))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
