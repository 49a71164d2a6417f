"""Padded rows packed into one run of their real positions, for a prompt prefill whose products skip the padding.

In a prefill of left-padded prompts, every product of a transformer block (projections, MLP) works on each
position alone, so it can run over the real positions only, packed one after another; only attention needs
the rows apart. The decode steppers (:mod:`rlhfkit.rl.cached_gpt2`, :mod:`rlhfkit.rl.cached_llama`) keep the
hidden states packed and unpack the queries, keys and values for attention (and the in-place cache, which
keeps the padded layout the decode steps read), then pack the attention's output again. Padding positions
get zero queries, keys and values: finite, and masked out of every real position's attention.
"""

from __future__ import annotations

import torch


class RowPacking:
    """Where the real (mask 1) positions of a (b, L) batch are: ``real``, their flat indices in row order."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.shape = tuple(mask.shape)
        self.real = mask.reshape(-1).nonzero().squeeze(-1)
        self.last = mask.sum(-1).cumsum(0) - 1  # each row's last real position, in the packed order

    @classmethod
    def of(cls, mask: torch.Tensor) -> RowPacking | None:
        """The packing of ``mask``, or None when it has no padding (the plain layout is already packed) or a row
        has no real position (it has no last one to predict from)."""
        return None if bool(mask.all()) or not bool(mask.any(-1).all()) else cls(mask)

    def packed(self, padded: torch.Tensor) -> torch.Tensor:
        """(b, L, ...) -> (real positions, ...)."""
        return padded.reshape(-1, *padded.shape[2:]).index_select(0, self.real)

    def padded(self, packed: torch.Tensor) -> torch.Tensor:
        """(real positions, ...) -> (b, L, ...), zeros at the padding."""
        out = packed.new_zeros((self.shape[0] * self.shape[1], *packed.shape[1:]))
        return out.index_copy_(0, self.real, packed).view(*self.shape, *packed.shape[1:])

    def last_rows(self, packed: torch.Tensor) -> torch.Tensor:
        """(real positions, ...) -> (b, ...): each row's last real position."""
        return packed.index_select(0, self.last)
