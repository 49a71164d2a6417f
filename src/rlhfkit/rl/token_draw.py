"""Drawing a sampled token from logits by a two-level inverse CDF, written so TorchScript compiles it.

:func:`inverse_cdf_draw` is the draw of every sampler that takes uniforms (:func:`rlhfkit.rl.rollout.sample_from_probs`);
:func:`sampled_pick` is a sampling step's whole choice (temperature, blocked tokens such as EOS before
``min_new_tokens``, top-k, top-p) and the chosen tokens' log-probs under the unfiltered distribution. Both run
eagerly as they are, or as TorchScript functions (:func:`rlhfkit.utils.torchscript.scripted`) in the row shards of
:mod:`rlhfkit.rl.sharded_decode`: ~40 small ops per step, which from Python take the GIL once each while the other
shard's thread wants it too (a GRPO-shaped rollout with ``min_new_tokens`` took 3-5% less once its blocked-EOS steps
were scripted too). The same ops in the same order either way: the same tokens, bit for bit.
"""

from __future__ import annotations

from typing import Optional, Tuple

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


def filter_logits(scores: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then top-p (nucleus, Holtzman et al. 2019) filtering: (b, V) -> (b, V) with -inf outside.

    Top-p keeps the smallest most-likely set whose probability reaches ``top_p`` (at least one token),
    the same rule as ``transformers``' TopPLogitsWarper.
    """
    if top_k > 0 and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores


def sampling_probs(scaled: torch.Tensor, logprobs: torch.Tensor, blocked: Optional[torch.Tensor], top_k: int,
                   top_p: float) -> torch.Tensor:
    """(b, V) probabilities to draw from: ``exp(logprobs)`` when nothing is filtered, else the softmax of the
    temperature-scaled logits with ``blocked`` token ids and what top-k / top-p cut at -inf."""
    if blocked is None and top_k <= 0 and top_p >= 1.0:
        return logprobs.exp()
    scores = scaled if blocked is None else scaled.index_fill(-1, blocked, float("-inf"))
    return torch.softmax(filter_logits(scores, top_k, top_p), dim=-1)


def sampled_pick(logits: torch.Tensor, temperature: float, uniform: torch.Tensor, block: int,
                 blocked: Optional[torch.Tensor] = None, top_k: int = 0, top_p: float = 1.0
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(b, V) float32 logits -> tokens (b,) drawn with ``uniform`` (b, 1) from ``softmax(logits / T)`` without the
    ``blocked`` ids and filtered by top-k / top-p, and their log-probs (b,) under the unfiltered ``softmax(logits / T)``:
    the whole choice of a sampling step."""
    scaled = logits if temperature == 1.0 else logits / temperature
    logprobs = torch.log_softmax(scaled, dim=-1)
    chosen = inverse_cdf_draw(sampling_probs(scaled, logprobs, blocked, top_k, top_p), uniform, block)
    return chosen, logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
