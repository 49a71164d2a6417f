"""`rlhfkit evaluate`: base vs policy table with every gold aspect, on tiny random models."""

from __future__ import annotations

import json

from helpers_models import save_tiny_model
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.tasks.sentiment import ASPECTS


def _rows(policy: str, base: str) -> dict[str, dict]:
    args = ["evaluate", policy, "--base", base, "--task", "sentiment", "--prompts", "6", "--max-new-tokens", "6",
            "--sampler", "hf", "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("["):])
    return {row["metric"]: row for row in rows}


def test_policy_vs_base_rows_with_every_aspect(tmp_path) -> None:
    base = str(save_tiny_model(tmp_path / "base", seed=0))
    policy = str(save_tiny_model(tmp_path / "policy", seed=1))
    same, rows = _rows(base, base), _rows(policy, base)
    for aspect in ASPECTS:
        name = f"gold aspect: {aspect.name}"
        assert 0.0 <= same[name]["base"] <= 1.0 and same[name]["policy"] == same[name]["base"]
        assert rows[name]["base"] == same[name]["base"]  # the baseline column is the base model's own samples
    assert same["win rate vs base (gold)"]["policy"] == 0.5  # same samples: every prompt a tie
    assert same["KL to base (nats/sequence)"]["policy"] == 0.0
    assert rows["KL to base (nats/sequence)"]["policy"] > 0.0


def test_an_unknown_task_is_a_one_line_error(tmp_path) -> None:
    model = str(save_tiny_model(tmp_path / "m"))
    result = CliRunner().invoke(app, ["evaluate", model, "--base", model, "--task", "nope"], terminal_width=200)
    assert result.exit_code == 2 and "unknown task 'nope'" in result.output
