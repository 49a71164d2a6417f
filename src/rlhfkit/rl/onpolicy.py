"""The one on-policy trainer: PPO, GRPO, RLOO and REINFORCE (after Ziegler et al. 2019, Stiennon et al.
2020, Ouyang et al. 2022, Shao et al. 2024, Ahmadian et al. 2024, Williams 1992, and the "N implementation
details of RLHF with PPO", Huang et al. 2023).

One step reads top to bottom: sample num_prompts x group_size responses -> score -> reference
log-probs (and old values for PPO), once per rollout -> per-token rewards (score at the last token,
minus beta * KL when the KL goes in the reward) -> the algorithm's advantages
(:mod:`rlhfkit.rl.algorithms`, the only place they differ) -> epochs x mini-batches of the clipped
surrogate (+ value loss, + KL loss term) -> KL-controller update. Math lives in ``advantages``,
``kl`` and ``losses``; state, checkpoints and logging in ``harness``; what each setting optimizes
in ``objectives``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch

from rlhfkit.models.loading import PolicyBundle
from rlhfkit.models.value import CriticModel, PolicyWithValueHead
from rlhfkit.rl.advantages import masked_mean
from rlhfkit.rl.algorithms import AdvantageSettings, compute_advantages, needs_value_model
from rlhfkit.rl.config import OnPolicyConfig
from rlhfkit.rl.epochs import micro_batch, run_epochs
from rlhfkit.rl.forward import critic_forward, policy_forward
from rlhfkit.rl.guard import first_non_finite
from rlhfkit.rl.harness import GeneratorState, Harness, StepHook, run_loop, warn_negative_kl
from rlhfkit.rl.kl import kl_estimate, make_kl_controller
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.losses import aggregate, clipped_value_loss, explained_variance, ppo_policy_loss, shape_token_rewards
from rlhfkit.rl.onpolicy_memory import between_phases, lora_in_place, offload_reward_models, resident
from rlhfkit.rl.packed_linear import packed_for_pass
from rlhfkit.rl.prompts import PromptStream
from rlhfkit.rl.rewards import EnsembleReward, ModelReward, RewardSource
from rlhfkit.rl.rollout import PER_ROW_UNSUPPORTED, HFGenerateSampler, Rollout, Sampler
from rlhfkit.rl.row_seeds import rollout_row_seeds
from rlhfkit.rl.running_moments import RunningMoments
from rlhfkit.rl.scoring import Scores, score_rollout
from rlhfkit.rl.update import SeparateLosses, halves_now, row_halves
from rlhfkit.utils.distributed import all_gather_rows, current_world, gather_objects, shard_range
from rlhfkit.utils.precision import autocast, enable_gradient_checkpointing, train_mode
from rlhfkit.utils.runtime import beside_each_other, pick_dtype, side_by_side
from rlhfkit.utils.tracking import Tracker

logger = logging.getLogger(__name__)


@dataclass
class RolloutBatch:
    """A scored rollout ready for updates; tensors (b, R) unless noted, b = num_prompts x group_size."""

    sequences: torch.Tensor        # (b, P + R)
    attention_mask: torch.Tensor   # (b, P + R)
    response_start: int
    mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    old_values: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor | None


class FrozenPasses(NamedTuple):
    """What the frozen forwards give a rollout, each (b, R): old log-probs, PPO's old values, reference log-probs."""

    old_logprobs: torch.Tensor
    values: torch.Tensor | None
    ref_logprobs: torch.Tensor | None


def kl_metrics(k1_tokens: torch.Tensor, k3_tokens: torch.Tensor) -> dict[str, float]:
    """Sequence KL(pi_old || ref) estimates over a rollout: k1 mean (``kl/mean``) with its standard error, and k3.

    Both are unbiased for responses sampled from pi_old at the scoring temperature without top-k/top-p.
    """
    per_sequence = k1_tokens.sum(1)
    n = per_sequence.numel()
    sem = per_sequence.std(unbiased=True).item() / n ** 0.5 if n > 1 else float("nan")
    return {"kl/mean": per_sequence.mean().item(), "kl/mean_sem": sem, "kl/k3_mean": k3_tokens.sum(1).mean().item()}


