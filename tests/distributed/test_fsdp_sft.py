"""FSDP for ``rlhfkit sft`` on CPU: accelerate (1.16) turns an FSDP launch on CPU into plain data parallel
(MULTI_CPU, i.e. DDP), so sft refuses it instead of running unsharded while the user asked for sharding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sft.sft_helpers import make_records, write_jsonl

from helpers_models import save_tiny_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "accelerate"

pytestmark = pytest.mark.slow


def test_an_fsdp_launch_on_cpu_is_refused_not_run_as_ddp(tmp_path: Path) -> None:
    model, data = save_tiny_model(tmp_path / "model"), write_jsonl(tmp_path / "train.jsonl", make_records(8))
    # sync_module_states and RAM-efficient loading are GPU-only in accelerate: without these overrides
    # it stops earlier with its own error, before sft could say anything.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(EXAMPLES / "fsdp.yaml"),
              "--num_processes", "2", "--main_process_port", "0", "--mixed_precision", "no",
              "--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"]
    env = {**os.environ, "RLHFKIT_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launch, "-m", "rlhfkit.cli", "sft", "--model", str(model), "--data", str(data),
                           "-o", str(tmp_path / "out"), "--max-steps", "1", "--set", "progress=false",
                           "--report-to", "none"], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode != 0
    said = " ".join((done.stdout + done.stderr).split())
    assert "the accelerate config asks for FSDP but accelerate runs MULTI_CPU" in said, said[-3000:]
    assert not (tmp_path / "out" / "final").exists()
