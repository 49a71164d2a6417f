"""bench/gpu.py cannot rot: its reduced ``--smoke`` mode runs on CPU in a subprocess (as on a GPU machine: from
the source tree, imports limited to the trainer path) and prints one parseable JSON line per section."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.py"
TRAINER_SECTIONS = ("grpo-124m", "ppo-124m", "grpo-0.5b", "ppo-0.5b", "grpo-rm-124m")
# optional dependencies of other commands (typer and rich come with transformers 5.x itself)
FORBIDDEN = ("tensorboard", "matplotlib", "scipy", "datasets", "fastapi", "sqlalchemy", "httpx")


def run_smoke(*extra: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """Run the smoke mode; returns the process and its JSON lines by section."""
    env = {**os.environ, "RLHFKIT_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", *extra], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert all(line.strip().startswith("{") for line in proc.stdout.splitlines() if line.strip()), proc.stdout
    return proc, {line["section"]: line for line in lines}


@pytest.mark.slow
def test_smoke_prints_every_section_as_json() -> None:
    proc, sections = run_smoke("--bandwidth-gbs", "50", "--arch-families", "gpt2,llama,qwen2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(sections) == ["env", "arch", "rollout-124m", "grpo-124m", "ppo-124m", "rollout-0.5b", "grpo-0.5b",
                              "ppo-0.5b", "grpo-rm-124m", "summary"]
    assert sections["env"]["mode"] == "smoke" and sections["env"]["bandwidth_gbs"] == 50
    arch = sections["arch"]
    assert arch["passed"] == 3 and arch["failed"] == 0, arch
    for family in arch["families"].values():
        assert family["ok"] and family["logprobs_finite"] and family["ppo_losses"] and family["grpo_losses"]
    for name in ("rollout-124m", "rollout-0.5b"):
        backends = sections[name]["backends"]
        assert {"hf", "cached"} <= set(backends)
        for result in backends.values():
            assert result["tokens_per_s"] > 0 and 0 < result["floor_fraction"] < 1, result
    for name in TRAINER_SECTIONS:
        line = sections[name]
        assert line["losses_finite"] and line["steps"] == 1 and not line["warmup_only"], line
        assert line["completions_per_step"] == 8 and line["new_tokens"] == 8
        for key in ("completions_per_s", "episodes_per_s", "seconds_per_step"):
            assert line[key] > 0
        phases = {"generation", "scoring", "reference", "values", "training", "other"}
        joint = set(line["phase_share"]) - phases  # passes timed together where they ran side by side (CPU)
        assert phases <= set(line["phase_share"]) and all(set(name.split("+")) <= phases for name in joint), line
        assert math.isclose(sum(line["phase_share"].values()), 1.0, abs_tol=0.01)
        assert line["phase_share"]["generation"] > 0 and line["phase_share"]["training"] > 0
        assert "peak_gpu_mem_gib" in line  # None on CPU
        rollout = line["rollout"]
        assert rollout["tokens_per_s"] > 0 and rollout["floor_tokens_per_s"] > rollout["tokens_per_s"]
    ppo_share = sections["ppo-124m"]["phase_share"]
    assert ppo_share["values"] + ppo_share.get("values+reference", 0.0) > 0
    assert sections["ppo-124m"]["optimizer_steps_per_step"] == 4
    assert sections["grpo-124m"]["optimizer_steps_per_step"] == 1
    summary = sections["summary"]
    assert summary["ok"] is True and set(summary["sections"]) == set(sections) - {"env", "summary"}


def test_full_mode_without_cuda_says_so() -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sections", "grpo"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 2
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["section"] == "env" and "CUDA is not available" in line["error"]


def test_trainer_path_needs_none_of_the_optional_dependencies() -> None:
    """What bench/gpu.py imports must load on a GPU machine that has only torch, transformers, accelerate, peft
    and pyyaml: block the other dependencies and import it."""
    code = (
        "import sys\n"
        f"BLOCK = set({list(FORBIDDEN)!r})\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCK: raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.argv = [{str(SCRIPT)!r}]\n"
        f"sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
        "import gpu\n"
        "gpu.function_reward(); gpu.make_tokenizer(64)\n"
        "import rlhfkit.rl.onpolicy, rlhfkit.rl.config, rlhfkit.rl.rollout, rlhfkit.rl.rewards\n"
        "import rlhfkit.models.loading, rlhfkit.models.value, rlhfkit.models.reward_model, arch_zoo\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
