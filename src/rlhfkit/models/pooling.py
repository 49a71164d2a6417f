"""What a reward head reads from the trunk's final hidden states: the last token, their mean, or both.

``last`` (the default) is the hidden state at the last non-pad token (the appended EOS), which in a
causal trunk has attended to the whole text. ``mean`` averages the hidden states of all non-pad tokens
(prompt and response), so every position's state reaches the head directly; ``last_mean`` gives the
head both, side by side (twice the width).
"""

from __future__ import annotations

import torch

POOLINGS = ("last", "mean", "last_mean")


def check_pooling(pooling: str) -> str:
    """``pooling`` if it is one of :data:`POOLINGS`; else a ValueError naming the choices."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: unknown value {pooling!r}; use one of {', '.join(POOLINGS)}")
    return pooling


def pooled_width(hidden_size: int, pooling: str) -> int:
    """Width of the head's input for a trunk of ``hidden_size``."""
    return 2 * hidden_size if check_pooling(pooling) == "last_mean" else hidden_size


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions with mask 1 of each row; (b, T, E), (b, T) -> (b, E) (0 for an empty row)."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, index: torch.Tensor, pooling: str) -> torch.Tensor:
    """The head's input per row: the state at ``index[r]``, the masked mean, or both concatenated."""
    check_pooling(pooling)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    if pooling == "last":
        return last
    mean = masked_mean(hidden, attention_mask)
    return mean if pooling == "mean" else torch.cat([last, mean], dim=-1)
