"""Numeric ratings: precision-weighted consensus with per-annotator noise variances."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np


def rating_reliability(
    ratings: Sequence[tuple[Hashable, str, float]],
    *,
    gold: Mapping[Hashable, float] | None = None,
    prior_variance: float = 1.0,
    prior_strength: float = 2.0,
    max_iter: int = 100,
    tol: float = 1e-8,
) -> tuple[dict[Hashable, float], dict[str, float]]:
    """Precision-weighted item means and per-annotator noise variances for numeric ratings.

    Model rating = truth_i + N(0, sigma_j^2) (Raykar et al. 2010, "Learning from crowds", regression case);
    alternate truth_i = sum_j r_ij / sigma_j^2 / sum_j 1 / sigma_j^2 (gold items fixed at their gold value)
    and sigma_j^2 = (sum_i (r_ij - truth_i)^2 + prior_strength * prior_variance) / (n_j + prior_strength),
    an inverse-gamma MAP that keeps annotators with few ratings near `prior_variance`.
    Input rows are (item, annotator, rating); returns (truth per item, sigma^2 per annotator).
    """
    if not ratings:
        raise ValueError("rating_reliability: no ratings")
    items = sorted({r[0] for r in ratings}, key=repr)
    names = sorted({r[1] for r in ratings})
    i_of = {x: i for i, x in enumerate(items)}
    j_of = {x: j for j, x in enumerate(names)}
    ii = np.array([i_of[r[0]] for r in ratings])
    jj = np.array([j_of[r[1]] for r in ratings])
    rr = np.array([float(r[2]) for r in ratings])
    fixed = np.array([x in (gold or {}) for x in items])
    fixed_value = np.array([float((gold or {}).get(x, 0.0)) for x in items])
    var = np.full(len(names), prior_variance)
    truth = np.zeros(len(items))
    n_j = np.bincount(jj, minlength=len(names))
    for _ in range(max_iter):
        prec = 1.0 / var[jj]
        new_truth = np.bincount(ii, rr * prec, len(items)) / np.bincount(ii, prec, len(items))
        new_truth = np.where(fixed, fixed_value, new_truth)
        var = (np.bincount(jj, (rr - new_truth[ii]) ** 2, len(names)) + prior_strength * prior_variance) / (
            n_j + prior_strength)
        change = float(np.abs(new_truth - truth).max())
        truth = new_truth
        if change < tol:
            break
    return {x: float(truth[i]) for x, i in i_of.items()}, {x: float(var[j]) for x, j in j_of.items()}
