"""Smoke test of the multi-process load: ``bench/load.py`` for ~10 s with small numbers.

Two worker processes serve the demo app on MariaDB and a two-server memcached pool; one
node is killed a third of the way in.  No request may fail and every write the clients
made must be found again, over HTTP and in the rows.  The latency figures of such a short
run mean little and are not checked (docs/resilience.md has a long run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MYSQL_URL
from .conftest import make_engine
from .conftest import memcached_binary
from .conftest import missing_service

pytestmark = [pytest.mark.slow, pytest.mark.mysql, pytest.mark.memcached]

ROOT = Path(__file__).resolve().parent.parent


def test_short_load_with_a_memcached_node_killed(tmp_path: Path) -> None:
    pytest.importorskip("waitress")
    if memcached_binary() is None:
        missing_service("memcached binary")
    make_engine("mysql").dispose()  # skips (or fails in CI) without MariaDB
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--duration",
            "8",
            "--clients",
            "6",
            "--workers",
            "2",
            "--threads",
            "3",
            "--settle",
            "3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "SA_SESSIONS_DB_URL": MYSQL_URL},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["errors"] == 0, result["error_samples"]
    assert result["writes"] > 100
    assert result["writes_verified"] == result["writes"], result["verification_problems"]
    assert result["stale_reads"] == 0, result["stale_samples"]
    assert "killed" in result["events_s"]
    ops = result["operations"]
    assert ops["counter"] and ops["note"] and ops["read"] and ops["burst"]
    phases = {row["phase"]: row["requests"] for row in result["phases"]}
    assert phases["before kill"] > 0 and phases["during (first 3s)"] > 0
    assert result["server_side_sessions"] >= 3  # the logged-in half at least
