"""The CLI in subprocesses: a PPO run killed with SIGKILL and resumed ends bitwise-identical to an
uninterrupted one (on CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlhfkit.cli", *args]


def ppo_args(files: dict[str, Path], output_dir: Path, steps: int) -> list[str]:
    return cli("ppo", "--model", str(files["model"]), "--reward-fn", f"{files['reward']}:score",
               "--prompts", str(files["prompts"]), "--output-dir", str(output_dir), "--steps", str(steps),
               "--report-to", "none", "--set", "num_prompts=8", "--set", "generation.max_new_tokens=2",
               "--set", "num_minibatches=2", "--set", "epochs=2", "--set", "optim.lr=1e-2",
               "--set", "run.save_every=1", "--set", "run.progress=false", "--set", "run.device=cpu",
               "--set", "run.threads=1")


def run_ok(args: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def final_tensors(output_dir: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(output_dir / "final" / "model.safetensors"))
    tensors.update({f"head.{k}": v for k, v in load_file(str(output_dir / "final" / "value_head.safetensors")).items()})
    return tensors


@pytest.mark.slow
def test_sigkilled_ppo_run_resumes_bitwise_identical(tmp_path, toy_files):
    steps = 10
    run_ok(ppo_args(toy_files, tmp_path / "straight", steps))
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(ppo_args(toy_files, killed_dir, steps), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed_dir / "checkpoint-3").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "final").exists(), "the run finished before it could be killed"
    result = run_ok(ppo_args(toy_files, killed_dir, steps) + ["--resume"])
    assert "resumed from" in result.stdout
    straight, resumed = final_tensors(tmp_path / "straight"), final_tensors(killed_dir)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    assert len(list(killed_dir.glob("checkpoint-*"))) == 2  # keep_checkpoints default
