"""Position ids of left-padded batches, shared by the value models and the RL forward passes."""

from __future__ import annotations

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of a left-padded batch: (b, T) mask -> (b, T) ``cumsum(mask) - 1``, 0 on padding.

    The positions transformers' ``generate`` uses, so a later forward pass reproduces sampled log-probs.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)
