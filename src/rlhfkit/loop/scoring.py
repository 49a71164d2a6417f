"""Per-head (or per-member) reward-model scores: the committee behind active selection and disagreement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlhfkit.models.reward_model import RewardEnsemble, RewardModel


def head_scores(model: RewardModel | RewardEnsemble, prompts: Sequence[str], responses: Sequence[str],
                normalized: bool = True, batch_size: int = 64) -> torch.Tensor:
    """Scores of every head (of every ensemble member): (H, N), normalized by default.

    The committee's layout (one row per head) of ``score_texts(..., per_head=True)``, which is (N, H).
    """
    return model.score_texts(prompts, responses, normalized=normalized, batch_size=batch_size, per_head=True).T


def load_scorer(path: str, device: Any = None) -> RewardModel | RewardEnsemble:
    """A reward model (or ensemble) directory, in eval mode on ``device``."""
    from rlhfkit.models.reward_model import load_reward_model

    return load_reward_model(path, device=device).eval()


class ConservativeReward:
    """Reward of a k-head model (or ensemble) as mean - coef * std over heads: (b,) float32.

    The ensemble lower bound of Coste et al. (2024), "Reward Model Ensembles Help Mitigate
    Overoptimization": responses the heads disagree on earn less, so the policy is pulled less far
    outside the feedback's distribution. With one head (or coef 0) it is the plain normalized score.
    """

    def __init__(self, model: RewardModel | RewardEnsemble, coef: float, name: str, normalized: bool = True) -> None:
        self.model, self.coef, self.name, self.normalized = model, coef, name, normalized

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Scores of ``responses`` to ``prompts``."""
        heads = head_scores(self.model, prompts, responses, normalized=self.normalized)
        spread = heads.std(0, unbiased=False) if heads.shape[0] > 1 else torch.zeros(heads.shape[1])
        return heads.mean(0) - self.coef * spread
