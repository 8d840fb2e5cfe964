"""Large-session throughput over real HTTP: sa_sessions vs Beaker ext:database vs Django.

Each layer's app (the same Bottle app as ``bench/compare.py``, see ``bench/peers.py``)
is served in its own process by waitress (``threads=--threads``) on a free loopback
port.  A load generator in this process opens ``--clients`` keep-alive connections
(``http.client``, one thread each), every client with its OWN large session (so writes
never conflict), and drives ``GET /read`` then ``GET /write`` for ``--duration`` seconds
each.  It reports requests/s and p50/p99 latency, prints a Markdown table and puts it
in ``benchmarks.md`` (between markers, so ``compare.py`` keeps it when it rewrites the
file).

    python bench/http_throughput.py                      # 10 s per case
    python bench/http_throughput.py --duration 2 --out-dir /tmp/bench

Loopback only.  The load generator is Python too: on a 2-core machine it shares the
CPUs with the server, so the numbers compare layers with each other, not with nginx.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from cache_servers import free_port

ROOT = Path(__file__).resolve().parent.parent
HTTP_START = "<!-- http-throughput:start -->"
HTTP_END = "<!-- http-throughput:end -->"
LAYERS = ("bare", "sa_sessions", "beaker_db", "django_cached_db")
PATHS = (("large read", "/read"), ("large write", "/write"))


# --------------------------------------------------------------------------- server


def serve(layer_name: str, memcached: str, port: int, threads: int) -> None:
    """Child process: build one layer and serve it until terminated."""
    import logging

    import waitress

    warnings.simplefilter("ignore")
    logging.getLogger("waitress").setLevel(logging.ERROR)
    # Stop cleanly on terminate(), so the layer drops its tables on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    layers, services = peers.build_layers(memcached, (layer_name,))
    server = waitress.create_server(
        layers[layer_name].wsgi,
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


@dataclass
class Server:
    layer: str
    port: int
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_server(layer: str, memcached: str, threads: int) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            layer,
            "--memcached",
            memcached,
            "--port",
            str(port),
            "--threads",
            str(threads),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"server for {layer} did not start (exit {proc.wait()})")
    return Server(layer, port, proc)


# --------------------------------------------------------------------------- load


def get(conn: http.client.HTTPConnection, path: str, cookie: str | None) -> tuple[int, str]:
    headers = {"Cookie": cookie} if cookie else {}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("Set-Cookie") or ""


@dataclass
class Result:
    layer: str
    scenario: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ms

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drive(port: int, path: str, cookies: list[str | None], duration: float, result: Result) -> None:
    """``len(cookies)`` keep-alive clients hammering ``path`` for ``duration`` seconds."""
    start_gate = threading.Barrier(len(cookies) + 1)
    stop_at = [0.0]
    lock = threading.Lock()

    def client(cookie: str | None) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lat: list[float] = []
        errors = 0
        clock = time.perf_counter
        start_gate.wait()
        while True:
            t0 = clock()
            if t0 >= stop_at[0]:
                break
            try:
                status, _ = get(conn, path, cookie)
                if status != 200:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            lat.append((clock() - t0) * 1000)
        conn.close()
        with lock:
            result.latencies.extend(lat)
            result.requests += len(lat)
            result.errors += errors

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in cookies]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + duration
    began = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began


def run_layer(layer: str, memcached: str, args: argparse.Namespace, log: callable) -> list[Result]:  # type: ignore[valid-type]
    server = start_server(layer, memcached, args.threads)
    results = []
    try:
        cookies: list[str | None] = []
        for _ in range(args.clients):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            status, set_cookie = get(conn, "/setup/large", None)
            conn.close()
            if status != 200:
                raise RuntimeError(f"{layer}: setup returned {status}")
            cookies.append(peers.cookie_pair(set_cookie) if set_cookie else None)
        for title, path in PATHS:
            warm = Result(layer, title)
            drive(server.port, path, cookies, min(1.0, args.duration / 5), warm)
            result = Result(layer, title)
            drive(server.port, path, cookies, args.duration, result)
            log(
                f"  {layer:18s} {title:12s} {result.rps:8.0f} req/s  p50 "
                f"{result.percentile(0.5):6.2f} ms  p99 {result.percentile(0.99):6.2f} ms  "
                f"errors {result.errors}"
            )
            results.append(result)
    finally:
        server.stop()
    return results


# --------------------------------------------------------------------------- report


def render(results: list[Result], args: argparse.Namespace, started: str) -> str:
    lines = [
        HTTP_START,
        "## HTTP throughput, large session (bench/http_throughput.py)",
        "",
        f"Generated on {started}: waitress `threads={args.threads}` in its own process per "
        f"layer; {args.clients} keep-alive `http.client` connections from one Python "
        f"process, each with its own ~20 KB session; {args.duration:g} s per case after "
        f"a warm-up; loopback; {os.cpu_count()} CPUs shared by server, clients, MariaDB "
        "and memcached. Same configurations as the table above.",
        "",
        "| layer | scenario | requests/s | p50 (ms) | p99 (ms) | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {peers.LAYER_TITLES[r.layer]} | {r.scenario} | {r.rps:.0f} | "
            f"{r.percentile(0.5):.2f} | {r.percentile(0.99):.2f} | {r.errors} |"
        )
    by = {(r.layer, r.scenario): r for r in results}
    notes = []
    for title, _ in PATHS:
        mine = by.get(("sa_sessions", title))
        if mine is None or not mine.rps:
            continue
        for peer in ("beaker_db", "django_cached_db"):
            theirs = by.get((peer, title))
            if theirs is not None and theirs.rps:
                notes.append(
                    f"{title}: sa_sessions {mine.rps / theirs.rps:.2f}x the "
                    f"requests/s of {peers.LAYER_TITLES[peer]}"
                )
    if notes:
        lines += ["", *[f"* {n}" for n in notes]]
    lines.append(HTTP_END)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(HTTP_START), text.find(HTTP_END)
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len(HTTP_END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case")
    parser.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--memcached", help="host:port (default: start a private one)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.memcached, args.port, args.threads)
        return 0

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results: list[Result] = []
    with peers.memcached_server(args.memcached) as memcached:
        for layer in args.layers.split(","):
            results += run_layer(layer, memcached, args, log)
    section = render(results, args, started)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_section(args.out_dir / "benchmarks.md", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
