"""Policy-optimization losses and reward shaping: pure torch functions with (b, T) shapes.

``b`` = responses, ``T`` = response tokens, ``mask`` (b, T) is 1 on real response tokens
(a contiguous prefix, including the EOS token). Per-token losses are returned unreduced so
the trainer can normalise over a whole accumulated mini-batch (see :func:`aggregate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from rlhfkit.rl.advantages import masked_mean
from rlhfkit.rl.kl import capped_exp, kl_k3

LossAggregation = Literal["token_mean", "seq_mean"]
DPOLossType = Literal["sigmoid", "ipo"]


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: LossAggregation,
              denominator: float | None = None) -> torch.Tensor:
    """Reduce a (b, T) per-token loss to a scalar.

    token_mean: sum over all real tokens / token count (PPO as in Ouyang et al. 2022, DAPO).
    seq_mean: mean over tokens of each sequence, then mean over sequences (GRPO paper, eq. 3).
    ``denominator`` replaces the token (or sequence) count, so micro-batches of one accumulated
    mini-batch sum to exactly the loss of the whole mini-batch.
    """
    match mode:
        case "token_mean":
            total = (per_token * mask).sum()
            count = mask.sum().clamp(min=1) if denominator is None else denominator
            return total / count
        case "seq_mean":
            per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
            count = per_seq.new_tensor(per_seq.shape[0]) if denominator is None else denominator
            return per_seq.sum() / count
    raise ValueError(f"unknown loss aggregation {mode!r}; choose token_mean or seq_mean")


@dataclass
class PolicyLossOutput:
    """Per-token clipped policy loss (b, T) and scalar diagnostics over the masked tokens."""

    per_token: torch.Tensor
    clipfrac: torch.Tensor
    approx_kl: torch.Tensor
    ratio_mean: torch.Tensor


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_low: float = 0.2,
                    clip_high: float | None = None) -> PolicyLossOutput:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), negated for minimisation.

    L_t = max(-A_t * r_t, -A_t * clip(r_t, 1 - clip_low, 1 + clip_high)), r_t = exp(logp - old_logp).
    ``clip_high`` defaults to ``clip_low`` (DAPO's "clip-higher" when larger). All inputs (b, T).
    approx_kl is Schulman's k3 estimate of KL(old || new): mean((r - 1) - log r).
    r_t is exact up to log r_t = 20 (far outside any clip range) and continues linearly above
    (:func:`capped_exp`), so finite inputs never give an inf or NaN loss.
    """
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio = logprobs - old_logprobs
    ratio = capped_exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(kl_k3(old_logprobs, logprobs), mask)
        ratio_mean = masked_mean(ratio, mask)
    return PolicyLossOutput(per_token, clipfrac, approx_kl, ratio_mean)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip_range: float | None = 0.2
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Value loss 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, +-eps).

    Value clipping as in the PPO reference code (baselines ppo2) and Ziegler et al. 2019;
    ``clip_range=None`` gives the plain squared error. Inputs (b, T); returns the per-token loss
    (b, T) and the fraction of masked tokens where the clipped term was the larger one.
    """
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * unclipped, values.new_zeros(())
    values_clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    clipped = (values_clipped - returns) ** 2
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return 0.5 * torch.maximum(unclipped, clipped), clipfrac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy H = logsumexp(z) - sum softmax(z) * z of each categorical; (b, T, V) -> (b, T)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[target - predicted] / Var[target] over masked entries (1 = perfect critic)."""
    residual = target - predicted
    mean_t = masked_mean(target, mask)
    var_t = masked_mean((target - mean_t) ** 2, mask)
    mean_r = masked_mean(residual, mask)
    var_r = masked_mean((residual - mean_r) ** 2, mask)
    return 1.0 - var_r / var_t.clamp(min=1e-12)


@dataclass
class DPOOutput:
    """Per-pair DPO losses (b,) and the implied rewards beta * (log pi - log pi_ref) (b,)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, loss_type: DPOLossType = "sigmoid",
             label_smoothing: float = 0.0) -> DPOOutput:
    """DPO (Rafailov et al. 2023, eq. 7), conservative DPO, or IPO (Azar et al. 2023, eq. 17).

    Inputs are (b,) sequence log-probs. With h = (log pi_c - log ref_c) - (log pi_r - log ref_r):
      sigmoid: -(1 - eps) * log sigmoid(beta h) - eps * log sigmoid(-beta h)
               (eps = label_smoothing, cDPO: Mitchell 2023, "A note on DPO with noisy preferences");
      ipo:     (h - 1 / (2 beta))^2.
    The IPO paper defines h on whole-sequence log-probs and does not length-normalize; averaging
    the log-probs over response tokens is our choice (as in TRL's ipo loss), made by the caller:
    the DPO trainer passes token-averaged log-probs for ipo. label_smoothing exists only for
    sigmoid and is refused under ipo rather than ignored.
    """
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    h = chosen_logratio - rejected_logratio
    match loss_type:
        case "sigmoid":
            if not 0.0 <= label_smoothing < 0.5:
                raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
            losses = (-(1.0 - label_smoothing) * F.logsigmoid(beta * h)
                      - label_smoothing * F.logsigmoid(-beta * h))
        case "ipo":
            if label_smoothing != 0.0:
                raise ValueError(f"label_smoothing={label_smoothing} applies only to loss_type sigmoid "
                                 "(cDPO); IPO has no label smoothing, set label_smoothing=0")
            losses = (h - 1.0 / (2.0 * beta)) ** 2
        case _:
            raise ValueError(f"unknown DPO loss type {loss_type!r}; choose sigmoid or ipo")
    return DPOOutput(losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach())


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row of a (b, T) prefix mask; 0 for empty rows. (b,)"""
    return (mask.sum(1).long() - 1).clamp(min=0)


def shape_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                        kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token reward r_t = -beta * KL_t, plus the sequence score at the last real token.

    The RLHF reward of Ziegler et al. 2019 (eq. 2) / Stiennon et al. 2020 spread over tokens.
    ``scores`` (b,), ``kl`` and ``mask`` (b, T). Returns (rewards, kl_penalty), both (b, T).
    Rows with an empty mask receive nothing (their score is dropped rather than misplaced).
    """
    penalty = -kl_coef * kl * mask
    rewards = penalty.clone()
    nonempty = (mask.sum(1) > 0).to(scores.dtype)
    rewards[torch.arange(scores.shape[0], device=scores.device), last_token_index(mask)] += scores * nonempty
    return rewards, penalty


def replace_invalid_scores(scores: torch.Tensor, invalid: torch.Tensor,
                           replacement: float | None = None, penalty: float | None = None
                           ) -> torch.Tensor:
    """Score replacement or penalty for invalid responses (e.g. never emitted EOS, empty).

    ``replacement`` sets the score (Ziegler et al. 2019 gave truncated samples -1 in normalised
    units); otherwise ``penalty`` is subtracted (TRL's missing_eos_penalty). (b,) in, (b,) out.
    """
    if replacement is not None:
        return torch.where(invalid, torch.full_like(scores, replacement), scores)
    if penalty is not None:
        return scores - penalty * invalid.to(scores.dtype)
    return scores


def clip_scores(scores: torch.Tensor, bound: float | None) -> torch.Tensor:
    """Clamp scores to [-bound, bound] (no-op for None); guards against outlier RM outputs."""
    return scores if bound is None else scores.clamp(-bound, bound)