def checkpoint_trained_models(bundle: PolicyBundle) -> bool:
    """Gradient checkpointing on the policy (and a separate critic's trunk); False, with a warning, if unsupported."""
    models = [bundle.policy] + ([bundle.value_model.trunk] if isinstance(bundle.value_model, CriticModel) else [])
    supported = all([enable_gradient_checkpointing(model) for model in models])
    if not supported:
        logger.warning("gradient checkpointing is not supported by this model; training without it")
    return supported


class OnPolicyTrainer:
    """PPO / GRPO / RLOO / REINFORCE over a :class:`PolicyBundle` (PPO needs its value head or critic)."""

    def __init__(self, config: OnPolicyConfig, bundle: PolicyBundle, reward: EnsembleReward, prompts: list[str],
                 sampler: Sampler, tracker: Tracker | None = None, gold: RewardSource | None = None) -> None:
        if needs_value_model(config.algo) and bundle.value_model is None:
            raise ValueError("PPO needs a value model: load the bundle with value='head' or value='critic'")
        self.config = config
        self.bundle = bundle
        lora_in_place(bundle.policy)
        self.reward = reward
        self.gold = gold
        self.sampler = sampler
        self.params = config.generation
        self.uses_values = needs_value_model(config.algo)
        self.shared_trunk = self.uses_values and isinstance(bundle.value_model, PolicyWithValueHead)
        self.advantage_settings = AdvantageSettings(config.group_size, config.gamma, config.lam,
                                                    config.scale_by_std, config.whiten_advantages)
        total_updates = config.run.steps * config.epochs * config.num_minibatches
        self.harness = h = Harness(config.run, config.optim, bundle, total_updates, config, tracker)
        self.kl_controller = make_kl_controller(config.kl.coef, config.kl.target, config.kl.horizon)
        self.moments = RunningMoments()
        self.stream = PromptStream(prompts, seed=config.run.seed)
        self.world = current_world()
        if config.num_prompts % self.world.world_size:
            raise ValueError(f"num_prompts={config.num_prompts} does not split over {self.world.world_size} processes: "
                             f"choose a multiple of {self.world.world_size} (each process samples whole groups)")
        self.prompt_shard = shard_range(config.num_prompts, self.world)
        self.rows = range(self.prompt_shard.start * config.group_size, self.prompt_shard.stop * config.group_size)
        self.per_row_seeds = config.generation.per_row_seeds(self.world.world_size)
        if self.world.distributed and not self.per_row_seeds:
            raise ValueError("generation.seed_per_row=never with several processes would give every process the "
                             "same random stream: use auto or always")
        if self.per_row_seeds and isinstance(sampler, HFGenerateSampler):
            raise ValueError(PER_ROW_UNSUPPORTED)
        if self.per_row_seeds and "row_seeds" not in inspect.signature(sampler.sample).parameters:
            raise ValueError(f"generation.backend={config.generation.backend} cannot seed each row; use cached, "
                             "cached-static or compiled, or set generation.seed_per_row=never")
        device = next(bundle.policy.parameters()).device
        self.device = device
        self.compute_dtype = pick_dtype(device, config.run.dtype)
        self.checkpointing = config.run.gradient_checkpointing and checkpoint_trained_models(bundle)
        self.critic_beside = (config.run.side_by_side and self.uses_values and not self.shared_trunk
                              and not self.checkpointing and beside_each_other(bundle.policy, bundle.value_model))
        self.halvable = not self.checkpointing and not self.critic_beside  # one model, or two not beside each other
        self.reward_offloads = offload_reward_models(reward, config.reward.offload, owner=self)
        self.sample_generator = torch.Generator(device=device).manual_seed(config.run.seed)
        self.shuffle_generator = torch.Generator().manual_seed(config.run.seed + 1)
        for name, state in (("kl_controller", self.kl_controller), ("moments", self.moments), ("data", self.stream),
                            ("sample_generator", GeneratorState(self.sample_generator)),
                            ("shuffle_generator", GeneratorState(self.shuffle_generator))):
            h.register(name, state)
        h.log_extras.append(lambda: {"kl/coef": self.kl_controller.value})
        logger.info("%s objective: %s", config.algo, config.objective())

    def train(self, on_step: StepHook | None = None) -> list[dict[str, float]]:
        """Run until ``run.steps``; returns the metrics of each step."""
        return run_loop(self.harness, self.train_step, self.config.algo, on_step)

    def train_step(self) -> dict[str, float]:
        """One iteration: rollout, scores, advantages, updates. Returns its metrics."""
        h, cfg = self.harness, self.config
        start = time.perf_counter()
        batch_prompts = self.stream.next_batch(cfg.num_prompts)
        shard = self.prompt_shard
        prompts = [p for p in batch_prompts[shard.start:shard.stop] for _ in range(cfg.group_size)]
        between_phases(self.device, cfg.run.release_memory)
        with h.timer.phase("generation"), autocast(self.device, self.compute_dtype):
            rollout = self.sample(prompts)
        between_phases(self.device, cfg.run.release_memory)
        scores, frozen = self.score_beside_reference(rollout)
        if frozen is None:
            with h.timer.phase("scoring"):
                scores = self.score(rollout)
        between_phases(self.device, cfg.run.release_memory)
        batch, metrics = self.make_batch(rollout, scores, frozen)
        between_phases(self.device, cfg.run.release_memory)
        checked = {"advantages": batch.advantages, "old_logprobs": batch.old_logprobs}
        if batch.returns is not None:
            checked["returns"] = batch.returns
        local_bad = "a reward" if bool(scores.non_finite.any()) else first_non_finite(**checked)
        bad = next((name for name in gather_objects(local_bad) if name is not None), None)
        if bad is not None:
            h.guard.skip(f"{bad} is not finite", h.step)
        else:
            with h.timer.phase("training"):
                metrics.update(self.update(batch))
            if "kl/mean" in metrics:
                self.kl_controller.update(metrics["kl/mean"], cfg.num_prompts * cfg.group_size)
        elapsed = time.perf_counter() - start
        metrics["perf/tokens_per_s"] = metrics.pop("response/tokens") / elapsed
        metrics["perf/episodes_per_s"] = cfg.num_prompts * cfg.group_size / elapsed
        return metrics

    def sample(self, prompts: list[str]) -> Rollout:
        """This process's rows of the step's rollout; seeded per row (global prompt, group member) when on."""
        if not self.per_row_seeds:
            return self.sampler.sample(self.bundle.policy, self.bundle.tokenizer, prompts, self.params,
                                       generator=self.sample_generator)
        indices = torch.arange(self.prompt_shard.start, self.prompt_shard.stop)
        seeds = rollout_row_seeds(self.config.run.seed, self.harness.step, indices, self.config.group_size)
        sample = self.sampler.sample  # the samplers that seed rows take row_seeds (the Protocol does not require it)
        return sample(self.bundle.policy, self.bundle.tokenizer, prompts, self.params,  # type: ignore[call-arg]
                      generator=self.sample_generator, row_seeds=seeds)

    def _local(self, tensor: torch.Tensor | None, width: int) -> torch.Tensor | None:
        """This process's rows (and first ``width`` columns) of a tensor over the global batch."""
        if tensor is None or not self.world.distributed:
            return tensor
        return tensor[self.rows.start:self.rows.stop, :width]

    def _old_logprobs_and_values(self, rollout: Rollout, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs of the sampled tokens (the sampler's, or the value-head forward's) and PPO's old values."""
        if not self.uses_values:
            return rollout.logprobs * mask, None
        seqs, attn, start = rollout.sequences, rollout.attention_mask, rollout.response_start
        with torch.no_grad(), autocast(self.device, self.compute_dtype):
            if self.shared_trunk:
                logprobs, _, values = policy_forward(self.bundle.value_model, seqs, attn, start,
                                                     self.config.generation.temperature)
                assert values is not None
            else:
                assert isinstance(self.bundle.value_model, CriticModel)
                values = critic_forward(self.bundle.value_model, seqs, attn, start)
                logprobs = rollout.logprobs
        return logprobs * mask, values.float() * mask

    def score(self, rollout: Rollout) -> Scores:
        """The rollout's scores (:func:`rlhfkit.rl.scoring.score_rollout`), offloaded reward models mapped in."""
        with resident(self.reward_offloads):
            return score_rollout(rollout, self.reward, self.config.reward, self.moments, self.gold)

    def _with_reference(self) -> bool:
        return self.kl_controller.value > 0 or self.config.kl.target is not None

    def _side_by_side_now(self) -> bool:
        """Whether this step's frozen passes may run side by side: asked for, 2+ intra-op threads, and peak memory
        not the priority (``run.release_memory``)."""
        run = self.config.run
        return run.side_by_side and not run.release_memory and torch.get_num_threads() > 1

    def _reference_module(self) -> torch.nn.Module | None:
        return self.bundle.policy if self.bundle.uses_lora else self.bundle.frozen_reference

    def _reference_logprobs(self, reference: torch.nn.Module, rollout: Rollout, mask: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.compute_dtype):
            return token_logprobs(reference, rollout.sequences, rollout.attention_mask, rollout.response_start,
                                  self.config.generation.temperature) * mask

    def score_beside_reference(self, rollout: Rollout) -> tuple[Scores | None, FrozenPasses | None]:
        """Without a value model: the scores and the reference pass side by side (:func:`side_by_side`), scoring in
        this thread, when every reward source is a torch reward model sharing no parameter with the reference (a
        Python reward function could call anything); else (None, None) and the caller scores alone."""
        if self.uses_values or not self._with_reference() or not self._side_by_side_now():
            return None, None
        members = [*self.reward.members, *([self.gold] if self.gold is not None else [])]
        models = [getattr(member, "model", None) for member in members]
        if not all(isinstance(member, ModelReward) and isinstance(model, torch.nn.Module)
                   for member, model in zip(members, models)):
            return None, None
        if not beside_each_other(self._reference_module(), torch.nn.ModuleList(models)):
            return None, None
        mask = rollout.response_mask.to(torch.float32)
        scores, ref_logprobs = self._beside_reference("scoring+reference", lambda: self.score(rollout), rollout, mask)
        return scores, FrozenPasses(*self._old_logprobs_and_values(rollout, mask), ref_logprobs)

    def _beside_reference(self, phase: str, work: Callable[[], Any], rollout: Rollout, mask: torch.Tensor
                          ) -> tuple[Any, torch.Tensor]:
        """``work()`` and the reference pass side by side (:func:`side_by_side`), timed as one ``phase``."""
        with (self.harness.timer.phase(phase), self.bundle.reference() as reference,
              packed_for_pass(reference, self.compute_dtype)):
            work_result, ref_logprobs = side_by_side([work, lambda: self._reference_logprobs(reference, rollout, mask)])
        return work_result, ref_logprobs

    def _values_phase(self) -> contextlib.AbstractContextManager[object]:
        return self.harness.timer.phase("values") if self.uses_values else contextlib.nullcontext()

    def frozen_passes(self, rollout: Rollout, mask: torch.Tensor) -> FrozenPasses:
        """Old log-probs, PPO's old values and (when the KL needs them) the reference log-probs, each (b, R): a
        separate critic's pass beside the reference's when they share no parameter (:func:`side_by_side`)."""
        timer = self.harness.timer
        if not self._with_reference():
            with self._values_phase():
                return FrozenPasses(*self._old_logprobs_and_values(rollout, mask), None)
        if (self.critic_beside and self._side_by_side_now()
                and beside_each_other(self._reference_module(), self.bundle.value_model)):
            (old_logprobs, values), ref_logprobs = self._beside_reference(
                "values+reference", lambda: self._old_logprobs_and_values(rollout, mask), rollout, mask)
            return FrozenPasses(old_logprobs, values, ref_logprobs)
        # values first: with LoRA and a value head they need the adapters the reference turns off
        with self._values_phase():
            old_logprobs, values = self._old_logprobs_and_values(rollout, mask)
        with (timer.phase("reference"), self.bundle.reference() as reference,
              packed_for_pass(reference, self.compute_dtype)):
            return FrozenPasses(old_logprobs, values, self._reference_logprobs(reference, rollout, mask))

    def make_batch(self, rollout: Rollout, scores: Scores, frozen: FrozenPasses | None = None
                   ) -> tuple[RolloutBatch, dict[str, float]]:
        """Reference log-probs, old values (``frozen``, else run here), per-token rewards and advantages, once per
        rollout.

        Under several processes ``rollout`` holds this process's rows; statistics are over all rows.
        """
        cfg = self.config
        gather = all_gather_rows
        seqs, attn, start = rollout.sequences, rollout.attention_mask, rollout.response_start
        mask = rollout.response_mask.to(torch.float32)
        beta = self.kl_controller.value
        old_logprobs, values, ref_logprobs = frozen if frozen is not None else self.frozen_passes(rollout, mask)
        kl = torch.zeros_like(mask)
        metrics: dict[str, float] = {}
        if ref_logprobs is not None:
            estimates = {name: kl_estimate(old_logprobs, ref_logprobs, name) * mask
                         for name in {"k1", "k3", cfg.kl.estimator}}
            kl = estimates[cfg.kl.estimator]
            metrics.update(kl_metrics(gather(estimates["k1"]), gather(estimates["k3"])))
            metrics["kl/negative_warning"] = float(warn_negative_kl(metrics["kl/mean"], self.harness.step))
        final = scores.final.to(mask.device)
        token_rewards, penalty = shape_token_rewards(final, kl, mask, beta if cfg.kl_in == "reward" else 0.0)
        # Advantages (whitening included) and metrics over the global batch: one process's statistics.
        all_mask, all_values = gather(mask), None if values is None else gather(values)
        all_advantages, all_returns = compute_advantages(cfg.algo, gather(token_rewards), all_values, all_mask,
                                                         self.advantage_settings)
        width = mask.shape[1]
        advantages, returns = self._local(all_advantages, width), self._local(all_returns, width)
        assert advantages is not None
        lengths = all_mask.sum(1)
        finished = gather(rollout.finished.to(mask.device))
        truncated = (~finished) & (lengths >= cfg.generation.max_new_tokens)
        all_scores = Scores(**{f.name: None if getattr(scores, f.name) is None else gather(getattr(scores, f.name))
                               for f in dataclasses.fields(scores)})
        metrics.update({**all_scores.metrics(), "kl/penalty": gather(penalty.sum(1)).mean().item(),
                        "response/length_mean": lengths.mean().item(), "response/tokens": float(lengths.sum()),
                        "response/finished_frac": finished.float().mean().item(),
                        "response/truncated_frac": truncated.float().mean().item(),
                        "adv/mean": masked_mean(all_advantages, all_mask).item()})
        if cfg.group_size > 1:
            metrics["reward/group_std"] = all_scores.final.view(-1, cfg.group_size).std(1).mean().item()
        if all_values is not None and all_returns is not None:
            metrics.update({"val/mean": masked_mean(all_values, all_mask).item(),
                            "returns/mean": masked_mean(all_returns, all_mask).item(),
                            "val/explained_var": explained_variance(all_values, all_returns, all_mask).item()})
        batch = RolloutBatch(seqs, attn, start, mask, old_logprobs, ref_logprobs, values, advantages, returns)
        return batch, metrics

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """epochs x mini-batches of guarded optimizer steps; stops early once approx KL passes the bound."""
        cfg = self.config
        bound = cfg.approx_kl_stop
        metrics, early_stop = run_epochs(
            self.harness.optimizer_step, batch.mask, partial(self.loss, batch), epochs=cfg.epochs,
            num_minibatches=cfg.num_minibatches, grad_accum=cfg.optim.grad_accum, aggregation=cfg.loss_aggregation,
            generator=self.shuffle_generator, step=self.harness.step,
            stop=None if bound is None else lambda stats: stats["policy/approx_kl"] > bound,
            rows=self.rows if self.world.distributed else None, total_rows=cfg.num_prompts * cfg.group_size)
        metrics["policy/early_stopped"] = float(early_stop)
        return metrics

    def loss(self, batch: RolloutBatch, idx: torch.Tensor, denominator: float,
             tokens: float) -> tuple[torch.Tensor | SeparateLosses, dict[str, float]]:
        """This micro-batch's share of the mini-batch loss, and its share of the diagnostics: as two row halves side
        by side when one model (or a policy and a critic that cannot run beside each other) trains on the CPU
        (:func:`rlhfkit.rl.update.row_halves`)."""
        part_loss = partial(self._part_loss, batch, denominator=denominator, tokens=tokens)
        run, trained = self.config.run, (self.bundle.policy, self.bundle.value_model)
        if not (self.halvable and not run.release_memory and len(idx) > 1
                and halves_now(run.row_halves, self.device, trained, self.bundle.uses_lora)):
            return part_loss(idx)
        return row_halves(idx, part_loss, self.harness.params)

    def _part_loss(self, batch: RolloutBatch, idx: torch.Tensor, denominator: float,
                   tokens: float) -> tuple[torch.Tensor | SeparateLosses, dict[str, float]]:
        """Rows ``idx``'s share of the mini-batch loss and of the diagnostics."""
        cfg = self.config
        part = micro_batch(batch, idx)
        ids, attn, mask, rcols, start = part.ids, part.attn, part.mask, part.rcols, part.response_start
        model = self.bundle.value_model if self.shared_trunk else self.bundle.policy
        critic = self.bundle.value_model if self.uses_values and not self.shared_trunk else None
        beside = self.critic_beside and torch.get_num_threads() > 1

        def policy_outputs() -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
            with autocast(self.device, self.compute_dtype):
                return policy_forward(model, ids, attn, start, cfg.generation.temperature, with_entropy=True)

        def critic_values() -> torch.Tensor:
            assert isinstance(critic, CriticModel)
            with autocast(self.device, self.compute_dtype):
                return critic_forward(critic, ids, attn, start)

        with train_mode(model, self.checkpointing):
            if critic is None:
                logprobs, entropy, values = policy_outputs()
            else:
                with train_mode(critic, self.checkpointing):
                    if beside:
                        (logprobs, entropy, _), values = side_by_side([policy_outputs, critic_values])
                    else:
                        (logprobs, entropy, _), values = policy_outputs(), critic_values()
        assert entropy is not None
        policy = ppo_policy_loss(logprobs, batch.old_logprobs[idx][:, rcols], batch.advantages[idx][:, rcols], mask,
                                 cfg.clip_range, cfg.clip_range_high)

        def mean(per_token: torch.Tensor) -> torch.Tensor:
            return aggregate(per_token, mask, cfg.loss_aggregation, denominator)

        policy_loss = mean(policy.per_token)
        loss = policy_loss
        share = float(mask.sum()) / max(tokens, 1.0)
        stats = {"loss/policy": policy_loss.item(), "policy/clipfrac": policy.clipfrac.item() * share,
                 "policy/approx_kl": policy.approx_kl.item() * share,
                 "policy/ratio_mean": policy.ratio_mean.item() * share}
        if cfg.kl_in == "loss" and batch.ref_logprobs is not None:
            kl_loss = mean(kl_estimate(logprobs, batch.ref_logprobs[idx][:, rcols], cfg.kl.estimator))
            loss = loss + self.kl_controller.value * kl_loss
            stats["loss/kl"] = kl_loss.item()
        entropy_term = mean(entropy if cfg.entropy_coef else entropy.detach())
        stats["policy/entropy"] = entropy_term.item()
        if self.uses_values:
            assert batch.old_values is not None and batch.returns is not None and values is not None
            value_tokens, value_clipfrac = clipped_value_loss(values.float(), batch.old_values[idx][:, rcols],
                                                              batch.returns[idx][:, rcols], mask, cfg.value_clip)
            value_loss = mean(value_tokens)
            stats.update({"loss/value": value_loss.item(), "val/clipfrac": value_clipfrac.item() * share})
            if beside:  # the critic's backward beside the policy's (disjoint parameters)
                losses = SeparateLosses((loss - cfg.entropy_coef * entropy_term, cfg.vf_coef * value_loss))
                stats["loss/total"] = losses.item()
                return losses, stats
            loss = loss + cfg.vf_coef * value_loss
        loss = loss - cfg.entropy_coef * entropy_term
        stats["loss/total"] = loss.item()
        return loss, stats
