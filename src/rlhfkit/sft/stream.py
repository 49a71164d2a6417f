"""Which examples each optimizer step sees: a pure function of (seed, step), so resume is exact.

The data order is an endless stream of per-epoch shuffles: epoch e is a permutation of the n
examples drawn from ``numpy.random.default_rng([seed, e])``. Step s consumes stream positions
``[s*G, (s+1)*G)`` for the global batch size G, whatever the number of processes, so runs with
the same global batch see the same examples at every step and nothing is dropped at epoch ends.
"""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=4)
def epoch_permutation(num_examples: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The shuffled order of ``range(num_examples)`` for ``epoch`` (deterministic in seed and epoch)."""
    rng = np.random.default_rng([seed, epoch])
    return tuple(int(i) for i in rng.permutation(num_examples))


def global_batch_indices(step: int, num_examples: int, global_batch: int, seed: int) -> list[int]:
    """Example indices of the global batch of optimizer step ``step`` (0-based)."""
    indices = []
    for position in range(step * global_batch, (step + 1) * global_batch):
        epoch, offset = divmod(position, num_examples)
        indices.append(epoch_permutation(num_examples, seed, epoch)[offset])
    return indices


def rank_micro_batches(indices: list[int], rank: int, world_size: int, micro_batch: int,
                       accumulation: int) -> list[list[int]]:
    """Split a global batch (accumulation x world_size x micro_batch indices) into this rank's micro-batches.

    Micro-batch m of rank r is ``indices[(m * world_size + r) * micro_batch :][:micro_batch]``.
    """
    if len(indices) != accumulation * world_size * micro_batch:
        raise ValueError(f"global batch of {len(indices)} cannot split into {accumulation} x {world_size} x {micro_batch}")
    return [indices[(m * world_size + rank) * micro_batch:(m * world_size + rank + 1) * micro_batch]
            for m in range(accumulation)]


def total_steps(num_examples: int, global_batch: int, num_epochs: float, max_steps: int | None) -> int:
    """Optimizer steps of a run: ``max_steps`` when given, else ceil(epochs x examples / global batch)."""
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(num_epochs * num_examples / global_batch))
