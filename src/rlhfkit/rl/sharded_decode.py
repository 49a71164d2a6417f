"""A rollout of a GPT-2 or Llama-family model decoded as row shards, one CPU thread each, for ``CachedSampler``.

On a few cores a decode step of a small model is dozens of small products and elementwise ops; with
PyTorch's intra-op threads each op that runs in parallel wakes the sleeping OpenMP workers
(``OMP_WAIT_POLICY=PASSIVE``), which costs more than the op at a few dozen rows. Splitting the batch
into one shard of rows per thread, each shard stepped with one intra-op thread over its own in-place KV
cache, keeps every core busy with no wake-ups: on ``bench/rollout.py``'s model (4.2M parameters, 64 rows
of 32 tokens, 2 cores) a rollout took ~28% less wall time in a first measurement. Shards share the
model's modules (read-only in eval) and are stepped from Python threads, as PyTorch's ops release the
GIL. Each shard also chooses its rows' tokens (a row's choice does not depend on the others), from uniforms
the calling thread draws for all rows at once, so the random draws are those of an unsharded rollout. Two shards lose to one thread at a few rows, where each step is
mostly reading the weights (measured per step on that model: 4 rows 4.9 against 3.0 ms, 16 rows even,
32 rows 5.2-8.1 against 6.7-9.9 ms), so once finished rows are dropped down to ``merge_rows`` the shards
become one batch again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rlhfkit.rl.cached_gpt2 import GPT2Stepper
from rlhfkit.rl.cached_kv import concatenated, preallocated_cache
from rlhfkit.rl.cached_prefill import grouped_prefill
from rlhfkit.utils.runtime import across_threads

#: How a shard chooses its rows' tokens: (logits (n, V), uniforms (n, 1) or None) -> (chosen (n,), log-probs (n,)),
#: with the step's uniforms for all rows (None when greedy), sliced per shard.
Pick = tuple[Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]


def shard_sizes(rows: int, shards: int) -> list[int]:
    """``rows`` split into ``shards`` contiguous sizes differing by at most one (larger first)."""
    base, extra = divmod(rows, shards)
    return [base + (1 if index < extra else 0) for index in range(shards)]


def decode_shards(batch: int, threads: int, serial_rows: int, merge_rows: int) -> int:
    """How many row shards to decode ``batch`` rows in: one per intra-op thread when every shard fits the
    one-thread regime (at most ``serial_rows`` rows, :func:`rlhfkit.rl.rollout.serial_decode_rows`) and the
    batch is above ``merge_rows`` (at or below it, one thread steps all rows faster); else 1."""
    if threads < 2 or batch < threads or batch <= merge_rows or serial_rows <= 0:
        return 1
    return threads if -(-batch // threads) <= serial_rows else 1


class ShardedStepper:
    """Decode steps of a model whose batch is split into row shards, each with its own in-place cache and
    stepper (:class:`~rlhfkit.rl.cached_gpt2.GPT2Stepper` or a subclass), stepped in parallel; the interface of
    one stepper.

    Rows keep their batch order: shard ``i`` holds the next ``sizes[i]`` rows. The caller must hold one
    intra-op thread in its own thread while stepping (the shards' threads set theirs).
    """

    def __init__(self, model: nn.Module, trunk: nn.Module, lm_head: nn.Module, mask: torch.Tensor,
                 sizes: Sequence[int], prompt_length: int, stepper: type[GPT2Stepper] = GPT2Stepper) -> None:
        """``mask`` (b, capacity): the rows' prompt mask then ones; ``sizes``: rows per shard, in order;
        ``stepper``: the architecture's stepper class."""
        self.sizes = list(sizes)
        self.steppers: list[GPT2Stepper] = []
        start = 0
        for size in self.sizes:
            cache = preallocated_cache(model, size, mask.shape[1], zeroed=prompt_length)
            if cache is None:
                raise ValueError("sharded decoding needs a model of plain full-attention layers")
            self.steppers.append(stepper(trunk, lm_head, cache, mask[start:start + size]))
            self.steppers[-1].allocate_cache()  # here, not in the shard's thread (whose heap would keep it)
            start += size

    @property
    def runs_scripted(self) -> bool:
        """Whether the shards' decode steps run a TorchScript function."""
        return any(stepper.runs_scripted for stepper in self.steppers)

    def _bounds(self) -> list[tuple[int, int]]:
        bounds, start = [], 0
        for size in self.sizes:
            bounds.append((start, start + size))
            start += size
        return bounds

    @staticmethod
    def _run(works: list[Callable[[], Any] | None]) -> list[Any]:
        """Each shard's work (None: an empty shard) in parallel (:func:`rlhfkit.utils.runtime.across_threads`)."""
        live = [index for index, work in enumerate(works) if work is not None]
        results: list[Any] = [None] * len(works)
        for index, result in zip(live, across_threads([works[index] for index in live])):
            results[index] = result
        return results

    def _picked(self, logits_of: Callable[[GPT2Stepper, int, int], torch.Tensor], pick: Pick
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every shard's logits, and from them its rows' choice, in parallel -> (chosen (b,), log-probs (b,))."""
        choose, uniform = pick

        def work(stepper: GPT2Stepper, start: int, end: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
            return lambda: choose(logits_of(stepper, start, end), None if uniform is None else uniform[start:end])

        results = [pair for pair in self._run([work(stepper, start, end) if end > start else None
                                               for stepper, (start, end) in zip(self.steppers, self._bounds())])
                   if pair is not None]
        return torch.cat([chosen for chosen, _ in results]), torch.cat([logprobs for _, logprobs in results])

    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cache_kw: str,
                forward_kwargs: dict[str, Any], pick: Pick) -> tuple[torch.Tensor, torch.Tensor]:
        """Each shard's prompts prefilled into its cache (grouped by length), then the first token chosen."""
        return self._picked(lambda stepper, start, end: grouped_prefill(
            None, stepper.cache, prompt_ids[start:end], prompt_mask[start:end], cache_kw, forward_kwargs,
            stepper.prefill, stepper.padding_cost), pick)

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, length: int, pick: Pick
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 1) ids at (b, 1) positions, each shard attending to its first ``length`` positions, then the next
        token chosen -> (chosen (b,), log-probs (b,))."""
        return self._picked(lambda stepper, start, end: stepper(ids[start:end], positions[start:end], length), pick)

    def merged(self, mask: torch.Tensor) -> GPT2Stepper:
        """One stepper over every row (the shards' caches concatenated), with the rows' (b, capacity) mask."""
        first = self.steppers[0]
        return type(first)(first.trunk, first.lm_head, concatenated([stepper.cache for stepper in self.steppers]),
                           mask)

    def select(self, keep: torch.Tensor) -> None:
        """Keep rows ``keep`` (ascending batch indices), each shard its own, caches compacted."""
        sizes = []
        for stepper, (start, end) in zip(self.steppers, self._bounds()):
            mine = keep[(keep >= start) & (keep < end)] - start
            if end > start:
                stepper.select(mine)
            sizes.append(int(mine.numel()))
        self.sizes = sizes
