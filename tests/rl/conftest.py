"""Fixtures of the rl tests: the toy model saved to disk with a reward file and prompts, and the tiny
random GPT-2 models the sampler and log-prob tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer
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


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def eos_model(tokenizer):
    """EOS is likely at each step, so sampled responses end at different lengths."""
    return tiny_gpt2(tokenizer, eos_boost=2.0)


@pytest.fixture(scope="module")
def peaky_model(tokenizer):
    """Larger initial weights: peaked next-token distributions, so top-k and top-p cut something."""
    return tiny_gpt2(tokenizer, initializer_range=0.2)


@pytest.fixture()
def two_threads():
    """Two intra-op threads for the test (what side-by-side work needs), the count restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
