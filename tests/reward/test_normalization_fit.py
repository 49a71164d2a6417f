"""Reward normalization statistics: fitted on held-out and training responses, a warning when they are few."""

from __future__ import annotations

import logging

from helpers_models import tiny_gpt2, tiny_tokenizer

from rlhfkit.data.records import Comparison
from rlhfkit.models.reward_model import RewardModel, RewardModelSettings
from rlhfkit.reward.pipeline import fit_normalization


def _model() -> RewardModel:
    tokenizer = tiny_tokenizer()
    trunk = tiny_gpt2(tokenizer, seed=0).transformer
    return RewardModel(trunk, tokenizer, RewardModelSettings(max_length=64)).eval()


def _records(n: int) -> list[Comparison]:
    return [Comparison(prompt=f"p{i}", chosen=f"good answer {i}", rejected=f"bad {i}") for i in range(n)]


def test_normalization_matches_the_scores_of_every_distinct_response() -> None:
    model = _model()
    records = _records(20)
    fit_normalization(model, records, limit=512, seed=0)
    prompts = [r.prompt for r in records for _ in (0, 1)]
    texts = [t for r in records for t in (r.chosen, r.rejected)]
    raw = model.score_texts(prompts, texts)
    assert abs(model.settings.mean - raw.mean().item()) < 1e-6  # float32 sums in another order
    assert abs(model.settings.std - raw.std(unbiased=False).item()) < 1e-6
    normalized = model.score_texts(prompts, texts, normalized=True)
    assert abs(normalized.mean().item()) < 1e-5 and abs(normalized.std(unbiased=False).item() - 1) < 1e-4


def test_few_reference_responses_are_reported(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="rlhfkit.reward.pipeline"):
        fit_normalization(_model(), _records(4), limit=512, seed=0)
    assert "only 8 distinct responses" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rlhfkit.reward.pipeline"):
        fit_normalization(_model(), _records(20), limit=512, seed=0)
    assert caplog.text == ""
