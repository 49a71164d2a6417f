"""Whether an ensemble's (or a multi-head model's) spread tells its right answers from its wrong ones.

On held-out comparisons: pairs ranked by |mean margin| / member std, then the pairwise accuracy of
the most confident half minus that of the least confident half, with a bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlhfkit.data.records import Comparison, FeedbackRecord
from rlhfkit.reward.confidence import confident_half, half_accuracy_gap, pair_confidence
from rlhfkit.reward.evaluation import Metric, bootstrap_ci, pairwise_outcomes

METRIC = "confident_minus_unsure_accuracy"


def member_margins(model: Any, pairs: Sequence[Comparison]) -> np.ndarray:
    """Chosen-minus-rejected reward of every head/member; (pairs, heads) raw scores."""
    prompts = [r.prompt for r in pairs]
    with torch.no_grad():
        chosen = model.score_texts(prompts, [r.chosen for r in pairs], per_head=True)
        rejected = model.score_texts(prompts, [r.rejected for r in pairs], per_head=True)
    return (chosen - rejected).float().cpu().numpy()


def confidence_gap(margins: np.ndarray, resamples: int, seed: int, confidence: float = 0.95) -> Metric:
    """Confident-half minus unsure-half accuracy of the mean margin (halves by |mean| / std), with its CI."""
    correct = pairwise_outcomes(margins.mean(axis=1), np.zeros(len(margins)))
    confident = confident_half(pair_confidence(margins, "margin_over_spread"))
    statistic = lambda i: half_accuracy_gap(correct[i], confident[i])  # noqa: E731
    low, high = bootstrap_ci(statistic, len(margins), resamples, confidence, seed)
    return Metric(statistic(np.arange(len(margins))), low, high, len(margins))


def ensemble_confidence_metric(model: Any, records: Sequence[FeedbackRecord], resamples: int, seed: int
                               ) -> Metric | None:
    """:func:`confidence_gap` on the decided comparisons of ``records``; None for one head or no pairs."""
    pairs = [r for r in records if isinstance(r, Comparison) and not r.tie]
    if len(pairs) < 2:
        return None
    margins = member_margins(model, pairs)
    return confidence_gap(margins, resamples, seed) if margins.shape[1] > 1 else None
