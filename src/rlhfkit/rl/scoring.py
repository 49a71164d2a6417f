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


@dataclass
class Scores:
    """Per-response (b,) scores: raw from the source, final after shaping, and flags."""

    raw: torch.Tensor
    final: torch.Tensor
    invalid: torch.Tensor
    non_finite: torch.Tensor
    uncertainty: torch.Tensor | None = None
    gold: torch.Tensor | None = None

    def metrics(self) -> dict[str, float]:
        """reward/* metrics (and gold/* when a gold reward is configured)."""
        raw = describe(self.raw)
        out = {"reward/mean": self.final.mean().item(), "reward/std": self.final.std(unbiased=False).item(),
               "reward/raw_mean": raw["mean"], "reward/raw_std": raw["std"],
               "reward/invalid_frac": self.invalid.float().mean().item(),
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


def score_rollout(rollout: Rollout, reward: EnsembleReward, config: RewardConfig,
                  moments: RunningMoments, gold: RewardSource | None = None) -> Scores:
    """Score responses, then: non-finite check, clip, scale, and invalid-response replacement.

    Invalid responses get ``invalid_score`` (in the same normalized units as the model's
    scores), or lose ``missing_eos_penalty``; this keeps truncated or empty responses from
    out-scoring the reference baseline when a reward model over-rates them.
    """
    output = reward.score(rollout.prompts, rollout.responses)
    raw = output.scores.float()
    non_finite = check_scores(raw, rollout.prompts, rollout.responses, reward.name, config.non_finite)
    scores = torch.where(non_finite, torch.zeros_like(raw), raw)
    scores = clip_scores(scores, config.clip)
    finite = scores[~non_finite]
    if config.scaling == "running" and finite.numel():
        moments.update(finite)
        scores = scores / max(moments.std, 1e-8)
    elif config.scaling == "batch" and finite.numel() > 1:
        scores = scores / (finite.std() + 1e-8)
    elif config.scaling == "whiten" and finite.numel() > 1:
        scores = (scores - finite.mean()) / (finite.std() + 1e-8)
    invalid = invalid_responses(rollout, config.penalize_empty)
    if config.missing_eos_penalty is not None:
        scores = replace_invalid_scores(scores, invalid, penalty=config.missing_eos_penalty)
    else:
        scores = replace_invalid_scores(scores, invalid, replacement=config.invalid_score)
    gold_scores = gold(rollout.prompts, rollout.responses).float() if gold is not None else None
    return Scores(raw=raw, final=scores, invalid=invalid, non_finite=non_finite,
                  uncertainty=output.std, gold=gold_scores)
