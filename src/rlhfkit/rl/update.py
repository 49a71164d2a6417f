"""Optimizer steps shared by every trainer: mini-batch split, gradient accumulation, clipping,
and non-finite skipping (a bad loss or gradient norm leaves the parameters untouched).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

import torch

from rlhfkit.models.shared_prefix import live_dropout
from rlhfkit.rl.config import OptimConfig
from rlhfkit.rl.guard import SkipGuard, first_non_finite
from rlhfkit.utils.distributed import align_gradients, all_reduce_gradients, current_world, gather_objects, sum_floats
from rlhfkit.utils.runtime import side_by_side


@dataclass(frozen=True)
class SeparateLosses:
    """A micro-batch loss made of terms whose backward passes run side by side, each on its share of the intra-op
    threads (:func:`rlhfkit.utils.runtime.side_by_side`): a policy's and a separate critic's (disjoint parameters),
    or one model's row halves (:func:`row_halves`, ``shared`` its trainable parameters). The loss is the terms' sum
    and each parameter receives its gradient, the same floats whichever term finishes first (see :meth:`backward`),
    so a step repeats bit for bit."""

    terms: tuple[torch.Tensor, ...]
    shared: tuple[torch.nn.Parameter, ...] = ()

    def detach(self) -> torch.Tensor:
        """The summed loss's value."""
        return torch.stack([term.detach().float() for term in self.terms]).sum()

    def item(self) -> float:
        """The summed loss as a Python float."""
        return self.detach().item()

    def backward(self) -> None:
        """Every term's backward, concurrently. Shared parameters without gradients yet and two terms: both add
        straight into them (a + b and b + a are the same floats, and no gradient is held twice); else the first adds
        into the gradients and the others into buffers of their own, added after it in order."""
        live = [term for term in self.terms if term.requires_grad]
        params = [p for p in self.shared if p.requires_grad]
        if len(live) < 2 or not params or (len(live) == 2 and all(p.grad is None for p in params)):
            side_by_side([term.backward for term in live])
            return

        def own_gradients(term: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            return torch.autograd.grad(term, params, allow_unused=True)

        _, *others = side_by_side([live[0].backward, *(partial(own_gradients, term) for term in live[1:])])
        for grads in others:
            for param, grad in zip(params, grads):
                if grad is not None:
                    param.grad = grad if param.grad is None else param.grad.add_(grad)


def halves_now(setting: str, device: torch.device, models: Iterable[torch.nn.Module | None],
               adapters: bool = False) -> bool:
    """Whether work may run as two halves side by side (:func:`row_halves`) now: ``setting`` (``run.row_halves``:
    ``auto`` skips ``adapters`` training, whose peak memory the second thread's heap raises more than its speed
    gains), on the CPU with 2+ intra-op threads, and no model drawing dropout (two threads would draw from the one
    generator in either order: a run would not repeat)."""
    if setting == "never" or (setting == "auto" and adapters):
        return False
    return (device.type == "cpu" and torch.get_num_threads() > 1
            and not any(model is not None and live_dropout(model) for model in models))


def row_halves(idx: torch.Tensor, part_loss: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
               shared: Iterable[torch.nn.Parameter]) -> tuple[SeparateLosses, dict[str, float]]:
    """One model's micro-batch ``idx`` as two row halves, forward and backward side by side on half the intra-op
    threads each: ``part_loss(rows)`` is those rows' share of the loss and of the (summed) stats, as for gradient
    accumulation. On 2 cores a small model's products use two intra-op threads poorly, and its many small
    memory-bound ops not at all (``bench/grpo.py``'s update of 64 rows: 380-405 ms on 2 threads, 330-358 ms as
    halves). ``idx`` is sorted first, so rows that share a prompt (a group's, a pair's) mostly stay together."""
    halves = [half for half in idx.sort().values.chunk(2) if half.numel()]
    results = side_by_side([partial(part_loss, half) for half in halves])
    stats: dict[str, float] = {}
    for _, part in results:
        for key, value in part.items():
            stats[key] = stats.get(key, 0.0) + value
    return SeparateLosses(tuple(loss for loss, _ in results), tuple(shared)), stats


LossFn = Callable[[torch.Tensor], tuple[torch.Tensor | SeparateLosses, dict[str, float]]]


def make_optimizer(params: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, with the fused kernel on CPU/CUDA (one pass over the
    parameters instead of ~10 foreach passes: 0.06 s instead of 0.21 s of CPU per step for 8M
    float32 parameters on 2 threads), else the foreach implementation."""
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters: is the model frozen?")
    devices = {p.device.type for p in trainable}
    fused = config.fused and (devices <= {"cpu"} or devices <= {"cuda"})
    return torch.optim.AdamW(trainable, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                             weight_decay=config.weight_decay, **({"fused": True} if fused else {"foreach": True}))


def make_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then constant / linear / cosine decay to 0 over ``total_steps`` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: config.lr_factor(step, total_steps))


def minibatch_indices(size: int, num_minibatches: int, grad_accum: int,
                      generator: torch.Generator) -> Iterator[list[torch.Tensor]]:
    """A shuffled split of ``range(size)`` into mini-batches, each a list of micro-batch index tensors."""
    if num_minibatches < 1 or grad_accum < 1:
        raise ValueError("num_minibatches and grad_accum must be >= 1")
    if size % (num_minibatches * grad_accum):
        raise ValueError(f"batch of {size} cannot be split into {num_minibatches} mini-batches "
                         f"x {grad_accum} micro-batches evenly")
    order = torch.randperm(size, generator=generator)
    for minibatch in order.chunk(num_minibatches):
        yield list(minibatch.chunk(grad_accum))


@dataclass
class StepResult:
    """What one optimizer step did: applied or skipped (and why), grad norm, summed loss stats."""

    applied: bool
    grad_norm: float = math.nan
    stats: dict[str, float] = field(default_factory=dict)
    skip_reason: str | None = None


@dataclass
class OptimizerStep:
    """Accumulates micro-batch losses into one guarded optimizer step."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    max_grad_norm: float | None
    guard: SkipGuard

    def __call__(self, micro_batches: list[torch.Tensor], loss_fn: LossFn, step: int) -> StepResult:
        """Backward ``loss_fn(idx)`` for every micro-batch, clip, check finiteness, then step or skip.

        ``loss_fn`` returns the micro-batch's share of the mini-batch loss (already divided by
        the whole mini-batch's denominator; a tensor or :class:`SeparateLosses`) and float stats that are summed
        over micro-batches.
        Under several processes, stats and gradients are then summed across them before clipping
        (``micro_batches`` may be empty on a process that holds none of the mini-batch's rows).
        """
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        bad_loss = False
        for idx in micro_batches:
            loss, stats = loss_fn(idx)
            if first_non_finite(loss=loss.detach()):
                bad_loss = True
                break
            loss.backward()
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
        if current_world().distributed:
            totals, bad_loss = self._reduce(totals, bad_loss)
        if bad_loss:
            return self._skip("the loss is not finite", step, totals)
        limit = self.max_grad_norm if self.max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, limit, foreach=True))
        if not math.isfinite(grad_norm):
            return self._skip("the gradient norm is not finite", step, totals)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.guard.ok()
        return StepResult(True, grad_norm, totals)

    def _reduce(self, totals: dict[str, float], bad_loss: bool) -> tuple[dict[str, float], bool]:
        """Across processes: stats and gradients summed, and a non-finite loss anywhere skips everywhere.

        Each process's losses and stats are its share of the global mini-batch (divided by global
        counts), so the sums are what one process computes for the whole mini-batch.
        """
        shared = gather_objects((sorted(totals), bad_loss))
        keys = sorted(set().union(*(names for names, _ in shared)))
        bad_loss = any(flag for _, flag in shared)
        totals = sum_floats({key: totals.get(key, 0.0) for key in keys})
        if not bad_loss:
            align_gradients(self.params)
            all_reduce_gradients(self.params)
        return totals, bad_loss

    def _skip(self, reason: str, step: int, totals: dict[str, float]) -> StepResult:
        self.optimizer.zero_grad(set_to_none=True)
        self.guard.skip(reason, step)
        return StepResult(False, math.nan, totals, reason)
