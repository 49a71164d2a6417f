"""Reward-model losses for every kind of feedback, as small pure torch functions.

Each function returns one loss per record (shape ``(b,)``) so callers can weight records
(annotator reliability, bootstrap weights) and mix kinds with :func:`mixture_loss`.
This module imports only torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

# Distance of the outer pseudo-thresholds in the cumulative-link model; exp(-BIG) == 0 in float32.
_OUTER_THRESHOLD = 1.0e4


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                       tie: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Negative log-likelihood of pairwise preferences under Bradley-Terry (1952).

    chosen, rejected: (b,) rewards. margin: (b,) required reward gap, 0 for none (Llama 2,
    Touvron et al. 2023, eq. 2: ``-log σ(r_c - r_r - m)``). label_smoothing ε: the label is
    wrong with probability ε, ``-(1-ε) log σ(d) - ε log σ(-d)``. tie: (b,) bool; a tie counts as
    half a win each way, ``-½ log σ(d₀) - ½ log σ(-d₀)`` with d₀ = r_c - r_r (margin ignored),
    which is minimal at d₀ = 0. Returns (b,) losses.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    diff = chosen - rejected
    shifted = diff if margin is None else diff - margin
    loss = -(1.0 - label_smoothing) * F.logsigmoid(shifted) - label_smoothing * F.logsigmoid(-shifted)
    if tie is not None:
        tie_loss = -0.5 * F.logsigmoid(diff) - 0.5 * F.logsigmoid(-diff)
        loss = torch.where(tie.bool(), tie_loss, loss)
    return loss


def preference_probability(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """P(chosen ≻ rejected) = σ(r_c - r_r) under Bradley-Terry; (b,) -> (b,)."""
    return torch.sigmoid(chosen - rejected)


def plackett_luce_loss(scores: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of rankings under Plackett-Luce (Plackett 1975; Luce 1959).

    scores: (b, k) rewards; ranks: (b, k) integers, 1 = best; mask: (b, k) bool, False for
    padding slots of rankings shorter than k. Ties use Breslow's approximation (Breslow 1974):
    every item i contributes ``log Σ_{l: rank_l >= rank_i} exp(s_l) - s_i``, so tied items share one
    risk set. Without ties this is the exact PL likelihood (the last item adds 0); for k = 2 it
    equals Bradley-Terry; within a tied group it is minimal when the scores are equal.
    Returns (b,) losses (the sum over items, not the mean).
    """
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    mask = mask.bool()
    # risk[b, i, l]: item l is still "in the race" when item i is chosen.
    risk = (ranks.unsqueeze(1) >= ranks.unsqueeze(2)) & mask.unsqueeze(1)
    expanded = scores.unsqueeze(1).expand(-1, scores.shape[1], -1)
    log_denominator = torch.logsumexp(expanded.masked_fill(~risk, float("-inf")), dim=-1)
    terms = torch.where(mask, log_denominator - scores, torch.zeros_like(scores))
    return terms.sum(dim=-1)


def rating_regression_loss(rewards: torch.Tensor, normalized_ratings: torch.Tensor) -> torch.Tensor:
    """Squared error to ratings normalized onto [0, 1] and centred to [-1, 1]: ``(r - (2y - 1))²``.

    Centring puts a mid-scale rating at reward 0 and keeps the scale comparable with
    Bradley-Terry rewards in a mixed model. rewards, normalized_ratings: (b,) -> (b,).
    """
    return (rewards - (2.0 * normalized_ratings - 1.0)) ** 2


def ordered_thresholds(raw: torch.Tensor) -> torch.Tensor:
    """Strictly increasing cut points θ from free parameters: θ₀ = raw₀, θⱼ = θⱼ₋₁ + softplus(rawⱼ).

    raw: (K-1,) -> (K-1,) for K ordered levels.
    """
    steps = F.softplus(raw[1:])
    return torch.cat([raw[:1], raw[:1] + torch.cumsum(steps, dim=0)])


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2 (Mächler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def cumulative_link_loss(rewards: torch.Tensor, levels: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Ordinal (cumulative-logit) NLL, McCullagh (1980): P(Y <= j | r) = σ(θⱼ - r).

    rewards: (b,); levels: (b,) integers in [0, K-1]; thresholds: (K-1,) increasing (see
    :func:`ordered_thresholds`). P(Y = j) = σ(a) - σ(b) with a = θⱼ - r, b = θⱼ₋₁ - r, computed as
    ``log σ(a) + log σ(-b) + log(1 - exp(b - a))`` (θ₋₁ = -∞, θ_{K-1} = +∞). Returns (b,).
    """
    big = torch.full((1,), _OUTER_THRESHOLD, dtype=thresholds.dtype, device=thresholds.device)
    extended = torch.cat([thresholds[:1] - big, thresholds, thresholds[-1:] + big])
    levels = levels.long()
    upper, lower = extended[levels + 1], extended[levels]
    log_prob = F.logsigmoid(upper - rewards) + F.logsigmoid(rewards - lower) + _log1mexp(lower - upper)
    return -log_prob


def label_bce_loss(rewards: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy for good/bad labels with P(good) = σ(r); (b,), (b,) -> (b,)."""
    return F.binary_cross_entropy_with_logits(rewards, labels.to(rewards.dtype), reduction="none")


def weighted_sum(losses: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σᵢ wᵢ·lossᵢ (plain sum when ``weights`` is None); (b,) -> scalar."""
    return losses.sum() if weights is None else (losses * weights.to(losses.dtype)).sum()


def mixture_loss(losses: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor | None],
                 kind_weights: Mapping[str, float],
                 denominators: Mapping[str, float] | None = None) -> torch.Tensor:
    """Weighted mixture of per-kind losses: ``Σ_k λ_k · Σᵢ w_{k,i} ℓ_{k,i} / D_k``.

    losses[k], weights[k]: (b_k,) per-record losses and weights of kind k; kind_weights λ_k;
    D_k defaults to Σᵢ w_{k,i} (a weighted mean per kind). Pass the denominators of the whole
    optimizer step when accumulating gradients so micro-batches sum to the full-batch loss.
    Kinds absent from ``losses`` contribute 0. Returns a scalar.
    """
    total: torch.Tensor | None = None
    for kind, kind_losses in losses.items():
        if kind_losses.numel() == 0:
            continue
        record_weights = weights.get(kind)
        numerator = weighted_sum(kind_losses, record_weights)
        if denominators is not None:
            denominator = denominators[kind]
        else:
            denominator = float(kind_losses.numel()) if record_weights is None else float(record_weights.sum())
        if denominator <= 0:
            continue
        term = kind_weights.get(kind, 1.0) * numerator / denominator
        total = term if total is None else total + term
    if total is None:
        reference = next(iter(losses.values()), torch.zeros(()))
        return reference.new_zeros(())
    return total
