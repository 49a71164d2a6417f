"""What a pretrained LM knows about a response: its mean next-token log-probability under the trunk's own LM head.

A linear head on pooled hidden states cannot compute a likelihood (each token's log-probability is
``h_{t-1} . e(y_t)`` normalized over the vocabulary), yet a base that has read the sources a response
draws on finds a supported answer likelier. :class:`RewardHead` gives the reward head that number as one
more input, one weight per head starting at 0, so training decides how much it counts.
"""

from __future__ import annotations

import torch
from torch import nn

from rlhfkit.rl.logprobs import fused_logprobs


def response_mask(attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """True at each row's response positions: from ``response_start[r]`` to its last non-pad token; (b, T) bool.

    Position 0 is never a response position (no token before it predicts it).
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    start = response_start.to(attention_mask.device).clamp_min(1)[:, None]
    return (positions[None, :] >= start) & attention_mask.bool()


def mean_response_logprob(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          response_start: torch.Tensor, output_embeddings: nn.Module) -> torch.Tensor:
    """Mean log p(token_t | tokens_<t) over each row's response positions; (b,) float32 (0 for a row without any).

    ``hidden`` (b, T, E) are the trunk's final hidden states; logits are formed only where a response
    token is predicted, and the log-softmax is fused (no (b, T, V) tensor).
    """
    targets = response_mask(attention_mask, response_start)[:, 1:]
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets)[targets]
    logits = output_embeddings(hidden[:, :-1][targets])
    logprobs, _ = fused_logprobs(logits.float(), input_ids[:, 1:][targets], consume=True)
    totals = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device).index_add(0, rows, logprobs)
    counts = targets.sum(dim=-1).clamp_min(1).to(torch.float32)
    return totals / counts


class RewardHead(nn.Linear):
    """Linear reward head; with ``likelihood`` also a weight per head (from 0) on the mean response log-probability.

    ``reward_h = W_h . pooled + b_h + gain * likelihood_weight_h * mean_logprob``. The extra weight lives in
    the head so that it trains at the head's learning rate and is saved with it. Adam moves every weight by
    about the learning rate per step, so the ``width`` pooled weights together move the reward ~``width``
    times faster than one weight could; ``gain = width`` lets the likelihood keep pace. (On real preferences,
    bench/reward_real.py fold 0: gain 1 left the weight at 0.02 and the model at 0.517, sqrt(width) 0.532,
    width 0.553, while the trunk's likelihood alone ranked 0.572.)
    """

    def __init__(self, width: int, num_heads: int, likelihood: bool = False) -> None:
        super().__init__(width, num_heads)
        self.likelihood_weight = nn.Parameter(torch.zeros(num_heads)) if likelihood else None
        self.likelihood_gain = float(width)

    def forward(self, pooled: torch.Tensor, mean_logprob: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head rewards (b, num_heads) from the pooled states (b, width) and, when the head reads it, (b,)."""
        rewards = super().forward(pooled)
        if self.likelihood_weight is None:
            return rewards
        if mean_logprob is None:
            raise ValueError("this reward head reads the response's log-likelihood: pass mean_logprob")
        weight = self.likelihood_gain * self.likelihood_weight.to(rewards.dtype)
        return rewards + mean_logprob.to(rewards.dtype)[:, None] * weight
