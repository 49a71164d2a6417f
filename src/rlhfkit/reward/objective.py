"""The training objective of one micro-batch: per-kind losses on per-head rewards, then the mixture."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from rlhfkit.reward.batching import Batch
from rlhfkit.reward.config import RewardLossConfig
from rlhfkit.reward.losses import (bradley_terry_loss, cumulative_link_loss, label_bce_loss, mixture_loss,
                                   ordered_thresholds, plackett_luce_loss, rating_regression_loss)


def per_kind_losses(rewards: torch.Tensor, batch: Batch, config: RewardLossConfig,
                    thresholds: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Loss per record and head for each kind in ``batch``; rewards (N, H) -> {kind: (b_k, H)}."""
    out: dict[str, torch.Tensor] = {}
    if "pairwise" in batch.rows:
        rows = batch.rows["pairwise"]
        margin = batch.margin.unsqueeze(-1) if config.use_margin else None
        out["pairwise"] = bradley_terry_loss(rewards[rows[:, 0]], rewards[rows[:, 1]], margin=margin,
                                             tie=batch.tie.unsqueeze(-1), label_smoothing=config.label_smoothing)
    if "ranking" in batch.rows:
        rows = batch.rows["ranking"]
        mask = rows >= 0
        scores = rewards[rows.clamp(min=0)]
        out["ranking"] = torch.stack([plackett_luce_loss(scores[..., h], batch.rank_values, mask)
                                      for h in range(rewards.shape[-1])], dim=-1)
    if "rating" in batch.rows:
        rated = rewards[batch.rows["rating"]]
        if config.rating_loss == "ordinal":
            out["rating"] = _ordinal(rated, batch, thresholds or {})
        else:
            out["rating"] = rating_regression_loss(rated, batch.rating_target.unsqueeze(-1))
    if "label" in batch.rows:
        labelled = rewards[batch.rows["label"]]
        out["label"] = label_bce_loss(labelled, batch.label_target.unsqueeze(-1).expand_as(labelled))
    return out


def _ordinal(rated: torch.Tensor, batch: Batch, thresholds: Mapping[str, torch.Tensor]) -> torch.Tensor:
    losses = torch.zeros_like(rated)
    keys = batch.rating_scale
    for key in sorted(set(keys)):
        if key not in thresholds:
            raise KeyError(f"no ordinal thresholds for rating scale {key}")
        cuts = ordered_thresholds(thresholds[key])
        select = torch.tensor([k == key for k in keys], device=rated.device)
        levels = batch.rating_level[select]
        losses[select] = torch.stack([cumulative_link_loss(rated[select][:, h], levels, cuts)
                                      for h in range(rated.shape[-1])], dim=-1)
    return losses


def batch_objective(rewards: torch.Tensor, batch: Batch, config: RewardLossConfig,
                    thresholds: Mapping[str, torch.Tensor] | None = None,
                    denominators: Mapping[str, torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mixture loss averaged over heads, and detached per-kind statistics for logging.

    rewards: (N, H) for every row of ``batch``. ``denominators`` {kind: (H,)} are the weight
    totals of the whole optimizer step (see :func:`rlhfkit.reward.batching.step_denominators`).
    """
    losses = per_kind_losses(rewards, batch, config, thresholds)
    kind_weights = config.kind_weights()
    heads = rewards.shape[-1]
    total = rewards.new_zeros(())
    for h in range(heads):
        head_losses = {k: v[:, h] for k, v in losses.items()}
        head_weights = {k: batch.weights[k][:, h].to(rewards.dtype) for k in losses}
        head_denominators = None if denominators is None else {k: float(denominators[k][h]) for k in losses}
        total = total + mixture_loss(head_losses, head_weights, kind_weights, head_denominators)
    stats: dict[str, float] = {}
    with torch.no_grad():
        for kind, value in losses.items():
            stats[f"loss/{kind}"] = float(value.mean())
        if "pairwise" in batch.rows:
            mean_reward = rewards.mean(dim=-1)
            rows = batch.rows["pairwise"]
            decided = ~batch.tie
            if decided.any():
                diff = mean_reward[rows[:, 0]] - mean_reward[rows[:, 1]]
                stats["train/pairwise_accuracy"] = float((diff[decided] > 0).float().mean())
                stats["train/reward_margin"] = float(diff[decided].mean())
        stats["train/reward_mean"] = float(rewards.mean())
    return total / heads, stats
