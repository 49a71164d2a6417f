"""DPO (Rafailov et al. 2023) and IPO (Azar et al. 2023) on offline preference pairs.

Reference log-probs are computed once before training (and stored in checkpoints); each step
scores chosen and rejected responses of a batch in one stacked forward of the policy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import config_to_dict
from rlhfkit.models.loading import PolicyBundle
from rlhfkit.rl.checkpointing import load_checkpoint, save_checkpoint
from rlhfkit.rl.config import DPOConfig
from rlhfkit.rl.guard import SkipGuard
from rlhfkit.rl.harness import fuse_bundle_gelu, run_loop
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.losses import dpo_loss
from rlhfkit.rl.preference_pairs import EncodedPairs, Pair, dpo_total_steps, encode_pairs
from rlhfkit.rl.timers import PhaseTimer
from rlhfkit.rl.update import OptimizerStep, make_optimizer, make_scheduler
from rlhfkit.utils.checkpoint import all_finite, capture_rng_state, restore_rng_state
from rlhfkit.utils.tracking import Tracker

logger = logging.getLogger(__name__)


def sequence_logprobs(model: torch.nn.Module, data: EncodedPairs, idx: torch.Tensor,
                      average: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Log pi(chosen | prompt) and log pi(rejected | prompt), each (m,), for pairs ``idx``.

    Summed over response tokens, or averaged per token when ``average`` (IPO's length normalisation).
    """
    ids, mask, response_mask, start = data.stacked(idx)
    response_mask = response_mask.to(torch.float32)
    per_token = token_logprobs(model, ids, mask, start) * response_mask
    totals = per_token.sum(1)
    if average:
        totals = totals / response_mask.sum(1).clamp(min=1)
    return totals.chunk(2)


