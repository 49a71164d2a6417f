"""PPO for language models, after Ziegler et al. (2019), Stiennon et al. (2020), Ouyang et al. (2022)
and the "N implementation details of RLHF with PPO" (Huang et al. 2023).

One step reads top to bottom: sample -> score -> reference log-probs and old values (once per
rollout) -> per-token KL-shaped rewards -> GAE -> whitened advantages -> epochs x mini-batches
of clipped policy + clipped value loss -> KL-controller update. Every piece of math lives in
``advantages``/``kl``/``losses``; state and checkpoints in ``harness``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import torch

from rlhfkit.models.loading import PolicyBundle
from rlhfkit.models.value import CriticModel, PolicyWithValueHead
from rlhfkit.rl.advantages import gae, masked_mean, masked_whiten
from rlhfkit.rl.config import PPOConfig
from rlhfkit.rl.epochs import micro_batch, run_epochs
from rlhfkit.rl.forward import critic_forward, policy_forward
from rlhfkit.rl.guard import first_non_finite
from rlhfkit.rl.harness import Harness, run_loop, sampling_params, warn_negative_kl
from rlhfkit.rl.kl import kl_estimate
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.losses import aggregate, clipped_value_loss, explained_variance, ppo_policy_loss, shape_token_rewards
from rlhfkit.rl.rewards import EnsembleReward, RewardSource
from rlhfkit.rl.rollout import Rollout, Sampler
from rlhfkit.rl.scoring import Scores, score_rollout
from rlhfkit.utils.tracking import Tracker


@dataclass
class PPOBatch:
    """A scored rollout ready for updates. Tensors (b, R) unless noted; computed once per rollout."""

    sequences: torch.Tensor        # (b, P + R)
    attention_mask: torch.Tensor   # (b, P + R)
    response_start: int
    mask: torch.Tensor
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


class PPOTrainer:
    """PPO over a :class:`PolicyBundle` whose value model is a value head or a separate critic."""

    def __init__(self, config: PPOConfig, bundle: PolicyBundle, reward: EnsembleReward, prompts: list[str],
                 sampler: Sampler, tracker: Tracker | None = None, gold: RewardSource | None = None) -> None:
        if bundle.value_model is None:
            raise ValueError("PPO needs a value model: load the bundle with value='head' or value='critic'")
        self.config = config
        self.bundle = bundle
        self.reward = reward
        self.gold = gold
        self.sampler = sampler
        self.params = sampling_params(config.generation)
        self.harness = Harness(config.run, config.optim, config.kl, bundle, prompts,
                               config.epochs * config.num_minibatches, config, tracker)
        self.shared_trunk = isinstance(bundle.value_model, PolicyWithValueHead)

    def train(self) -> list[dict[str, float]]:
        """Run until ``run.steps``; returns the metrics of each step."""
        return run_loop(self.harness, self.train_step, "ppo")

    def train_step(self) -> dict[str, float]:
        """One PPO iteration: rollout, advantages, updates. Returns its metrics."""
        h, cfg = self.harness, self.config
        start = time.perf_counter()
        prompts = h.stream.next_batch(cfg.batch_size)
        with h.timer.phase("generation"):
            rollout = self.sampler.sample(self.bundle.policy, self.bundle.tokenizer, prompts, self.params,
                                          generator=h.sample_generator)
        with h.timer.phase("scoring"):
            scores = score_rollout(rollout, self.reward, cfg.reward, h.moments, self.gold)
        batch, metrics = self.make_batch(rollout, scores)
        bad = "a reward" if bool(scores.non_finite.any()) else first_non_finite(
            advantages=batch.advantages, returns=batch.returns, old_logprobs=batch.old_logprobs)
        if bad is not None:
            h.guard.skip(f"{bad} is not finite", h.step)
            metrics["train/skipped_step"] = 1.0
        else:
            with h.timer.phase("training"):
                metrics.update(self.update(batch))
            h.kl_controller.update(metrics["kl/mean"], cfg.batch_size)
        elapsed = time.perf_counter() - start
        metrics["perf/tokens_per_s"] = float(rollout.response_mask.sum()) / elapsed
        metrics["perf/episodes_per_s"] = cfg.batch_size / elapsed
        return metrics

    def make_batch(self, rollout: Rollout, scores: Scores) -> tuple[PPOBatch, dict[str, float]]:
        """Reference log-probs, old values, KL-shaped rewards, GAE and whitening for one rollout."""
        h, cfg = self.harness, self.config
        seqs, attn, start = rollout.sequences, rollout.attention_mask, rollout.response_start
        mask = rollout.response_mask.to(torch.float32)
        temperature = cfg.generation.temperature
        with h.timer.phase("reference"), self.bundle.reference() as reference:
            ref_logprobs = token_logprobs(reference, seqs, attn, start, temperature)
        with h.timer.phase("values"), torch.no_grad():
            if self.shared_trunk:
                old_logprobs, _, values = policy_forward(self.bundle.value_model, seqs, attn, start, temperature)
            else:
                assert isinstance(self.bundle.value_model, CriticModel)
                values = critic_forward(self.bundle.value_model, seqs, attn, start)
                old_logprobs = rollout.logprobs
        old_logprobs, values = old_logprobs * mask, values * mask
        kl = kl_estimate(old_logprobs, ref_logprobs, cfg.kl.estimator) * mask
        final = scores.final.to(mask.device)
        rewards, penalty = shape_token_rewards(final, kl, mask, h.kl_controller.value)
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        raw_advantage_mean = masked_mean(advantages, mask).item()
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        kl_mean = kl.sum(1).mean().item()
        metrics = {**scores.metrics(), "kl/mean": kl_mean, "kl/penalty": penalty.sum(1).mean().item(),
                   "kl/negative_warning": float(warn_negative_kl(kl_mean, h.step)),
                   "response/length_mean": mask.sum(1).mean().item(),
                   "response/finished_frac": rollout.finished.float().mean().item(),
                   "val/mean": masked_mean(values, mask).item(), "returns/mean": masked_mean(returns, mask).item(),
                   "adv/mean": raw_advantage_mean,
                   "val/explained_var": explained_variance(values, returns, mask).item()}
        batch = PPOBatch(seqs, attn, start, mask, old_logprobs, values, advantages, returns)
        return batch, metrics

    def update(self, batch: PPOBatch) -> dict[str, float]:
        """epochs x mini-batches of guarded optimizer steps; stops early once approx KL passes the bound."""
        h, cfg = self.harness, self.config
        bound = cfg.approx_kl_stop
        metrics, early_stop = run_epochs(
            h.optimizer_step, batch.mask, partial(self.loss, batch), epochs=cfg.epochs,
            num_minibatches=cfg.num_minibatches, grad_accum=cfg.grad_accum, aggregation=cfg.loss_aggregation,
            generator=h.shuffle_generator, step=h.step,
            stop=None if bound is None else lambda stats: stats["policy/approx_kl"] > bound)
        metrics["policy/early_stopped"] = float(early_stop)
        return metrics

    def loss(self, batch: PPOBatch, idx: torch.Tensor, denominator: float,
             tokens: float) -> tuple[torch.Tensor, dict[str, float]]:
        """This micro-batch's share of the mini-batch loss, and its share of the diagnostics."""
        cfg = self.config
        part = micro_batch(batch, idx)
        ids, attn, mask, rcols, start = part.ids, part.attn, part.mask, part.rcols, part.response_start
        model = self.bundle.value_model if self.shared_trunk else self.bundle.policy
        logprobs, entropy, values = policy_forward(model, ids, attn, start, cfg.generation.temperature, with_entropy=True)
        if not self.shared_trunk:
            values = critic_forward(self.bundle.value_model, ids, attn, start)
        assert entropy is not None and values is not None
        policy = ppo_policy_loss(logprobs, batch.old_logprobs[idx][:, rcols], batch.advantages[idx][:, rcols], mask,
                                 cfg.clip_range, cfg.clip_range_high)
        value_tokens, value_clipfrac = clipped_value_loss(values, batch.old_values[idx][:, rcols],
                                                          batch.returns[idx][:, rcols], mask, cfg.value_clip)
        policy_loss = aggregate(policy.per_token, mask, cfg.loss_aggregation, denominator)
        value_loss = aggregate(value_tokens, mask, cfg.loss_aggregation, denominator)
        entropy_term = aggregate(entropy if cfg.entropy_coef else entropy.detach(), mask, cfg.loss_aggregation, denominator)
        loss = policy_loss + cfg.vf_coef * value_loss - cfg.entropy_coef * entropy_term
        share = float(mask.sum()) / max(tokens, 1.0)
        stats = {"loss/policy": policy_loss.item(), "loss/value": value_loss.item(), "loss/total": loss.item(),
                 "policy/entropy": entropy_term.item(), "policy/clipfrac": policy.clipfrac.item() * share,
                 "policy/approx_kl": policy.approx_kl.item() * share, "policy/ratio_mean": policy.ratio_mean.item() * share,
                 "val/clipfrac": value_clipfrac.item() * share}
        return loss, stats
