"""Reward-model pooling: last token, mean over tokens, or both, by hand values and through a saved model."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhfkit.config import load_config, parse_overrides
from rlhfkit.models.pooling import masked_mean, pool, pooled_width
from rlhfkit.models.reward_model import RewardModel, RewardModelError, RewardModelSettings, load_reward_model
from rlhfkit.reward.config import RewardTrainConfig
from rlhfkit.reward.pipeline import build_model

PROMPTS = ["The movie was", "Please explain why"]
RESPONSES = [" great and the actors were wonderful.", " bad."]


def _model(pooling: str) -> RewardModel:
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    trunk = tiny_gpt2(tokenizer, seed=0).transformer
    return RewardModel(trunk, tokenizer, RewardModelSettings(max_length=64, pooling=pooling)).eval()


def test_pool_by_hand_values():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, 0.0], [7.0, 2.0], [9.0, 4.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    index = torch.tensor([1, 2])
    assert pool(hidden, mask, index, "last").tolist() == [[3.0, 4.0], [9.0, 4.0]]
    assert pool(hidden, mask, index, "mean").tolist() == [[2.0, 3.0], [7.0, 2.0]]
    assert pool(hidden, mask, index, "last_mean").tolist() == [[3.0, 4.0, 2.0, 3.0], [9.0, 4.0, 7.0, 2.0]]
    assert masked_mean(hidden, torch.zeros(2, 3, dtype=torch.long)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert [pooled_width(8, p) for p in ("last", "mean", "last_mean")] == [8, 8, 16]


def test_unknown_pooling_is_refused_everywhere():
    with pytest.raises(ValueError, match="pooling: unknown value 'max'"):
        _model("max")
    with pytest.raises(ValueError, match="pooling"):
        load_config(RewardTrainConfig, None, parse_overrides(["pooling=max"]))
    classifier = GPT2ForSequenceClassification(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1,
                                                          n_head=2, num_labels=1))
    with pytest.raises(RewardModelError, match="pooling='mean' needs a plain trunk"):
        RewardModel(classifier, tiny_tokenizer(), RewardModelSettings(pooling="mean"))


@pytest.mark.parametrize("pooling", ["mean", "last_mean"])
def test_model_reads_the_pooled_trunk_states_whatever_the_padding(pooling):
    model = _model(pooling)
    sequences, _ = model.encode(PROMPTS, RESPONSES)
    together = model.score_texts(PROMPTS, RESPONSES)
    for row, ids in enumerate(sequences):
        states = model.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
        features = states.mean(0) if pooling == "mean" else torch.cat([states[-1], states.mean(0)])
        assert model.head.in_features == features.shape[0]
        with torch.no_grad():
            expected = model.head(features).item()
        assert together[row].item() == pytest.approx(expected, abs=1e-5)


def test_pooling_survives_save_and_load(tmp_path):
    model = _model("last_mean")
    before = model.score_texts(PROMPTS, RESPONSES)
    loaded = load_reward_model(model.save_pretrained(tmp_path / "rm"))
    assert loaded.settings.pooling == "last_mean"
    assert loaded.head.in_features == 2 * model.backbone.config.n_embd
    assert torch.allclose(loaded.score_texts(PROMPTS, RESPONSES), before, atol=1e-6)


def test_train_rm_config_sets_a_fresh_models_pooling(tmp_path):
    tokenizer = tiny_tokenizer()
    tiny_gpt2(tokenizer, seed=0).save_pretrained(tmp_path / "trunk")
    tokenizer.save_pretrained(tmp_path / "trunk")
    config = load_config(RewardTrainConfig, None, parse_overrides([f"model={tmp_path / 'trunk'}", "pooling=mean"]))
    model = build_model(config, seed=0, device=torch.device("cpu"))
    assert model.settings.pooling == "mean" and model.head.in_features == model.backbone.config.n_embd
