"""Prompt prefill without most of the left padding: prompts grouped by length, one forward per group.

A left-padded prefill computes every row at the longest prompt's width; on ``bench/rollout.py``'s
prompts (4-23 words) about 40% of those row-positions are padding. Rows sorted by length are cut
into at most a few groups, each run at its own longest length, and their keys/values are written
right-aligned into the rollout's preallocated cache (:mod:`rlhfkit.rl.cached_kv`), so the decode
steps see exactly the layout of a padded prefill. A prompt that several rows share (a GRPO group)
runs once; its keys, values and last logits are copied to the other rows. The hand-written steps
(:mod:`rlhfkit.rl.cached_gpt2`) skip the padding in every product (:mod:`rlhfkit.rl.row_packing`), so
for them a padded row costs only its attention and the groups are chosen by that cost: mostly one.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rlhfkit.models.positions import position_ids_from_mask
from rlhfkit.models.shared_prefix import prefix_groups
from rlhfkit.rl.cached_kv import copy_rows, set_prefill_rows

GROUP_COST = 16  # one more forward call costs about as much as this many padded row-positions (CPU, small models)
MAX_GROUPS = 4
MAX_DISTINCT = 64


def length_groups(lengths: list[int], group_cost: float = GROUP_COST, max_groups: int = MAX_GROUPS,
                  row_cost: Callable[[int], float] | None = None) -> list[list[int]]:
    """Row indices grouped by length (shortest first) minimising sum(rows x row_cost(longest)) + group_cost per
    group; ``row_cost`` defaults to the width itself (a padded forward computes every row at its group's width).

    Exact dynamic programme over the distinct lengths (a group always ends at a distinct length); past
    ``MAX_DISTINCT`` distinct lengths, over lengths rounded up to a coarser grid (so it stays quick).
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    grid = max(1, -(-max(lengths) // MAX_DISTINCT)) if len(set(lengths)) > MAX_DISTINCT else 1
    rounded = sorted(-(-n // grid) * grid for n in lengths)
    distinct = sorted(set(rounded))
    # rows_upto[j]: rows whose (rounded) length is <= distinct[j - 1]
    rows_upto = [0] + [bisect.bisect_right(rounded, value) for value in distinct]
    count = len(distinct)
    width_cost = [float(width) if row_cost is None else row_cost(width) for width in distinct]
    inf = float("inf")
    best = [[inf] * (count + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (count + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0.0
    for groups in range(1, max_groups + 1):
        for end in range(1, count + 1):
            for start in range(end):
                cost = best[groups - 1][start] + (rows_upto[end] - rows_upto[start]) * width_cost[end - 1] + group_cost
                if cost < best[groups][end]:
                    best[groups][end], cut[groups][end] = cost, start
    groups = min(range(1, max_groups + 1), key=lambda g: best[g][count])
    bounds, end = [], count
    for level in range(groups, 0, -1):
        start = cut[level][end]
        bounds.append((rows_upto[start], rows_upto[end]))
        end = start
    return [order[a:b] for a, b in reversed(bounds)]


def grouped_prefill(model: nn.Module, cache: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                    cache_kw: str, forward_kwargs: dict[str, Any],
                    forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    row_cost: Callable[[int], float] | None = None) -> torch.Tensor:
    """Fill ``cache`` (preallocated, empty) with left-padded prompts (b, P), one forward per length group;
    returns the (b, V) float32 logits of each prompt's last token. ``forward(ids, mask, positions)`` -> last
    logits replaces the model's forward (the fast path, :meth:`rlhfkit.rl.cached_gpt2.GPT2Stepper.prefill`);
    ``row_cost`` is what a row costs at a group's width when that forward skips the padding in its products
    (:meth:`~rlhfkit.rl.cached_gpt2.GPT2Stepper.padding_cost`: then mostly one group)."""
    batch, width = prompt_ids.shape
    lengths = prompt_mask.sum(-1).tolist()
    logits: torch.Tensor | None = None
    sources, targets = [], []
    try:
        for group in length_groups(lengths, GROUP_COST, MAX_GROUPS, row_cost):
            rows = torch.tensor(group, device=prompt_ids.device)
            start = width - max(lengths[i] for i in group)
            ids, mask = prompt_ids[rows, start:], prompt_mask[rows, start:]
            same = prefix_groups(ids, mask, ids.shape[1])
            run = same.representatives
            if run.numel() < rows.numel():
                source = rows[run][same.group_of_row]
                copied = source != rows
                sources.append(source[copied])
                targets.append(rows[copied])
                rows, ids, mask = rows[run], ids[run], mask[run]
            set_prefill_rows(cache, rows, start)
            positions = position_ids_from_mask(mask)
            if forward is not None:
                last = forward(ids, mask, positions)
            else:
                last = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             **forward_kwargs, **{cache_kw: cache}).logits[:, -1].float()
            if logits is None:
                logits = last.new_empty((batch, last.shape[-1]))
            logits[rows] = last
    finally:
        set_prefill_rows(cache, None)
    if logits is None:
        raise ValueError("no prompts to prefill")
    if sources:
        source, target = torch.cat(sources), torch.cat(targets)
        copy_rows(cache, source, target, width)
        logits[target] = logits[source]
    for layer in cache.layers:
        layer.set_length(width)
    return logits
