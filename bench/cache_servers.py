"""Private memcached and redis-server processes on free loopback ports.

The one way the tests (``tests/conftest.py`` loads this file by path), the benchmarks
and the chaos run start, stop, kill, freeze, thaw and flush a cache server, so that
both kinds go through exactly the same faults.  Neither keeps anything on disk: a
killed server comes back empty, a frozen one (``SIGSTOP``) comes back with its old
data.

Self-contained (it imports nothing from its directory) so that it can be loaded by path.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from dataclasses import field


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memcached_binary() -> str | None:
    """``SA_SESSIONS_MEMCACHED_BIN``, else memcached on PATH, else None."""
    return os.environ.get("SA_SESSIONS_MEMCACHED_BIN") or shutil.which("memcached")


def redis_binary() -> str | None:
    """``SA_SESSIONS_REDIS_BIN``, else redis-server on PATH, else None."""
    return os.environ.get("SA_SESSIONS_REDIS_BIN") or shutil.which("redis-server")


def _command(port: int, command: bytes, *, timeout: float = 1.0) -> bytes:
    """Send one text-protocol command and return the first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


@dataclass
class ServerProcess:
    """A cache server; stop()/kill() then start() simulate outages, freeze()/thaw() a hang."""

    binary: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    #: For messages.
    kind = "cache server"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def arguments(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers (called until true, for up to 5 s after start)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Drop every item."""
        raise NotImplementedError

    def start(self) -> None:
        """Start it and wait (up to 5 s) until it answers."""
        self.proc = subprocess.Popen(
            [self.binary, *self.arguments()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if self.ready():
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"{self.kind} did not start on port {self.port}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None

    def kill(self) -> None:
        """A crash (SIGKILL): connections break mid-request and every item is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def freeze(self) -> None:
        """A hung server (SIGSTOP): connections stay open, nothing answers.

        The signal stops the server's threads asynchronously, so this waits until every
        thread reports state ``T``: a request sent right after it must not be served.
        """
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self._wait_for_state(stopped=True)

    def thaw(self) -> None:
        """Resume a frozen server (SIGCONT) and wait until every thread runs again."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self._wait_for_state(stopped=False)

    def _wait_for_state(self, *, stopped: bool) -> None:
        assert self.proc is not None
        tasks = f"/proc/{self.proc.pid}/task"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = []
            for tid in os.listdir(tasks):
                try:
                    with open(f"{tasks}/{tid}/stat") as stat:
                        # The state follows the command name, which is in parentheses.
                        states.append(stat.read().rsplit(")", 1)[1].split()[0])
                except FileNotFoundError:
                    continue  # a thread that ended between listdir and open
            if states and all((state == "T") == stopped for state in states):
                return
            time.sleep(0.001)
        raise RuntimeError(f"{self.kind} did not {'stop' if stopped else 'resume'} in 5 s")


@dataclass
class MemcachedProcess(ServerProcess):
    """A real memcached (64 MB, no UDP)."""

    kind = "memcached"

    def arguments(self) -> list[str]:
        args = ["-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        return args

    def ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
            return True

    def flush(self) -> None:
        """Drop every item (``flush_all``)."""
        reply = _command(self.port, b"flush_all")
        if reply != b"OK":
            raise RuntimeError(f"flush_all answered {reply!r}")


@dataclass
class RedisProcess(ServerProcess):
    """A real redis-server without persistence."""

    kind = "redis-server"

    @property
    def url(self) -> str:
        """The redis:// URL of database 0 on this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def arguments(self) -> list[str]:
        return [
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", tempfile.gettempdir(), "--daemonize", "no",
        ]  # fmt: skip

    def ready(self) -> bool:
        # A listening socket is not enough: Redis answers -LOADING until it is ready.
        return _command(self.port, b"PING", timeout=0.2) == b"+PONG"

    def flush(self) -> None:
        """Drop every key of every database (``FLUSHALL``)."""
        reply = _command(self.port, b"FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")
