"""Fixtures of the rl tests: the toy model saved to disk with a reward file and prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
from toy_problem import toy_bundle

REWARD_FILE = """
def score(prompts, responses):
    table = {"": 0.1, "a": 0.9, "b": 0.2, "c": 0.5, "d": 0.3}
    return [table.get(r.replace(" ", "")[:1], 0.0) + 0.1 * len(r.replace(" ", "")) for r in responses]
"""


@pytest.fixture()
def toy_files(tmp_path: Path) -> dict[str, Path]:
    bundle = toy_bundle()
    model_dir = tmp_path / "model"
    bundle.policy.save_pretrained(model_dir)
    bundle.tokenizer.save_pretrained(model_dir)
    (tmp_path / "reward.py").write_text(REWARD_FILE)
    (tmp_path / "prompts.txt").write_text("a\nb\nc d\n")
    return {"model": model_dir, "reward": tmp_path / "reward.py", "prompts": tmp_path / "prompts.txt"}
