"""Per-head (or per-member) reward-model scores: the committee behind active selection and disagreement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlhfkit.models.reward_model import RewardEnsemble, RewardModel, pad_batch


@torch.no_grad()
def head_scores(model: RewardModel | RewardEnsemble, prompts: Sequence[str], responses: Sequence[str],
                normalized: bool = True, batch_size: int = 64) -> torch.Tensor:
    """Scores of every head (k-head model) or member (ensemble): (H, N), normalized by default.

    ``RewardModel.score_texts`` only returns the mean and std over heads; the committee needs
    each head's score, so this encodes and runs the forward itself.
    """
    if isinstance(model, RewardEnsemble):
        return torch.stack([head_scores(m, prompts, responses, normalized, batch_size).mean(0)
                            for m in model.members])
    was_training = model.training
    model.eval()
    sequences, _ = model.encode(prompts, responses)
    out = torch.empty((model.num_heads, len(sequences)), dtype=torch.float32)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = pad_batch([sequences[i] for i in chunk], model.pad_id, model.device)
        rewards = model(ids, mask).float()
        if normalized:
            rewards = model.normalize(rewards)
        out[:, torch.tensor(chunk)] = rewards.T.cpu()
    model.train(was_training)
    return out


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
