"""Inter-annotator agreement: Cohen's kappa, Fleiss' kappa and Krippendorff's alpha.

Pure numpy. Chance-corrected agreement tells whether a campaign's labels mean anything before
they train a reward model: 1 is perfect agreement, 0 is what random labelling would give.
- Cohen (1960), "A coefficient of agreement for nominal scales"; weighted form Cohen (1968).
- Fleiss (1971), "Measuring nominal scale agreement among many raters".
- Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability" (coincidence-matrix form,
  any number of coders, missing values allowed, nominal/ordinal/interval/ratio metrics).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np

Metric = Literal["nominal", "ordinal", "interval", "ratio"]
KappaWeights = Literal["none", "linear", "quadratic"]


def _is_missing(value: object) -> bool:
    """None and float NaN both mean 'this coder did not label this unit'."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def cohen_kappa(
    labels_a: Sequence[Hashable],
    labels_b: Sequence[Hashable],
    *,
    categories: Sequence[Hashable] | None = None,
    weights: KappaWeights = "none",
) -> float:
    """Cohen's kappa between two raters: (p_o - p_e) / (1 - p_e), on items both labelled.

    labels_a[i] and labels_b[i] are the two raters' labels of item i (None/NaN = missing; such items
    are dropped). `weights` "linear"/"quadratic" gives Cohen's (1968) weighted kappa for ordered
    categories, taken in the order of `categories` (default: sorted labels):
    kappa_w = 1 - sum(w * O) / sum(w * E), w_ij = |i-j| or (i-j)^2.
    Returns nan when chance agreement is already perfect (both raters use one same category).
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(f"cohen_kappa: the raters labelled {len(labels_a)} and {len(labels_b)} items")
    pairs = [(a, b) for a, b in zip(labels_a, labels_b) if not _is_missing(a) and not _is_missing(b)]
    if not pairs:
        raise ValueError("cohen_kappa: no item was labelled by both raters")
    cats = list(categories) if categories is not None else sorted({x for p in pairs for x in p})
    index = {c: i for i, c in enumerate(cats)}
    k = len(cats)
    observed = np.zeros((k, k))
    for a, b in pairs:
        if a not in index or b not in index:
            raise ValueError(f"cohen_kappa: label {a if a not in index else b!r} is not among categories {cats}")
        observed[index[a], index[b]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    grid = np.arange(k)
    if weights == "none":
        w = (grid[:, None] != grid[None, :]).astype(float)
    elif weights == "linear":
        w = np.abs(grid[:, None] - grid[None, :]).astype(float)
    elif weights == "quadratic":
        w = ((grid[:, None] - grid[None, :]) ** 2).astype(float)
    else:
        raise ValueError(f"cohen_kappa: unknown weights {weights!r}; use none, linear or quadratic")
    disagreement_expected = float((w * expected).sum())
    if disagreement_expected == 0.0:
        return float("nan")
    return 1.0 - float((w * observed).sum()) / disagreement_expected


def fleiss_kappa(counts: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from a count table: counts[i, j] = raters who put subject i in category j.

    Every subject must have the same number n >= 2 of ratings (Fleiss 1971):
    P_i = (sum_j n_ij^2 - n) / (n (n-1)),  P_bar = mean_i P_i,  p_j = sum_i n_ij / (N n),
    P_e = sum_j p_j^2,  kappa = (P_bar - P_e) / (1 - P_e).
    For unequal or missing ratings use `krippendorff_alpha` instead.
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(f"fleiss_kappa: counts must be a non-empty 2-D table, got shape {table.shape}")
    if (table < 0).any():
        raise ValueError("fleiss_kappa: counts must be non-negative")
    per_subject = table.sum(axis=1)
    n = per_subject[0]
    if not np.all(per_subject == n):
        bad = int(np.flatnonzero(per_subject != n)[0])
        raise ValueError(f"fleiss_kappa: subject {bad} has {per_subject[bad]:g} ratings, subject 0 has {n:g}; "
                         "Fleiss' kappa needs equal ratings per subject")
    if n < 2:
        raise ValueError("fleiss_kappa: each subject needs at least 2 ratings")
    p_i = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar = float(p_i.mean())
    p_j = table.sum(axis=0) / table.sum()
    p_e = float((p_j**2).sum())
    if p_e == 1.0:
        return float("nan")
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_counts(labels: Sequence[Sequence[Hashable]], categories: Sequence[Hashable] | None = None) -> np.ndarray:
    """Count table for `fleiss_kappa` from per-subject label lists (labels[i] = the ratings of subject i)."""
    cats = list(categories) if categories is not None else sorted({x for row in labels for x in row})
    index = {c: j for j, c in enumerate(cats)}
    table = np.zeros((len(labels), len(cats)))
    for i, row in enumerate(labels):
        for x in row:
            if x not in index:
                raise ValueError(f"fleiss_counts: subject {i} has label {x!r} outside categories {cats}")
            table[i, index[x]] += 1
    return table


def coincidence_matrix(data: Sequence[Sequence[object]]) -> tuple[list, np.ndarray]:
    """Krippendorff's coincidence matrix from reliability data data[coder][unit] (None/NaN = missing).

    o_ck = sum_u (number of ordered c-k pairs from different coders in unit u) / (m_u - 1),
    over units with m_u >= 2 values. Returns (sorted values, o) with o of shape (V, V).
    """
    if not data:
        raise ValueError("krippendorff: no coders")
    n_units = len(data[0])
    for c, row in enumerate(data):
        if len(row) != n_units:
            raise ValueError(f"krippendorff: coder {c} has {len(row)} units, coder 0 has {n_units}")
    units = [[data[c][u] for c in range(len(data)) if not _is_missing(data[c][u])] for u in range(n_units)]
    values = sorted({v for unit in units if len(unit) >= 2 for v in unit})
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        counts = np.zeros(len(values))
        for v in unit:
            counts[index[v]] += 1
        # ordered pairs of different coders: counts_c * counts_k, minus the self-pairs on the diagonal
        o += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    return values, o


def _distance_matrix(values: list, n_c: np.ndarray, metric: Metric) -> np.ndarray:
    """Squared difference delta^2(c, k) for Krippendorff's metrics (Krippendorff 2011, section D)."""
    v = np.asarray(values, dtype=float) if metric != "nominal" else None
    if metric == "nominal":
        size = len(values)
        return 1.0 - np.eye(size)
    if metric == "interval":
        return (v[:, None] - v[None, :]) ** 2
    if metric == "ratio":
        total = v[:, None] + v[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = ((v[:, None] - v[None, :]) / total) ** 2
        return np.where(total == 0, 0.0, d)
    if metric == "ordinal":
        # delta^2(c,k) = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2 over the ranks of the ordered values
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        i = np.arange(len(values))
        lo, hi = np.minimum(i[:, None], i[None, :]), np.maximum(i[:, None], i[None, :])
        between = cum[hi + 1] - cum[lo]
        return (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
    raise ValueError(f"krippendorff_alpha: unknown metric {metric!r}; use nominal, ordinal, interval or ratio")


def krippendorff_alpha(data: Sequence[Sequence[object]], metric: Metric = "nominal") -> float:
    """Krippendorff's alpha = 1 - D_o / D_e for reliability data data[coder][unit] with missing values.

    D_o = sum_ck o_ck delta^2_ck / n,  D_e = sum_ck n_c n_k delta^2_ck / (n (n - 1)), where o is the
    coincidence matrix, n_c its marginals and n the number of pairable values (Krippendorff 2011).
    Units with fewer than two values are not pairable and are ignored. Returns nan when there is no
    variation at all (D_e = 0).
    """
    values, o = coincidence_matrix(data)
    if not values:
        raise ValueError("krippendorff_alpha: no unit has two or more values")
    if metric != "nominal":
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"krippendorff_alpha: metric {metric!r} needs numeric values, got {v!r}")
    n_c = o.sum(axis=1)
    n = float(n_c.sum())
    delta = _distance_matrix(values, n_c, metric)
    d_observed = float((o * delta).sum()) / n
    d_expected = float((np.outer(n_c, n_c) * delta).sum()) / (n * (n - 1.0))
    if d_expected == 0.0:
        return float("nan")
    return 1.0 - d_observed / d_expected


def pairwise_kappa_matrix(labels: dict[str, dict[Hashable, Hashable]]) -> tuple[list[str], np.ndarray]:
    """Cohen's kappa for every pair of annotators on the items both labelled (nan with < 2 shared items).

    labels[annotator][item] = label. Returns (annotator names, symmetric matrix with 1 on the diagonal).
    """
    names = sorted(labels)
    out = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        out[i, i] = 1.0
        for j in range(i + 1, len(names)):
            b = names[j]
            shared = sorted(set(labels[a]) & set(labels[b]), key=repr)
            if len(shared) >= 2:
                out[i, j] = out[j, i] = cohen_kappa([labels[a][s] for s in shared], [labels[b][s] for s in shared])
    return names, out
