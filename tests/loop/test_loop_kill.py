"""`rlhfkit loop` killed with SIGKILL mid-collection and mid-policy: the restart loses no feedback,
redoes no finished phase, resumes the trainer from its checkpoint, and finishes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.loop.state import load_state

COMPARISONS = 30
REDUNDANCY = 2
POLICY_STEPS = 4


def _start(config: Path, log: Path, resume: bool = False) -> subprocess.Popen:
    command = [sys.executable, "-m", "rlhfkit.cli", "loop", "--config", str(config), "--quiet"]
    return subprocess.Popen(command + (["--resume"] if resume else []), stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _answers(db: Path, polling: bool = False) -> dict[int, tuple[int, int, str]]:
    """annotation id -> (task id, annotator id, answer JSON) as committed in the feedback database.

    While polling a running loop, a database not created yet (or busy) reads as empty.
    """
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute("SELECT id, task_id, annotator_id, answer FROM annotations").fetchall()
    except sqlite3.OperationalError:
        if polling:
            return {}
        raise
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _wait_until(process: subprocess.Popen, ready, log: Path, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the loop exited (code {process.returncode}) before the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"kill point not reached within {timeout_s:g} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_mid_round_loses_no_feedback_and_finishes(tmp_path):
    settings = tiny_loop_settings(tmp_path, rounds=1, comparisons=COMPARISONS)
    settings["policy"]["ppo"]["run"] = {"steps": POLICY_STEPS, "save_every": 1}
    config = write_config(tmp_path, settings)
    run = Path(settings["run_dir"])
    db, log = run / "feedback" / "feedback.db", tmp_path / "loop.log"
    total = COMPARISONS * REDUNDANCY

    # 1. kill while the simulated panel is answering through the server
    process = _start(config, log)
    _wait_until(process, lambda: 3 <= len(_answers(db, polling=True)) < total, log)
    _kill(process)
    before = _answers(db)
    assert len(before) >= 3
    state = load_state(run)
    assert state.round == 1 and "campaign" in state.done and "collect" not in state.done
    candidates = run / "rounds" / "round-001" / "candidates.jsonl"
    stamp = (candidates.stat().st_mtime_ns, candidates.read_bytes())

    # 2. resume, and kill again once the policy trainer has written a checkpoint
    process = _start(config, log, resume=True)
    policy = run / "rounds" / "round-001" / "policy"
    _wait_until(process, lambda: (policy / "checkpoint-2").is_dir(), log)
    _kill(process)
    assert "collect" in load_state(run).done and "policy" not in load_state(run).done

    # 3. resume to the end
    process = _start(config, log, resume=True)
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]

    after = _answers(db)
    assert all(after.get(i) == answer for i, answer in before.items()), "an acknowledged answer changed or vanished"
    assert len(after) == total
    per_task: dict[int, list[int]] = {}
    for task_id, annotator_id, _ in after.values():
        per_task.setdefault(task_id, []).append(annotator_id)
    assert len(per_task) == COMPARISONS
    assert all(len(a) == REDUNDANCY and len(set(a)) == REDUNDANCY for a in per_task.values())
    assert (candidates.stat().st_mtime_ns, candidates.read_bytes()) == stamp, "finished phase 'generate' was redone"
    records = (run / "rounds" / "round-001" / "feedback.jsonl").read_text().splitlines()
    assert len(records) == COMPARISONS

    state = load_state(run)
    assert state.finished and state.global_step == POLICY_STEPS
    trainer_steps = [json.loads(line)["step"] for line in (policy / "metrics.jsonl").read_text().splitlines()]
    assert trainer_steps.count(1) == 1, "the policy trainer restarted from scratch instead of its checkpoint"
    assert set(trainer_steps) == set(range(1, POLICY_STEPS + 1)) and trainer_steps[-1] == POLICY_STEPS
    timeline = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in timeline if "reward/mean" in r] == list(range(1, POLICY_STEPS + 1))
    assert (run / "report.html").is_file() and log.read_text().count("resuming") == 2
