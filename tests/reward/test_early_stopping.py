"""Early stopping on a held-out slice: prompt split, check schedule, best step, patience, restore."""

from __future__ import annotations

import math
import random

import pytest
import torch
from helpers_models import save_tiny_model

from rlhfkit.data.preference_io import write_jsonl
from rlhfkit.reward.batching import encode_records
from rlhfkit.reward.config import RewardLossConfig, RewardOptimConfig, RewardTrainConfig
from rlhfkit.reward.pipeline import train_reward_model
from rlhfkit.reward.selection import (best_check, check_interval, heldout_loss, patience_exhausted, split_by_prompt,
                                      unit_head_weights)
from rlhfkit.reward.trainer import RewardTrainer
from rlhfkit.utils.tracking import read_metrics

from .synthetic import comparisons, tiny_reward_model, word_tokenizer


def test_split_by_prompt_holds_out_whole_prompts():
    prompts = ["a", "a", "b", "c", "c", "c", "d", "e"]
    kept, held = split_by_prompt(prompts, prompts, 0.4, seed=3)
    held_prompts = {prompts[i] for i in held}
    assert len(held_prompts) == 2
    assert not held_prompts & {prompts[i] for i in kept}
    assert sorted(kept + held) == list(range(8))
    assert split_by_prompt(prompts, prompts, 0.4, seed=3) == (kept, held)


def test_split_by_prompt_holds_out_nothing_when_the_share_rounds_to_zero_or_all():
    assert split_by_prompt([1, 2, 3], ["a", "b", "c"], 0.1, seed=0) == ([0, 1, 2], [])
    assert split_by_prompt([1, 2], ["a", "a"], 0.9, seed=0) == ([0, 1], [])
    assert split_by_prompt([1, 2], ["a", "b"], 0.0, seed=0) == ([0, 1], [])
    with pytest.raises(ValueError, match="3 records but 2 prompts"):
        split_by_prompt([1, 2, 3], ["a", "b"], 0.5, seed=0)


def test_check_interval():
    assert check_interval(133, 4) == 33
    assert check_interval(3, 4) == 1
    with pytest.raises(ValueError, match="early_stopping_checks"):
        check_interval(10, 0)


def test_best_check_takes_the_lowest_finite_loss_and_the_earliest_tie():
    assert best_check([(10, 0.70), (20, 0.62), (30, 0.62), (40, 0.65)]) == (20, 0.62)
    assert best_check([(10, math.nan), (20, 0.9)]) == (20, 0.9)
    with pytest.raises(ValueError, match="no finite"):
        best_check([(10, math.inf)])


def test_patience_counts_checks_after_the_best():
    history = [(10, 0.70), (20, 0.60), (30, 0.61), (40, 0.65)]
    assert patience_exhausted(history, 2)
    assert not patience_exhausted(history, 3)
    assert not patience_exhausted(history, 0)
    assert not patience_exhausted(history[:2], 1)


def test_heldout_loss_is_the_mean_bradley_terry_loss():
    tokenizer = word_tokenizer()
    model = tiny_reward_model(tokenizer, num_heads=2).eval()
    records = comparisons(5, random.Random(1))
    encoded, _ = encode_records(records, tokenizer, max_length=32, eos_id=tokenizer.eos_token_id, min_prompt_tokens=2)
    encoded = unit_head_weights(encoded, 2)
    config = RewardLossConfig(use_margin=False)
    got = heldout_loss(model, encoded, config, batch_size=2, device=torch.device("cpu"))
    with torch.no_grad():
        chosen = model.score_texts([r.prompt for r in records], [r.chosen for r in records], per_head=True)
        rejected = model.score_texts([r.prompt for r in records], [r.rejected for r in records], per_head=True)
    expected = float(torch.nn.functional.softplus(rejected - chosen).mean())
    assert got == pytest.approx(expected, rel=1e-4)


def _trainer(tmp_path, losses, patience=0, save_every=0):
    tokenizer = word_tokenizer()
    model = tiny_reward_model(tokenizer)
    encoded, _ = encode_records(comparisons(32, random.Random(0)), tokenizer, max_length=32,
                                eos_id=tokenizer.eos_token_id, min_prompt_tokens=2)
    config = RewardTrainConfig(output_dir=str(tmp_path), batch_size=8, epochs=2, progress=False,
                               save_every=save_every, report_to="none", early_stopping_checks=4,
                               early_stopping_patience=patience,
                               optim=RewardOptimConfig(lr=3e-3, warmup_ratio=0.0))
    scripted = iter(losses)
    return RewardTrainer(model, config, encoded, select=lambda: next(scripted))


def test_training_keeps_the_weights_of_the_best_held_out_check(tmp_path):
    trainer = _trainer(tmp_path, [0.9, 0.8, 0.5, 0.7, 0.6, 0.8, 0.9, 0.95])
    snapshots = {}
    summary = trainer.train(on_step=lambda step, _: snapshots.setdefault(
        step, {k: v.clone() for k, v in trainer.model.state_dict().items()}))
    assert summary.steps == 8
    assert [s for s, _ in summary.heldout_losses] == list(range(1, 9))
    assert summary.best_step == 3
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, snapshots[3][key]), key
    assert not torch.equal(snapshots[3]["head.weight"], snapshots[8]["head.weight"])


def test_patience_stops_training_early(tmp_path):
    trainer = _trainer(tmp_path, [0.9, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9], patience=2)
    summary = trainer.train()
    assert summary.steps == 4
    assert summary.best_step == 2


class Killed(Exception):
    pass


def test_resume_continues_the_checks_and_keeps_the_same_best(tmp_path):
    losses = [0.9, 0.6, 0.7, 0.8, 0.5, 0.7, 0.8, 0.9]
    straight = _trainer(tmp_path / "straight", losses)
    expected = straight.train()

    def kill(step, _):
        if step == 4:
            raise Killed

    first = _trainer(tmp_path / "resumed", losses[:4], save_every=4)
    with pytest.raises(Killed):
        first.train(on_step=kill)
    resumed = _trainer(tmp_path / "resumed", losses[4:], save_every=4)
    summary = resumed.train()
    assert summary.resumed_from == 4 and summary.best_step == expected.best_step == 5
    assert summary.heldout_losses == expected.heldout_losses
    for key, value in resumed.model.state_dict().items():
        assert torch.allclose(value, straight.model.state_dict()[key], atol=1e-6), key


def test_train_rm_checks_a_held_out_prompt_on_schedule_and_logs_each_check(tmp_path):
    save_tiny_model(tmp_path / "trunk", n_positions=64)
    write_jsonl(comparisons(48, random.Random(0)), tmp_path / "train.jsonl")
    config = RewardTrainConfig(model=str(tmp_path / "trunk"), data=[str(tmp_path / "train.jsonl")], eval_fraction=0.0,
                               output_dir=str(tmp_path / "run"), batch_size=8, early_stopping_fraction=0.25,
                               early_stopping_checks=2, early_stopping_patience=0, progress=False, report_to="none",
                               normalization_samples=16)
    outcome = train_reward_model(config)
    summary = outcome.summaries[0]
    assert summary.steps == 8 and [step for step, _ in summary.heldout_losses] == [2, 4, 6, 8]  # 31 records / 8
    assert summary.best_step == best_check(summary.heldout_losses)[0]
    logged = [m for m in read_metrics(tmp_path / "run" / "logs") if "early_stopping/heldout_loss" in m]
    assert [(m["step"], m["early_stopping/heldout_loss"]) for m in logged] == summary.heldout_losses
