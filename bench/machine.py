"""What a run was measured on: machine, load, servers and library versions."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
from datetime import datetime
from datetime import timezone
from importlib.metadata import version
from pathlib import Path

import peers

LIBRARIES = (
    "sa_sessions",
    "SQLAlchemy",
    "dogpile.cache",
    "pymemcache",
    "redis",
    "mysqlclient",
    "bottle",
    "Beaker",
    "Django",
    "python-memcached",
    "cryptography",
)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return str(len(os.sched_getaffinity(0)))


def _package(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "not installed"


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _mariadb() -> str:
    try:
        from sqlalchemy import create_engine
        from sqlalchemy import text

        engine = create_engine(peers.MYSQL_URL)
        with engine.connect() as conn:
            found = str(conn.execute(text("SELECT VERSION()")).scalar())
            flush = conn.execute(text("SELECT @@innodb_flush_log_at_trx_commit")).scalar()
        engine.dispose()
        return f"{found} (innodb_flush_log_at_trx_commit={flush})"
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


def _memcached(address: str) -> str:
    try:
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(b"version\r\n")
            return sock.recv(100).decode().split()[-1]
    except Exception:
        return "unknown"


def _redis(url: str | None) -> str:
    if url is None:
        return "not used"
    try:
        import redis

        client = redis.Redis.from_url(url)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception:
        return "unknown"


def machine_info(memcached: str, redis: str | None) -> dict[str, str]:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs (nproc {_nproc()}), {_cpu()}",
        "load": loadavg(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mariadb": _mariadb(),
        "memcached": _memcached(memcached),
        "redis": _redis(redis),
        "libraries": ", ".join(f"{n} {_package(n)}" for n in LIBRARIES),
    }
