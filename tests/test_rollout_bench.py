"""bench/rollout.py cannot rot: a tiny run prints one JSON line per (sampler, scenario) and a summary per scenario,
with the bf16 samplers' ratio over HF generate in the same precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_run_prints_every_sampler_and_the_same_precision_ratio() -> None:
    samplers = ["hf", "cached@bf16", "hf@bf16"]
    command = [sys.executable, str(ROOT / "bench" / "rollout.py"), "--threads", "1", "--batch", "2", "--new-tokens", "2",
               "--vocab", "512", "--embd", "32", "--layers", "1", "--repeats", "1", "--device", "cpu",
               "--samplers", ",".join(samplers)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = [line for line in lines if line["bench"] == "rollout"]
    summaries = {line["scenario"]: line for line in lines if line["bench"] == "rollout-summary"}
    assert {(row["sampler"], row["scenario"]) for row in rows} == {(s, c) for s in samplers for c in summaries}
    assert set(summaries) == {"sample", "greedy", "sample-varied-length"}
    for summary in summaries.values():
        ratios = summary["speedup_vs_hf"]
        assert set(ratios) == {"cached@bf16", "hf@bf16"}
        assert ratios["cached@bf16"]["warm_cpu_same_dtype"] > 0 and "warm_cpu_same_dtype" not in ratios["hf@bf16"]


def test_llama_family_arch_runs_every_scenario_with_the_generic_sampler_beside() -> None:
    """``--arch qwen3``: a Qwen3 model, EOS made likely through an LM-head bias for the varied-length scenario."""
    command = [sys.executable, str(ROOT / "bench" / "rollout.py"), "--threads", "1", "--batch", "2", "--new-tokens", "2",
               "--vocab", "512", "--embd", "64", "--layers", "1", "--repeats", "1", "--device", "cpu", "--arch", "qwen3",
               "--samplers", "hf,cached,cached:generic"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"bench": "rollout"')]
    assert {(row["sampler"], row["scenario"]) for row in rows} == {
        (s, c) for s in ("hf", "cached", "cached:generic") for c in ("sample", "greedy", "sample-varied-length")}
    assert {row["arch"] for row in rows} == {"qwen3"}

