"""build_model: warm-starting reward training from a saved reward model or a saved ensemble."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer

from rlhfkit.models.reward_model import RewardEnsemble, RewardModel, RewardModelError, RewardModelSettings
from rlhfkit.reward.config import RewardTrainConfig
from rlhfkit.reward.pipeline import build_model, train_reward_model


def _saved_ensemble(directory, seeds=(1, 2)):
    tokenizer = tiny_tokenizer()
    members = [RewardModel(tiny_gpt2(tokenizer, seed=s).transformer, tokenizer,
                           RewardModelSettings(num_heads=2, max_length=64)) for s in seeds]
    for index, member in enumerate(members):
        torch.nn.init.constant_(member.head.bias, float(index + 1))
    RewardEnsemble(members).save_pretrained(directory)
    return members


def test_each_member_continues_from_the_saved_member_of_its_index(tmp_path):
    members = _saved_ensemble(tmp_path / "ens")
    config = RewardTrainConfig(model=str(tmp_path / "ens"), ensemble_size=2, max_length=32, min_prompt_tokens=8)
    for index, saved in enumerate(members):
        model = build_model(config, seed=0, device=torch.device("cpu"), member=index)
        assert model.num_heads == 2 and model.settings.max_length == 32 and model.settings.min_prompt_tokens == 8
        torch.testing.assert_close(model.head.weight, saved.head.weight)
        assert model.head.bias.tolist() == [index + 1.0] * 2
        torch.testing.assert_close(model.backbone.wte.weight, saved.backbone.wte.weight)


@pytest.mark.parametrize("ensemble_size", [1, 3])
def test_an_ensemble_of_another_size_is_refused_naming_the_path(tmp_path, ensemble_size):
    _saved_ensemble(tmp_path / "ens")
    config = RewardTrainConfig(model=str(tmp_path / "ens"), ensemble_size=ensemble_size, data=["unread.jsonl"])
    message = rf"{tmp_path / 'ens'} is a reward-model ensemble of 2 members.*ensemble_size=2.*member-0"
    with pytest.raises(RewardModelError, match=message):
        build_model(config, seed=0, device=torch.device("cpu"), member=None if ensemble_size == 1 else 0)
    with pytest.raises(RewardModelError, match=message):
        train_reward_model(config)  # before reading the (missing) data
