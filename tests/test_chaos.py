"""Chaos run in CI: ``bench/chaos.py`` for ~20 s per cache backend, every fault kind once.

Two worker processes serve sessions from MariaDB through a pool of two cache nodes
(memcached, then Redis) while the nodes are killed, frozen, flapped and flushed.  No
request may fail, no response may show older data than the client was acknowledged, no
acknowledged value may be missing from the row, and no ended session may be served once
the cache is healthy or the staleness bound has passed.  The script runs in its own
process group, so a timeout here ends every worker and cache node it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import MYSQL_URL
from .conftest import make_engine
from .conftest import memcached_binary
from .conftest import missing_service
from .conftest import redis_binary

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "chaos.py"
#: bench/chaos.py: the installed sa_sessions lacks what the backend needs.
EXIT_UNSUPPORTED = 3


pytestmark = [pytest.mark.slow, pytest.mark.mysql]

BACKENDS = [
    pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


def _run_chaos(args: list[str], timeout: float) -> tuple[int, str]:
    """Run the script in its own process group; on timeout the whole group is killed."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SA_SESSIONS_DB_URL": MYSQL_URL},
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"bench/chaos.py did not finish in {timeout:g} s:\n{output}")
    return proc.returncode, output


def _explain(result: dict[str, Any], count: str, samples: str) -> str:
    """A failure message pytest prints in full: the count, faults and a few examples."""
    lines = [f"{count} = {result[count]} (faults: {result['fault_counts']})"]
    lines += [json.dumps(sample) for sample in result[samples][:5]]
    return "\n".join(lines)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chaos_run_keeps_every_guarantee(backend: str, tmp_path: Path) -> None:
    pytest.importorskip("waitress")
    if backend == "memcached":
        if memcached_binary() is None:
            missing_service("memcached binary")
    elif redis_binary() is None:
        missing_service("redis-server binary")
    make_engine("mysql").dispose()  # skips (or fails in CI) without MariaDB
    out = tmp_path / "chaos.json"
    status, output = _run_chaos(
        [
            "--backend",
            backend,
            "--nodes",
            "2",
            "--workers",
            "2",
            "--threads",
            "4",
            "--clients",
            "6",
            "--duration",
            "20",
            "--seed",
            "7",
            "--json",
            str(out),
        ],
        timeout=240,
    )
    assert status != EXIT_UNSUPPORTED, f"the library lacks what the run needs:\n{output}"
    assert status in (0, 1), output
    result: dict[str, Any] = json.loads(out.read_text())

    for count, samples in (
        ("errors", "error_samples"),
        ("stale_reads", "stale_samples"),
        ("unexpected_reads", "unexpected_samples"),
        ("lost_writes", "lost_samples"),
        ("resurrections", "resurrection_samples"),
    ):
        assert result[count] == 0, _explain(result, count, samples)
    assert status == 0, output

    # The run really exercised something.
    assert result["requests"] > 300, result["operations"]
    assert result["values_acknowledged"] > 100
    assert result["audits"] > 10
    assert all(result["sessions_ended"][how] > 0 for how in ("logout", "login", "revoke"))
    assert result["replays_strict"] > 0
    assert all(count >= 1 for count in result["fault_counts"].values()), result["faults"]
    assert all(fault["end_s"] is not None for fault in result["faults"])
