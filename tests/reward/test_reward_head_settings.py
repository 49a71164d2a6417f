"""The reward head's start (head_init_std) and its own learning rate (head_lr)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rlhfkit.loop.config import LoopConfig
from rlhfkit.models.likelihood import RewardHead
from rlhfkit.reward.batching import encode_records
from rlhfkit.reward.config import RewardOptimConfig, RewardTrainConfig
from rlhfkit.reward.pipeline import check_head_settings
from rlhfkit.reward.trainer import RewardTrainer

from .synthetic import comparisons, tiny_reward_model, word_tokenizer


def _trainer(tmp_path, head_lr, lr=1e-4):
    tokenizer = word_tokenizer()
    model = tiny_reward_model(tokenizer)
    encoded, _ = encode_records(comparisons(16, random.Random(0)), tokenizer, max_length=32,
                                eos_id=tokenizer.eos_token_id, min_prompt_tokens=2)
    config = RewardTrainConfig(output_dir=str(tmp_path), batch_size=8, progress=False, save_every=0,
                               report_to="none", head_lr=head_lr, optim=RewardOptimConfig(lr=lr, warmup_ratio=0.0))
    return RewardTrainer(model, config, encoded), model


def test_a_zero_head_starts_every_pair_at_loss_ln2(tmp_path):
    trainer, model = _trainer(tmp_path, head_lr=3e-3)
    model.reset_head(0.0)
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    metrics = trainer.train_step()
    assert metrics["loss/total"] == pytest.approx(math.log(2), abs=1e-6)
    assert torch.count_nonzero(model.head.weight) > 0


def test_reset_head_draws_weights_with_the_given_std():
    model = tiny_reward_model(word_tokenizer(), n_embd=32)
    model.head = RewardHead(4096, 1)
    model.reset_head(0.5)
    assert model.head.weight.std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.count_nonzero(model.head.bias) == 0


def test_the_head_learns_at_head_lr_and_the_trunk_at_lr(tmp_path):
    trainer, model = _trainer(tmp_path, head_lr=3e-3, lr=1e-4)
    head = {id(p) for p in model.head.parameters()}
    for group in trainer.optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == (3e-3 if in_head.pop() else 1e-4)
    covered = sum(len(g["params"]) for g in trainer.optimizer.param_groups)
    assert covered == sum(1 for p in model.parameters() if p.requires_grad)


def test_without_head_lr_every_parameter_learns_at_lr(tmp_path):
    trainer, _ = _trainer(tmp_path, head_lr=None, lr=1e-4)
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {1e-4}
    assert len(trainer.optimizer.param_groups) == 2  # the head stays in the trunk's groups, in their order


def test_bad_head_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="head_init_std must be >= 0"):
        check_head_settings(RewardTrainConfig(head_init_std=-0.1))
    with pytest.raises(ValueError, match="head_lr must be > 0"):
        check_head_settings(RewardTrainConfig(head_lr=0.0))
    with pytest.raises(ValueError, match="num_heads=3 with bootstrap=false and head_init_std=0 would train identical"):
        check_head_settings(RewardTrainConfig(num_heads=3, bootstrap=False))
    check_head_settings(RewardTrainConfig(num_heads=3, bootstrap=False, head_init_std=0.01))
    check_head_settings(RewardTrainConfig(head_init_std=None, head_lr=None))


def test_the_loops_reward_phase_keeps_its_random_head_at_one_learning_rate():
    reward = LoopConfig().reward.train
    assert reward.head_init_std is None and reward.head_lr is None
    assert RewardTrainConfig().head_init_std == 0.0 and RewardTrainConfig().head_lr == 3e-3