class DPOTrainer:
    """Offline preference optimisation of ``bundle.policy`` against its reference."""

    def __init__(self, config: DPOConfig, bundle: PolicyBundle, pairs: list[Pair],
                 tracker: Tracker | None = None) -> None:
        self.config = config
        self.bundle = bundle
        self.tracker = tracker
        if config.run.fused_gelu:
            fuse_bundle_gelu(bundle)
        device = next(bundle.policy.parameters()).device
        self.data = self._to(encode_pairs(pairs, bundle.tokenizer, config.max_prompt_tokens,
                                          config.max_response_tokens, config.append_eos), device)
        self.steps_per_epoch = math.ceil(len(self.data) / config.batch_size)
        total = dpo_total_steps(config.run.steps, config.epochs, config.batch_size, len(self.data))
        self.run = dataclasses.replace(config.run, steps=total)
        self.params = bundle.trainable_parameters()
        self.optimizer = make_optimizer(self.params, config.optim)
        self.scheduler = make_scheduler(self.optimizer, config.optim, total)
        self.guard = SkipGuard(config.run.max_consecutive_skips)
        self.optimizer_step = OptimizerStep(self.params, self.optimizer, self.scheduler, config.optim.max_grad_norm,
                                            self.guard)
        self.average = config.loss_type == "ipo"
        self.timer = PhaseTimer()
        self.step = 0
        if not config.run.output_dir:
            raise ValueError("run.output_dir is not set: where should checkpoints and the final model go?")
        self.output_dir = Path(config.run.output_dir)
        self.ref_chosen: torch.Tensor | None = None
        self.ref_rejected: torch.Tensor | None = None

    @staticmethod
    def _to(data: EncodedPairs, device: torch.device) -> EncodedPairs:
        return EncodedPairs(*(getattr(data, f.name).to(device) for f in dataclasses.fields(data)))

    def precompute_reference(self) -> None:
        """Reference log-probs of every pair, once (skipped when restored from a checkpoint)."""
        if self.ref_chosen is not None:
            return
        chosen, rejected = [], []
        with self.timer.phase("reference"), self.bundle.reference() as reference:
            for idx in torch.arange(len(self.data)).split(self.config.batch_size):
                c, r = sequence_logprobs(reference, self.data, idx.to(self.data.prompt_ids.device), self.average)
                chosen.append(c)
                rejected.append(r)
        self.ref_chosen, self.ref_rejected = torch.cat(chosen), torch.cat(rejected)

    def batch_indices(self, step: int) -> torch.Tensor:
        """Pairs of optimizer step ``step``: a seeded permutation per epoch, cut into batches."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.config.run.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.data), generator=generator)
        return order[position * self.config.batch_size:(position + 1) * self.config.batch_size]

    def train(self) -> list[dict[str, float]]:
        """Precompute reference log-probs, then optimise until the step budget."""
        self.precompute_reference()
        return run_loop(self, self.train_step, "ipo" if self.config.loss_type == "ipo" else "dpo")

    def train_step(self) -> dict[str, float]:
        """One optimizer step over one batch of pairs (with gradient accumulation)."""
        start = time.perf_counter()
        idx = self.batch_indices(self.step).to(self.data.prompt_ids.device)
        with self.timer.phase("training"):
            result = self.optimizer_step(list(idx.chunk(self.config.grad_accum)),
                                         lambda micro: self.loss(micro, len(idx)), self.step)
        metrics = {key: value for key, value in result.stats.items()}
        metrics.update({"grad/norm": result.grad_norm, "train/skipped_step": float(not result.applied),
                        "perf/pairs_per_s": len(idx) / (time.perf_counter() - start)})
        return metrics

    def loss(self, idx: torch.Tensor, batch_pairs: int) -> tuple[torch.Tensor, dict[str, float]]:
        """This micro-batch's share of the weighted mean DPO loss, and its share of the diagnostics."""
        assert self.ref_chosen is not None and self.ref_rejected is not None
        cfg = self.config
        chosen, rejected = sequence_logprobs(self.bundle.policy, self.data, idx, self.average)
        out = dpo_loss(chosen, rejected, self.ref_chosen[idx], self.ref_rejected[idx], cfg.beta, cfg.loss_type,
                       cfg.label_smoothing)
        loss = (out.losses * self.data.weights[idx]).sum() / batch_pairs
        share = len(idx) / batch_pairs
        margin = out.chosen_rewards - out.rejected_rewards
        stats = {"loss/dpo": loss.item(), "rewards/chosen": out.chosen_rewards.mean().item() * share,
                 "rewards/rejected": out.rejected_rewards.mean().item() * share,
                 "rewards/margin": margin.mean().item() * share,
                 "rewards/accuracy": (margin > 0).float().mean().item() * share,
                 "logps/chosen": chosen.detach().mean().item() * share,
                 "logps/rejected": rejected.detach().mean().item() * share}
        return loss, stats

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler, guard, RNG, step (= data position) and the reference log-probs."""
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "guard": self.guard.state_dict(), "rng": capture_rng_state(),
                "ref_chosen": self.ref_chosen, "ref_rejected": self.ref_rejected}

    def save(self) -> Path | None:
        """Atomic checkpoint of the policy and the training state."""
        return save_checkpoint(self.output_dir, self.step, {"policy": self.bundle.policy}, self.state_dict(),
                               keep=self.run.keep_checkpoints)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save`."""
        state = load_checkpoint(path, {"policy": self.bundle.policy})
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.guard.load_state_dict(state["guard"])
        restore_rng_state(state["rng"])
        self.ref_chosen, self.ref_rejected = state["ref_chosen"], state["ref_rejected"]

    def log(self, metrics: dict[str, float]) -> dict[str, float]:
        """Add learning rate and phase times, send to the tracker, return them."""
        metrics = {**metrics, **self.timer.pop(), "optim/lr": self.scheduler.get_last_lr()[0],
                   "train/skipped_updates": float(self.guard.total)}
        if self.tracker is not None and self.step % max(1, self.run.log_every) == 0:
            self.tracker.log(metrics, step=self.step)
        return metrics

    def save_final(self) -> Path | None:
        """save_pretrained the policy under ``final/`` unless its weights are non-finite."""
        if not all_finite(self.bundle.policy):
            logger.error("final weights are not finite; keeping only the last finite checkpoint")
            return None
        return self.bundle.save_pretrained(self.output_dir / "final")

    def config_dict(self) -> dict[str, Any]:
        """The trainer config as a plain dict."""
        return config_to_dict(self.config)
