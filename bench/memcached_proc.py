"""A private memcached process on a free loopback port, for the benchmarks and the tests.

Used by ``bench/peers.py``, ``bench/load.py`` and ``tests/conftest.py`` (which loads
this file by path), so there is one way to start, stop, kill and flush it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
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


@dataclass
class MemcachedProcess:
    """A real memcached (64 MB, no UDP); stop()/kill() then start() simulate outages."""

    binary: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait (up to 5 s) until it accepts connections."""
        args = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"memcached did not start on port {self.port}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None

    def kill(self) -> None:
        """A crash (SIGKILL): connections break mid-request."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def freeze(self) -> None:
        """A hung server (SIGSTOP): connections stay open, nothing answers.

        The signal stops the threads asynchronously, so this waits until every thread
        reports state ``T``: a request sent right after it must not be served.
        """
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self._wait_for_state(stopped=True)

    def thaw(self) -> None:
        """Resume a frozen server (SIGCONT) and wait until it runs again."""
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
                with open(f"{tasks}/{tid}/stat") as stat:
                    # The state follows the command name, which is in parentheses.
                    states.append(stat.read().rsplit(")", 1)[1].split()[0])
            if all((state == "T") == stopped for state in states):
                return
            time.sleep(0.001)
        raise RuntimeError(f"memcached did not {'stop' if stopped else 'resume'} in 5 s")

    def flush(self) -> None:
        """Drop every item (``flush_all``)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"flush_all\r\n")
            sock.recv(64)
