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

