"""Reward-model update of a round: train on all aggregated feedback so far, then measure it.

Training is ``rlhfkit.reward.pipeline.train_reward_model`` (resumable from its own checkpoints);
the loop chooses the starting point (the previous round's model or the base trunk), the data and
the output directory, and writes ``rm_eval.json`` (held-out pairwise accuracy, or rating Spearman for
rating-only data such as encoded critiques, plus agreement with the gold reward's preferences on this
round's candidates when the task has one).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rlhfkit.loop.candidates import Candidate
from rlhfkit.loop.config import LoopConfig
from rlhfkit.loop.scoring import load_scorer
from rlhfkit.loop.selection import candidate_pairs
from rlhfkit.reward.config import RewardTrainConfig
from rlhfkit.tasks.base import Task


def reward_train_config(config: LoopConfig, data: Path, output_dir: Path, start_from: str,
                        round_index: int) -> RewardTrainConfig:
    """The trainer config of this round: the user's settings plus the loop's paths and seed."""
    return dataclasses.replace(config.reward.train, model=start_from, data=[str(data)], eval_data=[],
                               output_dir=str(output_dir), resume=True, progress=False, report_to=config.report_to,
                               seed=config.seed + round_index, device=config.device, threads=config.threads)


def expected_steps(train_config: RewardTrainConfig, n_records: int) -> int:
    """Optimizer steps the trainer will take on ``n_records`` (for the progress bar)."""
    if train_config.max_steps:
        return train_config.max_steps
    n_train = n_records - min(n_records - 1, max(1, round(train_config.eval_fraction * n_records)))
    batches = math.ceil(max(1, n_train) / train_config.batch_size)
    return max(1, math.ceil(train_config.epochs * batches / train_config.optim.grad_accum)) * max(1, train_config.ensemble_size)


def train_round_reward(train_config: RewardTrainConfig,
                       on_step: Callable[[int], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Train (or resume) the reward model; returns its directory and the held-out metrics."""
    from rlhfkit.reward.pipeline import train_reward_model

    def hook(step: int, metrics: dict[str, float]) -> None:
        if on_step is not None:
            on_step(step)

    outcome = train_reward_model(train_config, on_step=hook)
    last = outcome.summaries[-1] if outcome.summaries else None
    summary: dict[str, Any] = {"steps": sum(s.steps for s in outcome.summaries),
                               "train_loss": last.last_metrics.get("loss/total") if last else None}
    if outcome.evaluation is not None and "pairwise_accuracy" in outcome.evaluation.metrics:
        metric = outcome.evaluation.metrics["pairwise_accuracy"]
        summary.update(accuracy=metric.value, accuracy_low=metric.low, accuracy_high=metric.high, n=metric.n)
    metric = outcome.evaluation.metrics.get("rating_spearman") if outcome.evaluation is not None else None
    if metric is not None and math.isfinite(metric.value):
        summary.update(rating_spearman=metric.value, rating_spearman_low=metric.low,
                       rating_spearman_high=metric.high, rating_n=metric.n)
    return outcome.model_dir, summary


def gold_pair_accuracy(model_dir: Path, task: Task, candidates: Sequence[Candidate],
                       device: Any = None) -> tuple[float, int] | None:
    """Share of candidate pairs (different gold) that the reward model orders like the gold reward."""
    if not task.has_gold:
        return None
    pairs = candidate_pairs(candidates)
    prompts = [c.prompt for c in candidates]
    responses = [c.response for c in candidates]
    gold = task.gold_reward(prompts, responses) or []
    pairs = [p for p in pairs if gold[p.a] != gold[p.b]]
    if not pairs:
        return None
    model = load_scorer(str(model_dir), device=device)
    scores = model.score_texts(prompts, responses, normalized=True)
    a = torch.tensor([p.a for p in pairs])
    b = torch.tensor([p.b for p in pairs])
    gold_t = torch.tensor(gold)
    agree = ((scores[a] - scores[b]).sign() == (gold_t[a] - gold_t[b]).sign()).float()
    return float(agree.mean()), len(pairs)
