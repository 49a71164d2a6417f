"""The server as a separate process: the benchmark's crash run (small) and dying with its parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "feedback_server.py"


@pytest.mark.slow
def test_small_crash_run_of_the_benchmark_loses_and_duplicates_nothing() -> None:
    """5 clients x 10 submissions, SIGKILL at 30% acknowledged, restart: every acknowledgement stored once."""
    run = subprocess.run([sys.executable, str(BENCH), "--clients", "5", "--per-client", "10", "--crash"],
                         capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["acknowledged"] == 50 == result["rows_stored"]
    assert result["acknowledged_but_missing"] == 0 and result["duplicates"] == 0
    assert result["stored_unacknowledged"] == 0
    assert result["acknowledged_at_kill"] >= 15 and result["restart_to_answer_s"] > 0
    assert result["errors"].get("connection", 0) > 0, "the clients did see the server go away"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return "\nState:\tZ" not in handle.read()
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to watch the server process")
def test_local_server_exits_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from rlhfkit.feedback.client import LocalServer
        server = LocalServer({str(tmp_path)!r}, admin_token="admin-token-parent-0123456789").start()
        print(server.process.pid, flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        assert _alive(server_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server_pid), "the server outlived the process that started it"
    finally:
        parent.kill()
        parent.wait(timeout=10)
