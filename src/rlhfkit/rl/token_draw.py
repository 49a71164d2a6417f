"""Drawing a sampled token from logits by a two-level inverse CDF, written so TorchScript compiles it.

:func:`inverse_cdf_draw` is the draw of every sampler that takes uniforms (:func:`rlhfkit.rl.rollout.sample_from_probs`);
:func:`sampled_pick` is a plain sampling step's whole choice (temperature, no top-k/top-p, no blocked tokens) and the
chosen tokens' log-probs. Both run eagerly as they are, or as TorchScript functions (:func:`rlhfkit.utils.torchscript.scripted`) in the row
shards of :mod:`rlhfkit.rl.sharded_decode`: ~40 small ops per step, which from Python take the GIL once each while
the other shard's thread wants it too. The same ops in the same order either way: the same tokens, bit for bit.
"""

from __future__ import annotations

from typing import Tuple

import torch

CDF_BLOCK = 64  # tokens per block of the two-level CDF


def last_positive(values: torch.Tensor) -> torch.Tensor:
    """(b, n) non-negative values -> (b, 1) index of each row's last positive entry (0 if none)."""
    positions = torch.arange(values.shape[-1], device=values.device)
    return torch.where(values > 0, positions, 0).amax(dim=-1, keepdim=True)


def inverse_cdf_draw(probs: torch.Tensor, uniform: torch.Tensor, block: int) -> torch.Tensor:
    """(b, V) probabilities and (b, 1) float64 uniforms -> (b,) drawn indices: one CDF over blocks of ``block``
    tokens, then one inside the chosen block, in float64 so small probabilities keep their share (a float64
    cumsum over a whole 4,096-token vocabulary cost 2.3 ms of a 10 ms CPU decode step). Zero-probability tokens
    have empty intervals and are never drawn; rounding that puts the target past the CDF's end falls back to the
    last block / token with mass."""
    rows, vocab = probs.shape[0], probs.shape[1]
    blocks = (vocab + block - 1) // block
    grid = torch.nn.functional.pad(probs, [0, blocks * block - vocab]).view(rows, blocks, block)
    block_mass = grid.sum(dim=-1, dtype=torch.float64)
    block_cdf = block_mass.cumsum(dim=-1)
    target = uniform * block_cdf[:, -1:]
    chosen_block = torch.minimum(torch.searchsorted(block_cdf, target, right=True), last_positive(block_mass))
    start = torch.where(chosen_block > 0, block_cdf.gather(1, (chosen_block - 1).clamp(min=0)), 0.0)
    inside = grid.gather(1, chosen_block.unsqueeze(-1).expand(rows, 1, block)).squeeze(1).double()
    offset = torch.minimum(torch.searchsorted(inside.cumsum(dim=-1), target - start, right=True),
                           last_positive(inside))
    return (chosen_block * block + offset).squeeze(1)


def sampled_pick(logits: torch.Tensor, temperature: float, uniform: torch.Tensor, block: int
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(b, V) float32 logits -> tokens (b,) drawn from ``softmax(logits / T)`` with ``uniform`` (b, 1), and their
    log-probs (b,): the choice of a sampling step without top-k, top-p or blocked tokens."""
    scaled = logits if temperature == 1.0 else logits / temperature
    logprobs = torch.log_softmax(scaled, dim=-1)
    chosen = inverse_cdf_draw(logprobs.exp(), uniform, block)
    return chosen, logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
