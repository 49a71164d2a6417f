"""Reward trainer: one forward pass per micro-batch, truncation report, accumulation, exact resume."""

from __future__ import annotations

import random

import pytest
import torch

from rlhfkit.data.records import Comparison, Label, Ranking, Rating
from rlhfkit.reward.batching import (TRUNCATED_AWAY, assign_bootstrap_weights, collate, encode_records,
                                     epoch_batches)
from rlhfkit.reward.config import RewardLossConfig, RewardOptimConfig, RewardTrainConfig
from rlhfkit.reward.trainer import RewardTrainer

from .synthetic import comparisons, labels, ratings, rankings, tiny_reward_model, word_tokenizer


def _encode(records, tokenizer, max_length=32, **kwargs):
    return encode_records(records, tokenizer, max_length=max_length, eos_id=tokenizer.eos_token_id,
                          min_prompt_tokens=2, **kwargs)


def _config(tmp_path, lr=3e-3, grad_accum=1, **overrides):
    values = dict(output_dir=str(tmp_path), batch_size=8, progress=False, save_every=0, report_to="none",
                  optim=RewardOptimConfig(lr=lr, grad_accum=grad_accum, warmup_ratio=0.0))
    values.update(overrides)
    return RewardTrainConfig(**values)


def test_collate_packs_every_response_into_one_padded_batch():
    tokenizer = word_tokenizer()
    records = [Comparison("q0 answer:", "good good", "bad"), Ranking("q1", ("w1", "good w2 w3", "bad w1"), (2, 1, 3)),
               Rating("q2", "w0 w1", 4.0, (1.0, 5.0)), Label("q3", "bad bad bad bad", False)]
    encoded, _ = _encode(records, tokenizer)
    batch = collate(encoded, tokenizer.pad_token_id)
    lengths = [len(s) for r in encoded for s in r.sequences]
    assert batch.input_ids.shape == (7, max(lengths))
    assert batch.attention_mask.sum(1).tolist() == lengths
    assert batch.rows["pairwise"].tolist() == [[0, 1]]
    assert batch.rows["ranking"].tolist() == [[2, 3, 4]] and batch.rank_values.tolist() == [[2, 1, 3]]
    assert batch.rows["rating"].tolist() == [5] and batch.rating_target.tolist() == [0.75]
    assert batch.rows["label"].tolist() == [6] and batch.label_target.tolist() == [0.0]


