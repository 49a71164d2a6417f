"""Same seed, same run: the simulated panel takes turns and the server seeds its choices (feedback.reproducible)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.loop.runner import load_loop_config, run_rlhf_loop


def _run(tmp_path: Path, name: str, reproducible: bool) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    settings = tiny_loop_settings(folder, rounds=1, comparisons=8)
    settings["feedback"]["reproducible"] = reproducible
    run_rlhf_loop(load_loop_config(write_config(folder, settings)), quiet=True)
    return folder / "run" / "rounds" / "round-001"


def _answers(round_dir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (round_dir / "feedback.jsonl").read_text().splitlines()]
    return sorted((r["prompt"], r["chosen"], r["rejected"], round(r["weight"], 9)) for r in rows)


@pytest.mark.slow
def test_two_runs_with_one_seed_collect_the_same_feedback_and_end_the_same(tmp_path) -> None:
    first, second = _run(tmp_path, "a", True), _run(tmp_path, "b", True)
    assert _answers(first) == _answers(second)
    assert (first / "samples_after.jsonl").read_text() == (second / "samples_after.jsonl").read_text()
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (first, second)]
    for key in ("eval/gold_reward", "eval/proxy_reward", "eval/kl", "rm/accuracy"):
        assert metrics[0][key] == metrics[1][key], key
