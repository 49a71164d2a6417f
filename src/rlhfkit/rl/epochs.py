"""The update half of an on-policy step, shared by PPO and the group policy-gradient trainers.

One scored rollout is reused for ``epochs`` passes of shuffled mini-batches; each mini-batch is one
guarded optimizer step accumulated over micro-batches (:class:`rlhfkit.rl.update.OptimizerStep`),
and each micro-batch's loss runs on its rows trimmed to the columns they use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch

from rlhfkit.rl.forward import trim_batch
from rlhfkit.rl.update import OptimizerStep, SeparateLosses, minibatch_indices
from rlhfkit.utils.distributed import sum_floats


class MiniBatchLoss(Protocol):
    """A micro-batch's share of its mini-batch loss, given the mini-batch's denominator and token count."""

    def __call__(self, idx: torch.Tensor, denominator: float, tokens: float
                 ) -> tuple[torch.Tensor | SeparateLosses, dict[str, float]]: ...


class TokenBatch(Protocol):
    """What every trainer's rollout batch holds: sequences (b, P + R) and the response mask (b, R)."""

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_start: int
    mask: torch.Tensor


@dataclass
class MicroBatch:
    """Rows ``idx`` of a batch with all-pad columns cut: ids/attn (m, T'), mask (m, R'), and the
    response columns ``rcols`` of the batch's (b, R) tensors that the trimmed rows keep."""

    ids: torch.Tensor
    attn: torch.Tensor
    mask: torch.Tensor
    rcols: slice
    response_start: int


def micro_batch(batch: TokenBatch, idx: torch.Tensor) -> MicroBatch:
    """Rows ``idx`` of ``batch``, trimmed by :func:`rlhfkit.rl.forward.trim_batch`."""
    sequences, attention, mask = batch.sequences[idx], batch.attention_mask[idx], batch.mask[idx]
    cols, rcols, start = trim_batch(sequences, attention, mask, batch.response_start)
    return MicroBatch(sequences[:, cols], attention[:, cols], mask[:, rcols], rcols, start)


def minibatch_denominator(mask: torch.Tensor, micro_batches: list[torch.Tensor], mode: str) -> tuple[float, float]:
    """(loss denominator, token count) of one mini-batch made of ``micro_batches`` index tensors."""
    tokens = float(sum(mask[idx].sum() for idx in micro_batches))
    rows = float(sum(len(idx) for idx in micro_batches))
    return (tokens if mode == "token_mean" else rows), tokens


def local_micro_batches(micro_batches: list[torch.Tensor], rows: range, grad_accum: int) -> list[torch.Tensor]:
    """The rows of one global mini-batch that this process holds (global ``rows``), as local indices
    split into at most ``grad_accum`` non-empty micro-batches (none when it holds no row of it)."""
    members = torch.cat(micro_batches)
    mine = members[(members >= rows.start) & (members < rows.stop)] - rows.start
    return [part for part in mine.chunk(grad_accum) if part.numel()] if mine.numel() else []


def global_denominator(mask: torch.Tensor, micro_batches: list[torch.Tensor], mode: str) -> tuple[float, float]:
    """:func:`minibatch_denominator` of the whole mini-batch, its shards summed over the processes."""
    denominator, tokens = minibatch_denominator(mask, micro_batches, mode)
    summed = sum_floats({"denominator": denominator, "tokens": tokens}, mask.device)
    return summed["denominator"], summed["tokens"]


def run_epochs(optimizer_step: OptimizerStep, mask: torch.Tensor, loss: MiniBatchLoss, *, epochs: int,
               num_minibatches: int, grad_accum: int, aggregation: str, generator: torch.Generator, step: int,
               stop: Callable[[Mapping[str, float]], bool] | None = None,
               rows: range | None = None, total_rows: int | None = None) -> tuple[dict[str, float], bool]:
    """``epochs`` x shuffled mini-batches of guarded optimizer steps over a batch with response ``mask`` (b, R).

    Under several processes this process holds the global rows ``rows`` of a batch of ``total_rows``:
    every process draws the same shuffle of the global batch, trains on its rows of each mini-batch
    and divides by the mini-batch's global count, so the steps are those of one process.
    Returns the stats averaged over the applied steps (``grad/norm`` included, ``train/updates`` their
    count) and whether ``stop`` (given an applied step's stats) ended the updates early.
    """
    sharded = rows is not None and total_rows is not None
    if sharded and len(rows) != mask.shape[0]:
        raise ValueError(f"this process holds {mask.shape[0]} rows but was given global rows {rows}")
    size = total_rows if sharded else mask.shape[0]
    totals: dict[str, float] = {}
    applied = 0
    for _ in range(epochs):
        for micro_batches in minibatch_indices(size, num_minibatches, grad_accum, generator):
            if sharded:
                micro_batches = local_micro_batches(micro_batches, rows, grad_accum)
                denominator, tokens = global_denominator(mask, micro_batches, aggregation)
            else:
                denominator, tokens = minibatch_denominator(mask, micro_batches, aggregation)
            result = optimizer_step(micro_batches, partial(loss, denominator=denominator, tokens=tokens), step)
            if not result.applied:
                continue
            applied += 1
            totals["grad/norm"] = totals.get("grad/norm", 0.0) + result.grad_norm
            for key, value in result.stats.items():
                totals[key] = totals.get(key, 0.0) + value
            if stop is not None and stop(result.stats):
                return _averaged(totals, applied), True
    return _averaged(totals, applied), False


def _averaged(totals: dict[str, float], applied: int) -> dict[str, float]:
    return {**{key: value / max(applied, 1) for key, value in totals.items()}, "train/updates": float(applied)}
