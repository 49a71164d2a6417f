"""Critic-free policy gradient on groups of samples: GRPO, RLOO and REINFORCE.

GRPO (Shao et al. 2024): group-normalised advantages, KL to the reference as a k3 loss term.
RLOO (Ahmadian et al. 2024, after Kool et al. 2019): leave-one-out baseline, KL in the reward.
REINFORCE (Williams 1992): discounted returns of the KL-shaped per-token reward, whitened over
the batch (the batch mean acts as the baseline). All three share rollout, scoring, KL, the
clipped surrogate loss and the guarded optimizer step with PPO; only the advantage differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import torch

from rlhfkit.models.loading import PolicyBundle
from rlhfkit.rl.advantages import (
    discounted_returns,
    group_normalized_advantages,
    leave_one_out_advantages,
    masked_whiten,
)
from rlhfkit.rl.config import PolicyGradientConfig
from rlhfkit.rl.epochs import micro_batch, run_epochs
from rlhfkit.rl.forward import policy_forward
from rlhfkit.rl.guard import first_non_finite
from rlhfkit.rl.harness import Harness, run_loop, sampling_params, warn_negative_kl
from rlhfkit.rl.kl import kl_estimate
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.losses import aggregate, ppo_policy_loss, shape_token_rewards
from rlhfkit.rl.rewards import EnsembleReward, RewardSource
from rlhfkit.rl.rollout import Rollout, Sampler
from rlhfkit.rl.scoring import Scores, score_rollout
from rlhfkit.utils.tracking import Tracker


@dataclass
class GroupBatch:
    """A scored group rollout ready for updates; tensors (b, R) unless noted, b = prompts x group."""

    sequences: torch.Tensor        # (b, P + R)
    attention_mask: torch.Tensor   # (b, P + R)
    response_start: int
    mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    advantages: torch.Tensor


def group_advantages(algo: str, scores: torch.Tensor, token_rewards: torch.Tensor, mask: torch.Tensor,
                     config: PolicyGradientConfig) -> torch.Tensor:
    """Per-token advantages (b, R) for ``algo`` from sequence ``scores`` (b,) or ``token_rewards`` (b, R)."""
    match algo:
        case "grpo":
            per_sequence = group_normalized_advantages(scores, config.group_size, config.scale_by_std)
        case "rloo":
            per_sequence = leave_one_out_advantages(scores, config.group_size)
        case "reinforce":
            returns = discounted_returns(token_rewards, mask, config.gamma)
            return masked_whiten(returns, mask) if config.whiten_advantages else returns
        case _:
            raise ValueError(f"unknown algorithm {algo!r}; choose grpo, rloo or reinforce")
    return per_sequence[:, None] * mask


class PolicyGradientTrainer:
    """GRPO / RLOO / REINFORCE over a :class:`PolicyBundle` (no value model needed)."""

    def __init__(self, config: PolicyGradientConfig, bundle: PolicyBundle, reward: EnsembleReward,
                 prompts: list[str], sampler: Sampler, tracker: Tracker | None = None,
                 gold: RewardSource | None = None) -> None:
        if config.algo == "rloo" and config.group_size < 2:
            raise ValueError("RLOO needs group_size >= 2")
        self.config = config
        self.bundle = bundle
        self.reward = reward
        self.gold = gold
        self.sampler = sampler
        self.params = sampling_params(config.generation)
        self.harness = Harness(config.run, config.optim, config.kl, bundle, prompts,
                               config.epochs * config.num_minibatches, config, tracker)
        self.kl_in = config.kl_in if config.kl_in != "auto" else ("loss" if config.algo == "grpo" else "reward")

    def train(self) -> list[dict[str, float]]:
        """Run until ``run.steps``; returns the metrics of each step."""
        return run_loop(self.harness, self.train_step, self.config.algo)

    def train_step(self) -> dict[str, float]:
        """One iteration: group rollout, advantages, updates. Returns its metrics."""
        h, cfg = self.harness, self.config
        start = time.perf_counter()
        prompts = [p for p in h.stream.next_batch(cfg.num_prompts) for _ in range(cfg.group_size)]
        with h.timer.phase("generation"):
            rollout = self.sampler.sample(self.bundle.policy, self.bundle.tokenizer, prompts, self.params,
                                          generator=h.sample_generator)
        with h.timer.phase("scoring"):
            scores = score_rollout(rollout, self.reward, cfg.reward, h.moments, self.gold)
        batch, metrics = self.make_batch(rollout, scores)
        bad = "a reward" if bool(scores.non_finite.any()) else first_non_finite(advantages=batch.advantages)
        if bad is not None:
            h.guard.skip(f"{bad} is not finite", h.step)
            metrics["train/skipped_step"] = 1.0
        else:
            with h.timer.phase("training"):
                metrics.update(self.update(batch))
            h.kl_controller.update(metrics["kl/mean"], len(prompts))
        elapsed = time.perf_counter() - start
        metrics["perf/tokens_per_s"] = float(rollout.response_mask.sum()) / elapsed
        metrics["perf/completions_per_s"] = len(prompts) / elapsed
        return metrics

    def make_batch(self, rollout: Rollout, scores: Scores) -> tuple[GroupBatch, dict[str, float]]:
        """Reference log-probs (when KL is on), KL, and the algorithm's advantages, once per rollout."""
        h, cfg = self.harness, self.config
        seqs, attn, start = rollout.sequences, rollout.attention_mask, rollout.response_start
        mask = rollout.response_mask.to(torch.float32)
        old_logprobs = rollout.logprobs * mask
        ref_logprobs = None
        kl = torch.zeros_like(mask)
        if h.kl_controller.value > 0:
            with h.timer.phase("reference"), self.bundle.reference() as reference:
                ref_logprobs = token_logprobs(reference, seqs, attn, start, cfg.generation.temperature) * mask
            kl = kl_estimate(old_logprobs, ref_logprobs, cfg.kl.estimator) * mask
        beta = h.kl_controller.value if self.kl_in == "reward" else 0.0
        final = scores.final.to(mask.device)
        token_rewards, _ = shape_token_rewards(final, kl, mask, beta)
        advantages = group_advantages(cfg.algo, token_rewards.sum(1), token_rewards, mask, cfg)
        kl_mean = kl.sum(1).mean().item()
        grouped = final.view(-1, cfg.group_size)
        metrics = {**scores.metrics(), "kl/mean": kl_mean,
                   "kl/negative_warning": float(warn_negative_kl(kl_mean, h.step)),
                   "reward/group_std": grouped.std(1).mean().item() if cfg.group_size > 1 else 0.0,
                   "response/length_mean": mask.sum(1).mean().item(),
                   "response/finished_frac": rollout.finished.float().mean().item()}
        return GroupBatch(seqs, attn, start, mask, old_logprobs, ref_logprobs, advantages), metrics

    def update(self, batch: GroupBatch) -> dict[str, float]:
        """epochs x mini-batches of guarded optimizer steps on the clipped surrogate (+ KL term)."""
        h, cfg = self.harness, self.config
        metrics, _ = run_epochs(h.optimizer_step, batch.mask, partial(self.loss, batch), epochs=cfg.epochs,
                                num_minibatches=cfg.num_minibatches, grad_accum=cfg.grad_accum,
                                aggregation=cfg.loss_aggregation, generator=h.shuffle_generator, step=h.step)
        return metrics

    def loss(self, batch: GroupBatch, idx: torch.Tensor, denominator: float,
             tokens: float) -> tuple[torch.Tensor, dict[str, float]]:
        """This micro-batch's share of the mini-batch loss, and its share of the diagnostics."""
        cfg = self.config
        part = micro_batch(batch, idx)
        ids, attn, mask, rcols, start = part.ids, part.attn, part.mask, part.rcols, part.response_start
        logprobs, entropy, _ = policy_forward(self.bundle.policy, ids, attn, start, cfg.generation.temperature,
                                              with_entropy=True)
        assert entropy is not None
        policy = ppo_policy_loss(logprobs, batch.old_logprobs[idx][:, rcols], batch.advantages[idx][:, rcols], mask,
                                 cfg.clip_range, cfg.clip_range_high)
        per_token = policy.per_token
        kl_term = torch.zeros((), device=mask.device)
        if self.kl_in == "loss" and batch.ref_logprobs is not None:
            kl_tokens = kl_estimate(logprobs, batch.ref_logprobs[idx][:, rcols], cfg.kl.estimator)
            per_token = per_token + self.harness.kl_controller.value * kl_tokens
            kl_term = aggregate(kl_tokens.detach(), mask, cfg.loss_aggregation, denominator)
        entropy_term = aggregate(entropy if cfg.entropy_coef else entropy.detach(), mask, cfg.loss_aggregation,
                                 denominator)
        loss = aggregate(per_token, mask, cfg.loss_aggregation, denominator) - cfg.entropy_coef * entropy_term
        share = float(mask.sum()) / max(tokens, 1.0)
        stats = {"loss/policy": aggregate(policy.per_token.detach(), mask, cfg.loss_aggregation, denominator).item(),
                 "loss/kl": kl_term.item(), "loss/total": loss.item(), "policy/entropy": entropy_term.item(),
                 "policy/clipfrac": policy.clipfrac.item() * share, "policy/approx_kl": policy.approx_kl.item() * share}
        return loss, stats
