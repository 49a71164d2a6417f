"""A KV cache that is allocated once per rollout and written in place, for ``CachedSampler``.

transformers' ``DynamicCache`` concatenates every layer's keys and values at every step (the whole
cache copied per token, a cost that grows with the response length). Here each layer owns a
zeroed (batch, heads, capacity, head_dim) buffer; a step writes one column and attention reads a
view of the filled prefix, so attention still covers only the tokens so far. On CPU the strided
view makes the attention products ~25% slower, so this breaks even at 32 new tokens on
``bench/rollout.py`` and saves 3-7% of the CPU time at 128; it is what the GPT-2 step
(:mod:`rlhfkit.rl.cached_gpt2`) and the grouped prefill write into. While
``prefill_rows`` is set, updates write a subset of rows at a column offset (a prefill of prompts
grouped by length, see :mod:`rlhfkit.rl.cached_prefill`); the unwritten padding columns stay zero
and are masked out by the attention mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer


def uninitialized(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A buffer whose contents are whatever the memory held (positions are written before they are read)."""
    return torch.empty(shape, dtype=dtype, device=device)


class PreallocatedLayer(DynamicLayer):
    """One layer's keys/values in a buffer of ``capacity`` positions for ``batch`` rows, filled in place."""

    is_croppable = False

    def __init__(self, batch: int, capacity: int, zeroed: int | None = None) -> None:
        super().__init__()
        self.batch, self.capacity, self.length = batch, capacity, 0
        self.zeroed = capacity if zeroed is None else min(zeroed, capacity)
        self.prefill_rows: tuple[torch.Tensor, int] | None = None  # (rows, first column) while prefilling a group
        self.unchecked = False  # allocated ahead, not yet checked against the states of a first update

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate buffers shaped after the first keys/values (their dtype and device), the first ``zeroed``
        positions zero: the padding a grouped prefill leaves unwritten is read (masked) and must be finite;
        later positions are written before they are read."""
        self.allocate(key_states.shape[1], key_states.shape[-1], value_states.shape[-1], key_states.dtype,
                      value_states.dtype, key_states.device)

    def allocate(self, heads: int, key_dim: int, value_dim: int, key_dtype: torch.dtype, value_dtype: torch.dtype,
                 device: torch.device) -> None:
        """Allocate the buffers now, in the calling thread (whose heap then holds them; see
        :class:`~rlhfkit.rl.sharded_decode.ShardedStepper`), the first ``zeroed`` positions zero. The first update
        checks them against its states (autocast can leave keys and values in different dtypes: rotary positions
        upcast the keys) and allocates again if they differ."""
        self.device = device
        self.key_buffer = uninitialized((self.batch, heads, self.capacity, key_dim), key_dtype, device)
        self.value_buffer = uninitialized((self.batch, heads, self.capacity, value_dim), value_dtype, device)
        self.unchecked = True
        self.key_buffer[:, :, : self.zeroed].zero_()
        self.value_buffer[:, :, : self.zeroed].zero_()
        self._views()
        self.is_initialized = True

    def _fits(self, key_states: torch.Tensor, value_states: torch.Tensor) -> bool:
        """Whether the buffers hold keys/values of these heads, sizes, dtype and device."""
        keys, values = self.key_buffer, self.value_buffer
        return (keys.dtype == key_states.dtype and keys.device == key_states.device
                and keys.shape[1] == key_states.shape[1] and keys.shape[-1] == key_states.shape[-1]
                and values.dtype == value_states.dtype and values.shape[-1] == value_states.shape[-1])

    def _views(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys/values in place; return the filled prefix (or, prefilling a group, its own)."""
        if not self.is_initialized or (self.unchecked and not self._fits(key_states, value_states)):
            self.lazy_initialization(key_states, value_states)  # allocated ahead for other states: again for these
        self.unchecked = False
        width = key_states.shape[-2]
        if self.prefill_rows is not None:
            rows, start = self.prefill_rows
            self.key_buffer[rows, :, start:start + width] = key_states
            self.value_buffer[rows, :, start:start + width] = value_states
            return key_states, value_states
        end = self.length + width
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions cannot hold {end}")
        self.key_buffer[:, :, self.length:end] = key_states
        self.value_buffer[:, :, self.length:end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Number of positions filled (0 while prefilling groups)."""
        return self.length

    def set_length(self, length: int) -> None:
        """Mark the first ``length`` positions as filled (after a grouped prefill wrote them)."""
        self.length = length
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only rows ``indices`` (compaction of finished rows)."""
        if self.is_initialized:
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self.batch = int(indices.numel())
            self._views()

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Reorder the rows (transformers' beam-search hook)."""
        self.batch_select_indices(beam_idx)


def preallocated_cache(model: nn.Module, batch: int, capacity: int, zeroed: int | None = None) -> DynamicCache | None:
    """A ``DynamicCache`` whose layers are :class:`PreallocatedLayer` (the first ``zeroed`` positions zero, all
    when None), or None when the model has layers that are not plain full attention (sliding windows, linear
    attention: kept on transformers' own)."""
    cache = DynamicCache(config=model.config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [PreallocatedLayer(batch, capacity, zeroed) for _ in cache.layers]
    return cache


def concatenated(caches: list[DynamicCache]) -> DynamicCache:
    """One cache holding the rows of preallocated ``caches`` in turn (same capacity and filled length)."""
    merged = DynamicCache()
    merged.layers = []
    for layers in zip(*(cache.layers for cache in caches)):
        live = [layer for layer in layers if layer.is_initialized]
        layer = PreallocatedLayer(sum(part.batch for part in layers), layers[0].capacity, layers[0].zeroed)
        layer.length = layers[0].length
        if live:
            layer.device = live[0].device
            layer.key_buffer = torch.cat([part.key_buffer for part in live])
            layer.value_buffer = torch.cat([part.value_buffer for part in live])
            layer.is_initialized = True
            layer._views()
        merged.layers.append(layer)
    return merged


def as_dynamic(cache: DynamicCache) -> None:
    """Replace each preallocated layer by transformers' ``DynamicLayer`` holding its filled prefix."""
    layers = []
    for layer in cache.layers:
        plain = DynamicLayer()
        if layer.is_initialized:
            plain.update(layer.keys, layer.values)
        layers.append(plain)
    cache.layers = layers


def copy_rows(cache: Any, sources: torch.Tensor, targets: torch.Tensor, width: int) -> None:
    """Give rows ``targets`` the first ``width`` cached positions of rows ``sources`` (a prompt prefilled once)."""
    for layer in cache.layers:
        layer.key_buffer[targets, :, :width] = layer.key_buffer[sources, :, :width]
        layer.value_buffer[targets, :, :width] = layer.value_buffer[sources, :, :width]


def set_prefill_rows(cache: Any, rows: torch.Tensor | None, start: int = 0) -> None:
    """Route every layer's next updates to rows ``rows`` from column ``start`` (None: normal appends)."""
    for layer in cache.layers:
        layer.prefill_rows = None if rows is None else (rows, start)
