"""From sampled responses to sequence scores: reward source, invalid-response handling, clipping,
scaling. Shared by PPO and the group policy-gradient trainers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.rl.config import RewardConfig
from rlhfkit.rl.losses import clip_scores, replace_invalid_scores
from rlhfkit.rl.rewards import EnsembleReward, RewardSource, check_scores, describe
from rlhfkit.rl.rollout import Rollout
from rlhfkit.rl.running_moments import RunningMoments
from rlhfkit.utils.distributed import all_gather_rows


@dataclass
class Scores:
    """Per-response (b,) scores: raw from the source, final after shaping, and flags."""

    raw: torch.Tensor
    final: torch.Tensor
    replaced: torch.Tensor
    non_finite: torch.Tensor
    uncertainty: torch.Tensor | None = None
    gold: torch.Tensor | None = None

    def metrics(self) -> dict[str, float]:
        """reward/* metrics (and gold/* when a gold reward is configured)."""
        raw = describe(self.raw)
        out = {"reward/mean": self.final.mean().item(), "reward/std": self.final.std(unbiased=False).item(),
               "reward/raw_mean": raw["mean"], "reward/raw_std": raw["std"],
               "reward/replaced_frac": self.replaced.float().mean().item(),
               "reward/non_finite": float(self.non_finite.sum().item())}
        if self.uncertainty is not None:
            out["reward/ensemble_std"] = self.uncertainty.mean().item()
        if self.gold is not None:
            out["reward/gold_mean"] = describe(self.gold)["mean"]
        return out


def invalid_responses(rollout: Rollout, penalize_empty: bool) -> torch.Tensor:
    """(b,) bool: responses that never emitted EOS/stop, or (optionally) hold no visible text."""
    invalid = ~rollout.finished.cpu()
    if penalize_empty:
        empty = torch.tensor([not text.strip() for text in rollout.responses], dtype=torch.bool)
        invalid |= empty
    return invalid


def scale_scores(scores: torch.Tensor, finite: torch.Tensor, mode: str, moments: RunningMoments) -> torch.Tensor:
    """Scores divided by the batch std or a running std, or whitened over the batch.

    A spread of zero (all scores equal) leaves the scores unscaled instead of dividing by ~1e-8.
    """
    def divide(values: torch.Tensor, std: float) -> torch.Tensor:
        return values / std if std > SCALE_FLOOR else values

    if mode == "running" and finite.numel():
        moments.update(finite)
        return divide(scores, float(moments.std))
    if mode == "batch" and finite.numel() > 1:
        return divide(scores, float(finite.std()))
    if mode == "whiten" and finite.numel() > 1:
        return divide(scores - finite.mean(), float(finite.std()))
    return scores


SCALE_FLOOR = 1e-6


def score_rollout(rollout: Rollout, reward: EnsembleReward, config: RewardConfig,
                  moments: RunningMoments, gold: RewardSource | None = None) -> Scores:
    """Score responses, then: non-finite check, clip, scale, and (opt-in) invalid-response replacement.

    Nothing is replaced by default. With ``invalid_score`` set, responses without EOS (and, with
    ``penalize_empty``, empty ones) get that score (in the model's normalized units); with
    ``missing_eos_penalty`` they lose that much. ``replaced`` marks the rows actually changed.
    """
    output = reward.score(rollout.prompts, rollout.responses)
    raw = output.scores.float()
    non_finite = check_scores(raw, rollout.prompts, rollout.responses, reward.name, config.non_finite)
    scores = torch.where(non_finite, torch.zeros_like(raw), raw)
    scores = clip_scores(scores, config.clip)
    finite = all_gather_rows(scores[~non_finite])  # the whole batch's, under several processes
    scores = scale_scores(scores, finite, config.scaling, moments)
    replaced = torch.zeros_like(non_finite)
    if config.missing_eos_penalty is not None:
        replaced = invalid_responses(rollout, config.penalize_empty)
        scores = replace_invalid_scores(scores, replaced, penalty=config.missing_eos_penalty)
    elif config.invalid_score is not None:
        replaced = invalid_responses(rollout, config.penalize_empty)
        scores = replace_invalid_scores(scores, replaced, replacement=config.invalid_score)
    gold_scores = gold(rollout.prompts, rollout.responses).float() if gold is not None else None
    return Scores(raw=raw, final=scores, replaced=replaced, non_finite=non_finite,
                  uncertainty=output.std, gold=gold_scores)
