"""How PPO, GRPO, RLOO and REINFORCE differ, in one place: only the advantage estimate.

Everything else is one trainer (:mod:`rlhfkit.rl.onpolicy`): sample num_prompts x group_size
responses, score them, reference log-probs, per-token rewards (score at the last token, minus
beta * KL when the KL goes in the reward), advantages by the table below, epochs of clipped updates.

| algorithm | baseline | value model | advantage of token t |
|---|---|---|---|
| ppo | learned V(s_t) | head or critic | GAE(gamma, lambda) of the per-token rewards, whitened |
| grpo | group mean | none | R - mean(R of the group) (/ group std with scale_by_std) |
| rloo | leave-one-out mean | none | R - mean(R of the other group members) |
| reinforce | batch mean | none | discounted return from t, whitened over the batch |

R is a response's summed per-token reward (its score minus beta * its KL estimate when kl_in=reward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.rl.advantages import (
    discounted_returns,
    gae,
    group_normalized_advantages,
    leave_one_out_advantages,
    masked_whiten,
)


@dataclass(frozen=True)
class AdvantageSettings:
    """The config values an advantage estimator reads."""

    group_size: int
    gamma: float
    lam: float
    scale_by_std: bool
    whiten: bool


def compute_advantages(algo: str, token_rewards: torch.Tensor, values: torch.Tensor | None, mask: torch.Tensor,
                       settings: AdvantageSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(advantages (b, R), value targets (b, R) or None) of ``algo`` from per-token rewards (b, R)."""
    match algo:
        case "ppo":
            if values is None:
                raise ValueError("PPO needs a value model: load the bundle with value='head' or value='critic'")
            advantages, returns = gae(token_rewards, values, mask, settings.gamma, settings.lam)
            return (masked_whiten(advantages, mask) if settings.whiten else advantages), returns
        case "grpo":
            per_sequence = group_normalized_advantages(token_rewards.sum(1), settings.group_size,
                                                       settings.scale_by_std)
        case "rloo":
            per_sequence = leave_one_out_advantages(token_rewards.sum(1), settings.group_size)
        case "reinforce":
            returns = discounted_returns(token_rewards, mask, settings.gamma)
            return (masked_whiten(returns, mask) if settings.whiten else returns), None
        case _:
            raise ValueError(f"unknown algorithm {algo!r}; choose ppo, grpo, rloo or reinforce")
    return per_sequence[:, None] * mask, None


def needs_value_model(algo: str) -> bool:
    """Whether ``algo`` learns a value function (only PPO)."""
    return algo == "ppo"
