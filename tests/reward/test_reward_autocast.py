"""Reward training under CPU bf16 autocast (``dtype=bfloat16``): float32 weights and loss, close to float32."""

from __future__ import annotations

import copy
import random

import torch

from rlhfkit.reward.batching import encode_records
from rlhfkit.reward.config import RewardOptimConfig, RewardTrainConfig
from rlhfkit.reward.trainer import RewardTrainer

from .synthetic import comparisons, tiny_reward_model, word_tokenizer


def _trainer(model, records, tmp_path, dtype):  # noqa: ANN001, ANN202
    config = RewardTrainConfig(output_dir=str(tmp_path), batch_size=8, progress=False, save_every=0,
                               report_to="none", optim=RewardOptimConfig(lr=3e-3, warmup_ratio=0.0))
    return RewardTrainer(model, config, records, autocast_dtype=dtype)


def test_bf16_autocast_steps_track_float32(tmp_path) -> None:
    tokenizer = word_tokenizer()
    records, _ = encode_records(comparisons(16, random.Random(0)), tokenizer, max_length=32,
                                eos_id=tokenizer.eos_token_id, min_prompt_tokens=2)
    base = tiny_reward_model(tokenizer)
    full = _trainer(copy.deepcopy(base), records, tmp_path / "fp32", None)
    half = _trainer(copy.deepcopy(base), records, tmp_path / "bf16", torch.bfloat16)
    first_full, first_half = full.train_step(), half.train_step()
    assert abs(first_full["loss/total"] - first_half["loss/total"]) < 2e-2
    assert first_full["loss/total"] != first_half["loss/total"]  # bf16 matmuls did run
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    moved = [(a - b).abs().max().item() for a, b in zip(half.model.parameters(), base.parameters())]
    assert max(moved) > 0
