"""Agreement statistics against published values and independent brute-force formulas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rlhfkit.feedback.agreement import (
    cohen_kappa,
    fleiss_counts,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_kappa_matrix,
)

N = None
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units,
# with published alphas nominal .743, ordinal .815, interval .849, ratio .797.
KRIPP_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
]

# Fleiss' kappa worked example (10 subjects x 14 raters x 5 categories) with kappa = 0.210, from the
# Wikipedia article "Fleiss' kappa"; P_bar = 0.378, P_e = 0.213 (hand-checkable from the table).
FLEISS_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def brute_force_alpha(data, distance) -> float:
    """Krippendorff's alpha from its pair definition, without a coincidence matrix.

    D_o: average distance over ordered pairs of values from different coders within a unit, each unit's
    pairs weighted 1/(m_u - 1); D_e: average distance over all ordered pairs of pairable values.
    """
    units = [[row[u] for row in data if row[u] is not None] for u in range(len(data[0]))]
    units = [unit for unit in units if len(unit) >= 2]
    values = [v for unit in units for v in unit]
    n = len(values)
    d_o = sum(distance(unit[a], unit[b], values) / (len(unit) - 1)
              for unit in units for a, b in itertools.permutations(range(len(unit)), 2)) / n
    d_e = sum(distance(values[a], values[b], values) for a, b in itertools.permutations(range(n), 2)) / (n * (n - 1))
    return 1 - d_o / d_e


def ordinal_distance(c, k, values) -> float:
    lo, hi = min(c, k), max(c, k)
    between = sum(1 for v in values if lo <= v <= hi)
    return (between - (values.count(c) + values.count(k)) / 2) ** 2


DISTANCES = {
    "nominal": lambda c, k, values: float(c != k),
    "interval": lambda c, k, values: float(c - k) ** 2,
    "ratio": lambda c, k, values: ((c - k) / (c + k)) ** 2,
    "ordinal": ordinal_distance,
}


@pytest.mark.parametrize("metric,published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849),
                                              ("ratio", 0.797)])
def test_krippendorff_published_example(metric: str, published: float) -> None:
    alpha = krippendorff_alpha(KRIPP_2011, metric)
    assert alpha == pytest.approx(published, abs=5e-4)
    assert alpha == pytest.approx(brute_force_alpha(KRIPP_2011, DISTANCES[metric]), abs=1e-12)


@pytest.mark.parametrize("metric", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_random_data_matches_brute_force(metric: str) -> None:
    rng = np.random.default_rng(3)
    data = [[int(rng.integers(1, 6)) if rng.random() < 0.75 else None for _ in range(15)] for _ in range(4)]
    assert krippendorff_alpha(data, metric) == pytest.approx(brute_force_alpha(data, DISTANCES[metric]), abs=1e-12)


def test_krippendorff_nominal_by_hand() -> None:
    # units (a,a), (a,b), (b,b), one unpairable unit: o_aa=2, o_ab=o_ba=1, o_bb=2; n_a=n_b=3, n=6
    # D_o = 2/6, D_e = 2*3*3/(6*5) = 0.6 -> alpha = 1 - (1/3)/0.6 = 4/9
    data = [["a", "a", "b", "a"], ["a", "b", "b", None]]
    assert krippendorff_alpha(data) == pytest.approx(4 / 9)
    assert krippendorff_alpha([[float("nan"), 1.0, 2.0], [1.0, 1.0, 2.0]], "interval") == pytest.approx(1.0)


def test_krippendorff_edge_cases() -> None:
    assert math.isnan(krippendorff_alpha([[1, 1], [1, 1]]))  # no variation at all
    with pytest.raises(ValueError, match="no unit"):
        krippendorff_alpha([[1, None], [None, 2]])
    with pytest.raises(ValueError, match="coder 1 has 1 units"):
        krippendorff_alpha([[1, 2], [1]])
    with pytest.raises(ValueError, match="numeric"):
        krippendorff_alpha([["x", "y"], ["x", "y"]], "interval")


def test_fleiss_published_example() -> None:
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.20993, abs=1e-5)
    # independent formula: kappa = 1 - (N n^2 - sum n_ij^2) / (N n (n-1) sum_j p_j (1 - p_j))  (Fleiss 1971, eq. 9)
    t = np.array(FLEISS_TABLE, dtype=float)
    n_sub, n = t.shape[0], t[0].sum()
    p = t.sum(0) / t.sum()
    alt = 1 - (n_sub * n * n - (t**2).sum()) / (n_sub * n * (n - 1) * (p * (1 - p)).sum())
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(alt)


def test_fleiss_by_hand_and_errors() -> None:
    # 2 subjects x 2 raters: both agree, categories (x), (y) -> P_bar = 1, P_e = .5 -> kappa = 1
    assert fleiss_kappa(fleiss_counts([["x", "x"], ["y", "y"]])) == pytest.approx(1.0)
    # one agreeing, one split: P_bar = .5, p = (3/4, 1/4), P_e = 10/16 -> kappa = (.5-.625)/.375 = -1/3
    assert fleiss_kappa(fleiss_counts([["x", "x"], ["x", "y"]])) == pytest.approx(-1 / 3)
    with pytest.raises(ValueError, match="subject 1 has 3 ratings"):
        fleiss_kappa([[1, 1], [2, 1]])
    with pytest.raises(ValueError, match="at least 2"):
        fleiss_kappa([[1, 0], [0, 1]])


def test_fleiss_equals_krippendorff_limit() -> None:
    # for complete data, alpha_nominal = kappa_Fleiss + (1 - kappa) / (N n) (Krippendorff's small-sample term)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(40, 5))
    kappa = fleiss_kappa(fleiss_counts(labels.tolist(), categories=[0, 1, 2]))
    alpha = krippendorff_alpha(labels.T.tolist())
    assert alpha == pytest.approx(kappa + (1 - kappa) / labels.size, abs=1e-12)


def test_cohen_textbook_example() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = .7, p_e = .5*.6 + .5*.4 = .5, kappa = .4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a + [None], b + ["yes"]) == pytest.approx(0.4)  # missing labels are dropped


def test_cohen_weighted_by_hand() -> None:
    # ratings (1,1), (2,3), (3,1) on categories 1..3; marginals a = (1/3,1/3,1/3), b = (2/3,0,1/3).
    # linear: sum w O = (0 + 1 + 2)/3 = 1, sum w E = (2/3)(0+1+2)/3 + (1/3)(2+1+0)/3 = 1 -> kappa = 0
    a, b = [1, 2, 3], [1, 3, 1]
    pa, pb = np.array([1, 1, 1]) / 3, np.array([2, 0, 1]) / 3
    for name, w in (("linear", lambda i, j: abs(i - j)), ("quadratic", lambda i, j: (i - j) ** 2)):
        observed = sum(w(x - 1, y - 1) for x, y in zip(a, b)) / 3
        expected = sum(w(i, j) * pa[i] * pb[j] for i in range(3) for j in range(3))
        assert cohen_kappa(a, b, weights=name, categories=[1, 2, 3]) == pytest.approx(1 - observed / expected)
    assert cohen_kappa(a, b, weights="linear") == pytest.approx(0.0, abs=1e-12)
    assert cohen_kappa(a, a, weights="quadratic") == pytest.approx(1.0)


def test_cohen_errors_and_degenerate() -> None:
    assert math.isnan(cohen_kappa(["x", "x"], ["x", "x"]))
    with pytest.raises(ValueError, match="2 and 1 items"):
        cohen_kappa([1, 2], [1])
    with pytest.raises(ValueError, match="not among categories"):
        cohen_kappa([1, 2], [1, 3], categories=[1, 2])


def test_pairwise_kappa_matrix() -> None:
    labels = {"ann": {1: "a", 2: "b", 3: "a"}, "bob": {1: "a", 2: "b", 3: "a"}, "cy": {1: "a"}}
    names, m = pairwise_kappa_matrix(labels)
    assert names == ["ann", "bob", "cy"]
    assert m[0, 1] == pytest.approx(1.0) and m[1, 0] == m[0, 1]
    assert math.isnan(m[0, 2])