def test_one_forward_pass_per_micro_batch(tmp_path):
    tokenizer = word_tokenizer()
    model = tiny_reward_model(tokenizer)
    encoded, _ = _encode(comparisons(32, random.Random(0)), tokenizer)
    rows = []
    model.backbone.register_forward_pre_hook(lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    trainer = RewardTrainer(model, _config(tmp_path, batch_size=8, grad_accum=2, row_halves="never"), encoded)
    trainer.train_step()
    # chosen and rejected of a micro-batch's 8 pairs in one pass (after at most one pass over their distinct prompts)
    assert [n for n in rows if n == 16] == [16, 16] and len(rows) <= 4 and all(n < 8 for n in rows if n != 16)


def test_truncation_that_erases_the_difference_is_reported_and_skipped():
    tokenizer = word_tokenizer()
    records = [Comparison("q0", "w1 w2 w3 w4 w5 good", "w1 w2 w3 w4 w5 bad"),
               Comparison("q0", "good w1 w2 w3 w4 w5", "bad w1 w2 w3 w4 w5"),
               Ranking("q0", ("w1 w2 w3 w4 w5 good", "w1 w2 w3 w4 w5 bad", "bad"), (1, 2, 3))]
    encoded, report = _encode(records, tokenizer, max_length=6, numbers=[10, 11, 12])
    assert [r.index for r in encoded] == [1]
    assert report.problems == {TRUNCATED_AWAY: [10, 12]}
    assert report.notes["truncated but kept"] == 1


def test_length_grouped_batches_cover_each_record_once_and_depend_only_on_seed_and_epoch():
    tokenizer = word_tokenizer()
    encoded, _ = _encode(comparisons(50, random.Random(0)), tokenizer)
    first = epoch_batches(encoded, 8, seed=3, epoch=1)
    assert sorted(i for b in first for i in b) == list(range(50))
    assert first == epoch_batches(encoded, 8, seed=3, epoch=1)
    assert first != epoch_batches(encoded, 8, seed=3, epoch=2)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    tokenizer = word_tokenizer()
    rng = random.Random(1)
    records = comparisons(8, rng) + rankings(4, rng) + ratings(4, rng) + labels(4, rng)
    encoded, _ = _encode(records, tokenizer)
    results = []
    for batch_size, accum in ((20, 1), (5, 4)):
        model = tiny_reward_model(tokenizer, seed=0)
        trainer = RewardTrainer(model, _config(tmp_path / f"{batch_size}", batch_size=batch_size, grad_accum=accum,
                                               group_by_length=False), encoded)
        grads = []
        step = trainer.optimizer.step
        trainer.optimizer.step = lambda: (grads.append(torch.cat([p.grad.flatten() for p in model.parameters()])),
                                          step())
        metrics = trainer.train_step()
        results.append((_params(model), metrics["grad/norm"], grads[0]))
    (full, full_norm, full_grad), (accumulated, accumulated_norm, accumulated_grad) = results
    torch.testing.assert_close(accumulated_grad, full_grad, atol=1e-6 * float(full_grad.abs().max()), rtol=1e-5)
    # Adam's first step is lr * g / (|g| + eps): where |g| is near eps (1e-8) it turns float rounding of g
    # into up to ~lr / 100 of movement, so the parameters are compared at that scale
    torch.testing.assert_close(accumulated, full, atol=3e-5, rtol=1e-5)
    assert accumulated_norm == pytest.approx(full_norm, rel=1e-5)


@pytest.mark.parametrize("kinds", ["pairs", "mixed"])
def test_micro_batch_halves_side_by_side_match_the_whole_micro_batch(tmp_path, monkeypatch, kinds):
    """On 2+ threads each micro-batch's records run as two halves, one thread each: the step's gradient and stats
    are those of the whole micro-batch up to float rounding, and both halves really ran."""
    import rlhfkit.reward.trainer as trainer_module
    from helpers_threads import count_side_by_side

    tokenizer = word_tokenizer()
    rng = random.Random(2)
    records = comparisons(16, rng) if kinds == "pairs" else comparisons(6, rng) + rankings(4, rng) + ratings(
        3, rng) + labels(3, rng)
    encoded, _ = _encode(records, tokenizer)
    calls = count_side_by_side(monkeypatch, trainer_module)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    results = []
    try:
        for halves in (True, False):
            model = tiny_reward_model(tokenizer, seed=0)
            trainer = RewardTrainer(model, _config(tmp_path / str(halves), batch_size=8, grad_accum=2,
                                                   row_halves="auto" if halves else "never"), encoded)
            grads = []
            step = trainer.optimizer.step
            trainer.optimizer.step = lambda: (grads.append(torch.cat([p.grad.flatten() for p in model.parameters()])),
                                              step())
            results.append((trainer.train_step(), grads[0]))
    finally:
        torch.set_num_threads(previous)
    assert calls == [2, 2, 1, 1]  # two micro-batches in halves, then each whole
    (halved, halved_grad), (whole, whole_grad) = results
    torch.testing.assert_close(halved_grad, whole_grad, atol=1e-6 * float(whole_grad.abs().max()), rtol=1e-5)
    for key in ("loss/total", "grad/norm", "count/pairs"):
        assert halved[key] == pytest.approx(whole[key], rel=1e-5), key


class _Killed(Exception):
    pass


def test_resume_after_a_kill_is_exact(tmp_path):
    tokenizer = word_tokenizer()
    rng = random.Random(2)
    records = comparisons(24, rng) + rankings(8, rng) + ratings(8, rng) + labels(8, rng)
    encoded, _ = _encode(records, tokenizer, ordinal=True)
    assign_bootstrap_weights(encoded, 2, seed=0)
    loss = RewardLossConfig(rating_loss="ordinal")
    straight = tiny_reward_model(tokenizer, seed=0, num_heads=2)
    RewardTrainer(straight, _config(tmp_path / "a", epochs=2, loss=loss), encoded).train()

    def kill(step, metrics):
        if step == 5:
            raise _Killed

    interrupted = tiny_reward_model(tokenizer, seed=0, num_heads=2)
    config = _config(tmp_path / "b", epochs=2, save_every=5, loss=loss)
    with pytest.raises(_Killed):
        RewardTrainer(interrupted, config, encoded).train(on_step=kill)
    torch.manual_seed(12345)  # a fresh process would start from other RNG state
    resumed_model = tiny_reward_model(tokenizer, seed=7, num_heads=2)
    resumed = RewardTrainer(resumed_model, config, encoded)
    summary = resumed.train()
    assert summary.resumed_from == 5 and summary.steps == resumed.total_steps == 12
    torch.testing.assert_close(_params(resumed_model), _params(straight), atol=0, rtol=0)
    assert (tmp_path / "b" / "checkpoints" / "checkpoint-12" / "reward_config.json").is_file()


def test_resume_refuses_different_data_or_settings(tmp_path):
    tokenizer = word_tokenizer()
    encoded, _ = _encode(comparisons(16, random.Random(0)), tokenizer)
    config = _config(tmp_path, max_steps=1)
    RewardTrainer(tiny_reward_model(tokenizer), config, encoded).train()
    other, _ = _encode(comparisons(16, random.Random(1)), tokenizer)
    with pytest.raises(ValueError, match="different data or settings"):
        RewardTrainer(tiny_reward_model(tokenizer), _config(tmp_path, max_steps=1), other).train()
    with pytest.raises(ValueError, match="different data or settings"):
        RewardTrainer(tiny_reward_model(tokenizer), _config(tmp_path, max_steps=1, lr=1.0), encoded).train()
    fresh = RewardTrainer(tiny_reward_model(tokenizer), _config(tmp_path, max_steps=1, resume=False), encoded)
    assert fresh.train().resumed_from == 0


def test_bootstrap_weights_are_poisson_per_head_and_seeded():
    tokenizer = word_tokenizer()
    encoded, _ = _encode(comparisons(400, random.Random(0)), tokenizer)
    assign_bootstrap_weights(encoded, 3, seed=5)
    weights = torch.tensor([r.head_weights for r in encoded])
    assert weights.shape == (400, 3) and weights.mean().item() == pytest.approx(1.0, abs=0.1)
    assert (weights[:, 0] != weights[:, 1]).any()
    again, _ = _encode(comparisons(400, random.Random(0)), tokenizer)
    assign_bootstrap_weights(again, 3, seed=5)
    assert torch.equal(weights, torch.tensor([r.head_weights for r in again]))
