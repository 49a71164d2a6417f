"""Whether an ensemble's (or a multi-head model's) members tell its right answers from its wrong ones.

On held-out comparisons: pairs ranked by |mean margin| / member std, then the pairwise accuracy of the
most confident half minus that of the least confident half, with a bootstrap interval that resamples
prompts (pairs of one prompt share responses, so resampling pairs would understate the interval).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from rlhfkit.data.records import Comparison, FeedbackRecord
from rlhfkit.reward.confidence import confident_pairs, half_accuracy_gap
from rlhfkit.reward.evaluation import Metric, bootstrap_ci, pairwise_outcomes

METRIC = "confident_minus_unsure_accuracy"
CONFIDENCE = "margin_over_spread"


def member_margins(model: Any, pairs: Sequence[Comparison]) -> np.ndarray:
    """Chosen-minus-rejected reward of every head/member; (pairs, heads) raw scores."""
    prompts = [r.prompt for r in pairs]
    with torch.no_grad():
        chosen = model.score_texts(prompts, [r.chosen for r in pairs], per_head=True)
        rejected = model.score_texts(prompts, [r.rejected for r in pairs], per_head=True)
    return (chosen - rejected).float().cpu().numpy()


def group_rows(groups: Sequence[Hashable]) -> list[np.ndarray]:
    """Row indices of each distinct group key, in order of first appearance."""
    rows: dict[Hashable, list[int]] = {}
    for index, key in enumerate(groups):
        rows.setdefault(key, []).append(index)
    return [np.array(r) for r in rows.values()]


def confidence_gap(margins: np.ndarray, resamples: int, seed: int, confidence: float = 0.95,
                   groups: Sequence[Hashable] | None = None, kind: str = CONFIDENCE) -> Metric:
    """Confident-half minus unsure-half accuracy of the mean margin (halves by ``kind``), with its CI.

    The halves are fixed on all pairs; the bootstrap resamples whole ``groups`` (default: single pairs).
    """
    if groups is not None and len(groups) != len(margins):
        raise ValueError(f"{len(groups)} group keys for {len(margins)} pairs")
    correct = pairwise_outcomes(margins.mean(axis=1), np.zeros(len(margins)))
    confident = confident_pairs(margins, kind)
    clusters = group_rows(range(len(margins)) if groups is None else groups)

    def statistic(picked: np.ndarray) -> float:
        rows = np.concatenate([clusters[i] for i in picked])
        return half_accuracy_gap(correct[rows], confident[rows])

    low, high = bootstrap_ci(statistic, len(clusters), resamples, confidence, seed)
    return Metric(statistic(np.arange(len(clusters))), low, high, len(margins))


def ensemble_confidence_metric(model: Any, records: Sequence[FeedbackRecord], resamples: int, seed: int
                               ) -> Metric | None:
    """:func:`confidence_gap` on the decided comparisons of ``records`` by prompt; None for one head or no pairs."""
    pairs = [r for r in records if isinstance(r, Comparison) and not r.tie]
    if len(pairs) < 2:
        return None
    margins = member_margins(model, pairs)
    if margins.shape[1] < 2:
        return None
    return confidence_gap(margins, resamples, seed, groups=[r.prompt for r in pairs])
