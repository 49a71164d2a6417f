"""Normalization statistics per head: the spread over heads measures disagreement, not offsets (issue 14)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer

from rlhfkit.data.records import Comparison
from rlhfkit.models.reward_model import RewardModel, RewardModelSettings, load_reward_model
from rlhfkit.reward.pipeline import fit_normalization
from rlhfkit.rl.rewards import ModelReward, mixture_mean_std


def _records(n: int) -> list[Comparison]:
    return [Comparison(prompt=f"p{i}", chosen=f"good answer {i}", rejected=f"bad {i}") for i in range(n)]


def _pairs(records: list[Comparison]) -> tuple[list[str], list[str]]:
    return [r.prompt for r in records for _ in (0, 1)], [t for r in records for t in (r.chosen, r.rejected)]


def _affine_heads(scale: float, offset: float) -> RewardModel:
    """Two heads, the second = scale * first + offset: they agree on every ranking."""
    tokenizer = tiny_tokenizer()
    model = RewardModel(tiny_gpt2(tokenizer, seed=0).transformer, tokenizer,
                        RewardModelSettings(num_heads=2, max_length=64)).eval()
    with torch.no_grad():
        model.head.weight[1] = scale * model.head.weight[0]
        model.head.bias[0], model.head.bias[1] = 0.0, offset
    return model


@pytest.mark.parametrize("scale,offset", [(1.0, 5.0), (3.0, -2.0)])
def test_heads_differing_by_an_affine_map_show_no_uncertainty(scale, offset) -> None:
    model = _affine_heads(scale, offset)
    records = _records(20)
    fit_normalization(model, records, limit=512, seed=0)
    prompts, texts = _pairs(records)
    heads = model.score_texts(prompts, texts, normalized=True, per_head=True)
    torch.testing.assert_close(heads.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(heads.std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    _, spread = model.score_texts(prompts, texts, normalized=True, with_uncertainty=True)
    assert spread.max().item() < 1e-4
    _, std = mixture_mean_std([ModelReward(model, "rm").heads(prompts, texts)])
    assert std.max().item() < 1e-4


def test_uncertainty_is_the_disagreement_left_after_per_head_normalization() -> None:
    model = _affine_heads(1.0, 5.0)
    with torch.no_grad():
        model.head.weight[1] += 0.5 * torch.randn(model.head.weight.shape[1], generator=torch.Generator().manual_seed(0))
    records = _records(20)
    fit_normalization(model, records, limit=512, seed=0)
    prompts, texts = _pairs(records)
    raw = model.score_texts(prompts, texts, per_head=True)
    z = (raw - raw.mean(0)) / raw.std(0, unbiased=False)
    mean, spread = model.score_texts(prompts, texts, normalized=True, with_uncertainty=True)
    torch.testing.assert_close(spread, z.std(-1, unbiased=False), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mean, z.mean(-1), atol=1e-4, rtol=1e-4)
    assert spread.mean().item() < 1.0  # the offset of 5 alone gave a spread of 2.5 / std


def test_per_head_statistics_round_trip_and_old_single_statistics_still_load(tmp_path) -> None:
    model = _affine_heads(1.0, 5.0)
    records = _records(20)
    fit_normalization(model, records, limit=512, seed=0)
    prompts, texts = _pairs(records)
    normalized = model.score_texts(prompts, texts, normalized=True, per_head=True)
    model.save_pretrained(tmp_path / "rm")
    stored = json.loads((tmp_path / "rm" / "reward_config.json").read_text())
    assert len(stored["head_mean"]) == len(stored["head_std"]) == 2
    loaded = load_reward_model(tmp_path / "rm")
    torch.testing.assert_close(loaded.score_texts(prompts, texts, normalized=True, per_head=True), normalized,
                               atol=1e-5, rtol=1e-5)
    del stored["head_mean"], stored["head_std"]
    stored["mean"], stored["std"] = 1.0, 2.0  # a model saved before per-head statistics
    (tmp_path / "rm" / "reward_config.json").write_text(json.dumps(stored))
    old = load_reward_model(tmp_path / "rm")
    raw = old.score_texts(prompts, texts, per_head=True)
    torch.testing.assert_close(old.score_texts(prompts, texts, normalized=True, per_head=True), (raw - 1.0) / 2.0,
                               atol=1e-5, rtol=1e-5)
