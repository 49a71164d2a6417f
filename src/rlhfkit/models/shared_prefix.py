"""Rows that begin with the same tokens run those tokens once.

A GRPO group's completions share their prompt, and so do a DPO pair's two responses. Instead of
running the prompt once per row, one forward over one row per distinct prefix fills a KV cache;
each row then reads its prefix's keys and values while the model runs the rest of the row. The
attention inputs are the same as a whole-row forward's, so the outputs are too (up to float
rounding), for ``distinct / rows`` of the prefix's work. Gradients flow through the shared cache:
a prefix's parameters receive the sum over its rows, as they would from separate copies.

Only models whose cache keeps every position (full attention, or a sliding window at least as long
as the rows) and that run without dropout (one draw per prefix would correlate the rows) share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from rlhfkit.models.head_rows import lm_head_rows
from rlhfkit.models.signature import cache_argument, forward_parameters
from rlhfkit.utils.precision import FLOAT_DROPOUT_ATTRIBUTES

#: Share only when it skips at least this fraction of a whole-row forward's positions: below it the
#: second forward call costs about what it saves on a CPU.
MIN_SAVED_FRACTION = 0.1


@dataclass(frozen=True)
class PrefixGroups:
    """Rows grouped by their first columns: one representative row per group, and each row's group."""

    representatives: torch.Tensor  # (u,) the first row of each distinct prefix
    group_of_row: torch.Tensor     # (b,) index into ``representatives``

    def saved_fraction(self, length: int, total: int) -> float:
        """Share of a whole-row forward's positions that sharing a ``length``-column prefix skips."""
        rows = self.group_of_row.numel()
        return (rows - self.representatives.numel()) * length / max(rows * total, 1)


def prefix_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int) -> PrefixGroups:
    """Group the rows of (b, T) ``input_ids`` whose first ``length`` columns hold the same tokens and mask."""
    key = input_ids[:, :length].masked_fill(attention_mask[:, :length] == 0, -1)
    _, group_of_row = torch.unique(key, dim=0, return_inverse=True)
    rows = torch.arange(key.shape[0], device=key.device)
    count = int(group_of_row.max()) + 1 if rows.numel() else 0
    first = torch.full((count,), key.shape[0], dtype=torch.long, device=key.device)
    first = first.scatter_reduce(0, group_of_row, rows, reduce="amin")
    return PrefixGroups(first, group_of_row)


def live_dropout(model: nn.Module) -> bool:
    """Whether a forward of ``model`` draws dropout now (train mode and some rate above 0)."""
    if not model.training:
        return False
    for sub in model.modules():
        if isinstance(sub, nn.Dropout) and sub.p > 0:
            return True
        if any(isinstance(getattr(sub, name, None), float) and getattr(sub, name) > 0
               for name in FLOAT_DROPOUT_ATTRIBUTES):
            return True
    config = getattr(model, "config", None)
    return any(isinstance(getattr(config, name, None), float) and getattr(config, name) > 0
               for name in ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob"))


def keeps_every_position(model: nn.Module, total: int) -> bool:
    """Whether ``model``'s KV cache holds all ``total`` positions: full-attention layers, or sliding
    windows at least that long (a cropped window would hide prefix positions from later rows)."""
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a capability probe: any config transformers cannot build a cache for runs whole rows
        return False
    for layer in layers:
        if type(layer) is DynamicSlidingWindowLayer and layer.sliding_window >= total:
            continue
        if type(layer) is not DynamicLayer:
            return False
    return bool(layers)


def can_share_prefix(model: nn.Module, total: int) -> bool:
    """Whether rows of ``total`` positions may run a shared prefix through ``model``'s KV cache."""
    if not {"cache", "past_key_values"} & forward_parameters(model):
        return False
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    checkpointing = getattr(target, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers before the rename
        checkpointing = getattr(target, "is_gradient_checkpointing", False)
    if model.training and checkpointing:
        return False  # transformers drops the cache under gradient checkpointing
    return not live_dropout(model) and keeps_every_position(model, total)


@dataclass
class PrefixCache:
    """The KV cache of some rows' shared first ``length`` columns, and the forward keyword that takes it."""

    length: int
    argument: str
    cache: Any


@dataclass
class SharedPrefix:
    """Keys and values of each distinct prefix, computed once, handed out per row."""

    length: int
    groups: PrefixGroups
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (u, heads, length, head_dim)
    argument: str
    config: Any

    def for_rows(self, rows: slice | torch.Tensor) -> PrefixCache:
        """A fresh cache holding the prefix of each of ``rows`` (differentiable into the shared one)."""
        index = self.groups.group_of_row[rows]
        cache = DynamicCache(config=self.config)
        for layer, (keys, values) in enumerate(self.layers):
            cache.update(keys.index_select(0, index), values.index_select(0, index), layer)
        return PrefixCache(self.length, self.argument, cache)


def shared_prefix(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                  length: int) -> SharedPrefix | None:
    """Run each distinct first-``length``-columns prefix of (b, T) ``input_ids`` once and keep its KV cache,
    or None when no prefix repeats enough to pay (:data:`MIN_SAVED_FRACTION`) or the model cannot share."""
    total = input_ids.shape[1]
    if not 0 < length < total or input_ids.shape[0] < 2:
        return None
    groups = prefix_groups(input_ids, attention_mask, length)
    if groups.saved_fraction(length, total) < MIN_SAVED_FRACTION or not can_share_prefix(model, total):
        return None
    rows = groups.representatives
    no_logits = torch.zeros((rows.numel(), length), dtype=torch.bool, device=input_ids.device)
    with lm_head_rows(model, no_logits):  # the prefix's own logits are not needed
        output = model(input_ids=input_ids[rows, :length], attention_mask=attention_mask[rows, :length],
                       position_ids=position_ids[rows, :length], use_cache=True)
    cache = getattr(output, "cache", None)
    if cache is None:
        cache = getattr(output, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
        return None
    return SharedPrefix(length, groups, [(layer.keys, layer.values) for layer in layers], cache_argument(model),
                        model.config)
