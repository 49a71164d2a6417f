"""Bootstrap weights by prompt (a cluster bootstrap) for ensemble members, and its config option."""

from __future__ import annotations

import random

import pytest
import torch
from helpers_models import save_tiny_model

from rlhfkit.config import ConfigError, load_config, parse_overrides
from rlhfkit.data.preference_io import write_jsonl
from rlhfkit.reward import pipeline
from rlhfkit.reward.batching import EncodedRecord, assign_bootstrap_weights
from rlhfkit.reward.config import RewardTrainConfig
from rlhfkit.reward.pipeline import train_reward_model

from .synthetic import comparisons


def _records(n: int) -> list[EncodedRecord]:
    return [EncodedRecord("pairwise", [[1, 2], [1, 3]], index=i) for i in range(n)]


def test_per_record_draws_are_the_seeded_poisson_rows():
    records = _records(5)
    assign_bootstrap_weights(records, 3, seed=4)
    expected = torch.poisson(torch.ones(5, 3), generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.tensor([r.head_weights for r in records]), expected)


def test_records_of_one_prompt_share_their_prompts_draw():
    records = _records(5)
    assign_bootstrap_weights(records, 4, seed=1, groups=["q1", "q2", "q1", "q3", "q2"])
    expected = torch.poisson(torch.ones(3, 4), generator=torch.Generator().manual_seed(1)).tolist()
    rows = [list(r.head_weights) for r in records]
    assert rows == [expected[0], expected[1], expected[0], expected[2], expected[1]]


def test_groups_must_match_the_records():
    with pytest.raises(ValueError, match="2 keys for 3 records"):
        assign_bootstrap_weights(_records(3), 2, seed=0, groups=["a", "b"])


def test_bootstrap_unit_is_validated():
    config = load_config(RewardTrainConfig, None, parse_overrides(["bootstrap_unit=prompt"]))
    assert config.bootstrap_unit == "prompt"
    with pytest.raises(ConfigError, match="bootstrap_unit: 'question' is not one of"):
        load_config(RewardTrainConfig, None, parse_overrides(["bootstrap_unit=question"]))


def test_train_rm_draws_one_weight_per_prompt(tmp_path, monkeypatch):
    seen: list[list[EncodedRecord]] = []

    def recording(encoded, num_heads, seed, groups=None):
        assign_bootstrap_weights(encoded, num_heads, seed, groups)
        seen.append(list(encoded))

    monkeypatch.setattr(pipeline, "assign_bootstrap_weights", recording)
    save_tiny_model(tmp_path / "trunk")
    records = comparisons(30, random.Random(0))
    write_jsonl(records, tmp_path / "train.jsonl")
    config = RewardTrainConfig(model=str(tmp_path / "trunk"), data=[str(tmp_path / "train.jsonl")],
                               output_dir=str(tmp_path / "out"), max_steps=1, batch_size=8, num_heads=3,
                               bootstrap_unit="prompt", early_stopping_fraction=0.0, eval_fraction=0.0,
                               progress=False, report_to="none")
    train_reward_model(config)
    by_prompt: dict[str, set[tuple[float, ...]]] = {}
    for record in seen[0]:
        by_prompt.setdefault(records[record.index].prompt, set()).add(record.head_weights)
    assert len(seen[0]) == 30 and len(by_prompt) < 30
    assert all(len(weights) == 1 for weights in by_prompt.values())
