"""Does an ensemble know when it is wrong? Confidence of a pair from its members' margins, and the
accuracy of the most confident half of the pairs minus that of the least confident half.
"""

from __future__ import annotations

import numpy as np

CONFIDENCES = ("agreement", "low_spread", "margin", "margin_over_spread")


def pair_confidence(margins: np.ndarray, kind: str) -> np.ndarray:
    """Confidence per pair from (pairs, members) chosen-minus-rejected margins; higher = surer.

    ``agreement``: share of members whose margin has the sign of the mean margin (the ensemble's
    decision); ``low_spread``: minus the members' std; ``margin``: |mean margin| (no spread, what one
    model has); ``margin_over_spread``: |mean margin| / std, member stds between the decision and a tie.
    """
    margins = np.asarray(margins, dtype=float)
    if margins.ndim != 2 or margins.shape[1] < 1:
        raise ValueError(f"margins must be (pairs, members), got shape {margins.shape}")
    mean, spread = margins.mean(axis=1), margins.std(axis=1)
    if kind == "agreement":
        return (np.sign(margins) == np.sign(mean)[:, None]).mean(axis=1)
    if kind == "low_spread":
        return -spread
    if kind == "margin":
        return np.abs(mean)
    if kind == "margin_over_spread":
        return np.abs(mean) / np.maximum(spread, 1e-12)
    raise ValueError(f"unknown confidence {kind!r}; choose one of {', '.join(CONFIDENCES)}")


def confident_half(confidence: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the ceil(n/2) most confident pairs; ties go to the larger ``tiebreak``, then earlier."""
    confidence = np.asarray(confidence, dtype=float)
    second = np.zeros_like(confidence) if tiebreak is None else np.asarray(tiebreak, dtype=float)
    if second.shape != confidence.shape:
        raise ValueError(f"tiebreak has shape {second.shape}, confidence {confidence.shape}")
    order = np.lexsort((np.arange(len(confidence)), -second, -confidence))
    mask = np.zeros(len(confidence), dtype=bool)
    mask[order[: (len(confidence) + 1) // 2]] = True
    return mask


def confident_pairs(margins: np.ndarray, kind: str) -> np.ndarray:
    """The most confident half of the pairs by ``kind``, ties (agreement has k+1 levels) broken by |mean margin|."""
    margins = np.asarray(margins, dtype=float)
    return confident_half(pair_confidence(margins, kind), np.abs(margins.mean(axis=1)))


def half_accuracy_gap(correct: np.ndarray, confident: np.ndarray) -> float:
    """Mean of ``correct`` where ``confident`` minus where not; 0 when either side is empty."""
    correct, confident = np.asarray(correct, dtype=float), np.asarray(confident, dtype=bool)
    if len(correct) != len(confident):
        raise ValueError(f"{len(correct)} outcomes but {len(confident)} confidence flags")
    if confident.all() or not confident.any():
        return 0.0
    return float(correct[confident].mean() - correct[~confident].mean())
