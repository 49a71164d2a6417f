"""Does an ensemble know when it is wrong? Confidence of a pair from its members' margins, and the
accuracy of the most confident half of the pairs minus that of the least confident half.
"""

from __future__ import annotations

import numpy as np

CONFIDENCES = ("low_spread", "margin", "margin_over_spread")


def pair_confidence(margins: np.ndarray, kind: str) -> np.ndarray:
    """Confidence per pair from (pairs, members) chosen-minus-rejected margins; higher = surer.

    ``low_spread``: minus the members' std (they agree); ``margin``: |mean margin| (no spread, what
    one model has); ``margin_over_spread``: |mean margin| / std, how many member stds the decision
    lies from a tie.
    """
    margins = np.asarray(margins, dtype=float)
    if margins.ndim != 2 or margins.shape[1] < 1:
        raise ValueError(f"margins must be (pairs, members), got shape {margins.shape}")
    mean, spread = margins.mean(axis=1), margins.std(axis=1)
    if kind == "low_spread":
        return -spread
    if kind == "margin":
        return np.abs(mean)
    if kind == "margin_over_spread":
        return np.abs(mean) / np.maximum(spread, 1e-12)
    raise ValueError(f"unknown confidence {kind!r}; choose one of {', '.join(CONFIDENCES)}")


def confident_half(confidence: np.ndarray) -> np.ndarray:
    """Boolean mask of the ceil(n/2) most confident pairs (ties broken by position, earlier first)."""
    confidence = np.asarray(confidence, dtype=float)
    order = np.argsort(-confidence, kind="stable")
    mask = np.zeros(len(confidence), dtype=bool)
    mask[order[: (len(confidence) + 1) // 2]] = True
    return mask


def half_accuracy_gap(correct: np.ndarray, confident: np.ndarray) -> float:
    """Mean of ``correct`` where ``confident`` minus where not; 0 when either side is empty."""
    correct, confident = np.asarray(correct, dtype=float), np.asarray(confident, dtype=bool)
    if len(correct) != len(confident):
        raise ValueError(f"{len(correct)} outcomes but {len(confident)} confidence flags")
    if confident.all() or not confident.any():
        return 0.0
    return float(correct[confident].mean() - correct[~confident].mean())
