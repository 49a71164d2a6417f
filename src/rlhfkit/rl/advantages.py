"""Advantage estimators and masked statistics: pure torch functions shared by every trainer.

Shapes: ``b`` = batch (responses), ``T`` = response length (right-padded, ``mask`` is 1 on real
tokens and a contiguous prefix of each row). Nothing here touches a model.
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1; ``values``/``mask`` broadcastable, e.g. (b, T)."""
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (0 when the mask is empty)."""
    total = masked_sum(values, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries of (b, T) ``values``; Bessel-corrected when ``unbiased``."""
    mean = masked_mean(values, mask)
    centered_sq = masked_sum((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased:
        return centered_sq / (count - 1).clamp(min=1)
    return centered_sq / count.clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries of ``values`` (b, T); masked-out entries -> 0.

    ``shift_mean=False`` keeps the mean and only rescales (used for rewards, whose sign matters).
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def _reverse_discount_matrix(length: int, factor: float, dtype: torch.dtype,
                             device: torch.device) -> torch.Tensor:
    """(T, T) upper-triangular matrix M with M[k, t] = factor**(k - t) for k >= t, else 0."""
    idx = torch.arange(length, device=device)
    power = (idx[:, None] - idx[None, :]).to(dtype)
    matrix = torch.pow(torch.tensor(factor, dtype=dtype, device=device), power.clamp(min=0))
    return matrix * (power >= 0).to(dtype)


def discounted_cumsum(values: torch.Tensor, factor: float) -> torch.Tensor:
    """out[:, t] = sum_{k >= t} factor**(k - t) * values[:, k] for (b, T) ``values``.

    One (b, T) x (T, T) matmul instead of a Python loop over T; exact for factor in [0, 1].
    """
    matrix = _reverse_discount_matrix(values.shape[-1], factor, values.dtype, values.device)
    return values @ matrix


def gae_loop(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
             lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation by the textbook reverse loop (Schulman et al. 2016, eq. 16).

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t);  A_t = delta_t + gamma * lam * A_{t+1};
    V beyond the last real token is 0 (the episode ends there). Inputs (b, T); returns
    (advantages, returns = advantages + values), both (b, T) and 0 where ``mask`` is 0.
    """
    values = values * mask
    rewards = rewards * mask
    length = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(length)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE as in :func:`gae_loop`, vectorised: deltas at once, then one discounted-cumsum matmul.

    Because ``mask`` is a contiguous prefix, deltas past the end are 0 and the reverse
    cumulative sum with factor gamma*lam equals the loop's recursion. Inputs/outputs (b, T).
    """
    values = values * mask
    rewards = rewards * mask
    next_values = torch.nn.functional.pad(values[:, 1:], (0, 1))
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = discounted_cumsum(deltas, gamma * lam) * mask
    return advantages, (advantages + values) * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Monte-Carlo return G_t = sum_{k >= t} gamma**(k - t) r_k (Williams 1992, REINFORCE); (b, T)."""
    return discounted_cumsum(rewards * mask, gamma) * mask


def _grouped(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D (b,), got shape {tuple(scores.shape)}")
    if group_size < 1 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores cannot be split into groups of {group_size}")
    return scores.view(-1, group_size)


def group_normalized_advantages(scores: torch.Tensor, group_size: int, scale_by_std: bool = True,
                                eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantage (Shao et al. 2024, DeepSeekMath eq. 3): (r_i - mean_group) / (std_group + eps).

    ``scores`` (b,) with the ``group_size`` completions of one prompt contiguous; returns (b,).
    ``scale_by_std=False`` gives Dr. GRPO's unscaled version (Liu et al. 2025). The std is
    Bessel-corrected as in the reference implementation; groups whose scores are all equal get 0.
    """
    groups = _grouped(scores, group_size)
    centered = groups - groups.mean(dim=1, keepdim=True)
    if scale_by_std and group_size > 1:
        std = groups.std(dim=1, keepdim=True)
        centered = centered / torch.where(std > 0, std + eps, torch.ones_like(std))
    return centered.reshape(-1)


def leave_one_out_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO advantage (Kool et al. 2019; Ahmadian et al. 2024): r_i - mean_{j != i} r_j, shape (b,).

    Equals k/(k-1) * (r_i - mean_group) for group size k; needs k >= 2.
    """
    if group_size < 2:
        raise ValueError("leave-one-out needs at least 2 completions per prompt (group_size >= 2)")
    groups = _grouped(scores, group_size)
    baseline = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).reshape(-1)
