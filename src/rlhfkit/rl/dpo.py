"""DPO (Rafailov et al. 2023) and IPO (Azar et al. 2023) on offline preference pairs.

Reference log-probs are computed once before training (and stored in checkpoints); each step
scores chosen and rejected responses of a batch in one stacked forward of the policy. Optimizer,
checkpoints, logging and the step loop are the on-policy trainer's (:class:`rlhfkit.rl.harness.Harness`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial
from typing import Any

import torch

from rlhfkit.models.loading import PolicyBundle
from rlhfkit.rl.config import DPOConfig
from rlhfkit.rl.harness import Harness, StepHook, run_loop
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.losses import dpo_loss
from rlhfkit.rl.packed_linear import packed_for_pass
from rlhfkit.rl.preference_pairs import EncodedPairs, Pair, dpo_total_steps, encode_pairs
from rlhfkit.rl.update import SeparateLosses, halves_now, row_halves
from rlhfkit.utils.distributed import all_gather_rows, current_world
from rlhfkit.utils.precision import autocast, enable_gradient_checkpointing, train_mode
from rlhfkit.utils.runtime import pick_dtype, side_by_side
from rlhfkit.utils.tracking import Tracker


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


class ReferenceLogprobs:
    """Reference log-probs of every pair's chosen and rejected response, kept in checkpoints."""

    def __init__(self) -> None:
        self.chosen: torch.Tensor | None = None
        self.rejected: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """Both tensors (None before they are computed)."""
        return {"chosen": self.chosen, "rejected": self.rejected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the saved tensors (the reference pass is then skipped)."""
        self.chosen, self.rejected = state["chosen"], state["rejected"]


class DPOTrainer:
    """Offline preference optimisation of ``bundle.policy`` against its reference, on the shared Harness."""

    def __init__(self, config: DPOConfig, bundle: PolicyBundle, pairs: list[Pair],
                 tracker: Tracker | None = None) -> None:
        self.config = config
        self.bundle = bundle
        self.world = current_world()
        if config.batch_size % self.world.world_size:
            raise ValueError(f"batch_size={config.batch_size} pairs do not split over {self.world.world_size} "
                             f"processes: choose a multiple of {self.world.world_size}")
        device = next(bundle.policy.parameters()).device
        self.data = self._to(encode_pairs(pairs, bundle.tokenizer, config.max_prompt_tokens,
                                          config.max_response_tokens, config.append_eos), device)
        self.steps_per_epoch = math.ceil(len(self.data) / config.batch_size)
        total = dpo_total_steps(config.run.steps, config.epochs, config.batch_size, len(self.data))
        self.harness = Harness(dataclasses.replace(config.run, steps=total), config.optim, bundle, total, config,
                               tracker)
        self.device = device
        self.compute_dtype = pick_dtype(device, config.run.dtype)
        self.checkpointing = config.run.gradient_checkpointing and enable_gradient_checkpointing(bundle.policy)
        self.reference = ReferenceLogprobs()
        self.harness.register("reference_logprobs", self.reference)
        self.average = config.loss_type == "ipo"

    @staticmethod
    def _to(data: EncodedPairs, device: torch.device) -> EncodedPairs:
        return EncodedPairs(*(getattr(data, f.name).to(device) for f in dataclasses.fields(data)))

    def precompute_reference(self) -> None:
        """Reference log-probs of every pair, once (skipped when restored from a checkpoint).

        Under several processes each computes a contiguous shard of the pairs; all then hold all.
        """
        if self.reference.chosen is not None:
            return
        mine = self.shard(torch.arange(len(self.data))).to(self.data.prompt_ids.device)
        batches = list(mine.split(self.config.batch_size))

        def logprobs(part: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            with autocast(self.device, self.compute_dtype):
                return [sequence_logprobs(reference, self.data, idx, self.average) for idx in part]

        with (self.harness.timer.phase("reference"), self.bundle.reference() as reference,
              packed_for_pass(reference, self.compute_dtype)):
            if self._halves_now() and len(batches) > 1:  # the batches' two halves side by side
                done = [pair for part in side_by_side([partial(logprobs, batches[:len(batches) // 2]),
                                                       partial(logprobs, batches[len(batches) // 2:])])
                        for pair in part]
            else:
                done = logprobs(batches)
        chosen = [torch.zeros(0, device=self.device), *(c.float() for c, _ in done)]
        rejected = [torch.zeros(0, device=self.device), *(r.float() for _, r in done)]
        self.reference.chosen = all_gather_rows(torch.cat(chosen))
        self.reference.rejected = all_gather_rows(torch.cat(rejected))

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's contiguous part of the global pair indices ``idx`` (all of them with one process)."""
        if not self.world.distributed:
            return idx
        return torch.tensor_split(idx, self.world.world_size)[self.world.rank]

    def batch_indices(self, step: int) -> torch.Tensor:
        """Pairs of optimizer step ``step``: a seeded permutation per epoch, cut into batches."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.config.run.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.data), generator=generator)
        return order[position * self.config.batch_size:(position + 1) * self.config.batch_size]

    def train(self, on_step: StepHook | None = None) -> list[dict[str, float]]:
        """Precompute reference log-probs, then optimise until the step budget."""
        self.precompute_reference()
        return run_loop(self.harness, self.train_step, "ipo" if self.config.loss_type == "ipo" else "dpo", on_step)

    def train_step(self) -> dict[str, float]:
        """One optimizer step over one batch of pairs (with gradient accumulation); under several processes
        each takes its shard of the batch and the loss is divided by the global pair count."""
        h = self.harness
        start = time.perf_counter()
        idx = self.batch_indices(h.step).to(self.data.prompt_ids.device)
        mine = self.shard(idx)
        micro_batches = [part for part in mine.chunk(self.config.optim.grad_accum) if part.numel()]
        with h.timer.phase("training"):
            result = h.optimizer_step(micro_batches, lambda micro: self.loss(micro, len(idx)), h.step)
        metrics = dict(result.stats)
        metrics.update({"grad/norm": result.grad_norm,
                        "perf/pairs_per_s": len(idx) / (time.perf_counter() - start)})
        return metrics

    def loss(self, idx: torch.Tensor, batch_pairs: int) -> tuple[torch.Tensor | SeparateLosses, dict[str, float]]:
        """This micro-batch's share of the weighted mean DPO loss, and its share of the diagnostics: on the CPU with
        2+ intra-op threads, as two halves of its pairs side by side (:func:`rlhfkit.rl.update.row_halves`)."""
        if self._halves_now() and not self.checkpointing and len(idx) > 1:
            return row_halves(idx, partial(self._part_loss, batch_pairs=batch_pairs), self.harness.params)
        return self._part_loss(idx, batch_pairs)

    def _halves_now(self) -> bool:
        run = self.config.run
        return not run.release_memory and halves_now(run.row_halves, self.device, [self.bundle.policy],
                                                     self.bundle.uses_lora)

    def _part_loss(self, idx: torch.Tensor, batch_pairs: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Pairs ``idx``'s share of the weighted mean DPO loss and of the diagnostics."""
        ref_chosen, ref_rejected = self.reference.chosen, self.reference.rejected
        assert ref_chosen is not None and ref_rejected is not None
        cfg = self.config
        with autocast(self.device, self.compute_dtype), train_mode(self.bundle.policy, self.checkpointing):
            chosen, rejected = sequence_logprobs(self.bundle.policy, self.data, idx, self.average)
        out = dpo_loss(chosen, rejected, ref_chosen[idx], ref_rejected[idx], cfg.beta, cfg.loss_type,
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
