"""Agreement confidence, tie-broken halves and the prompt-clustered confident-minus-unsure metric."""

from __future__ import annotations

import numpy as np
import pytest

from rlhfkit.reward.confidence import confident_half, confident_pairs, pair_confidence
from rlhfkit.reward.ensemble_eval import confidence_gap, group_rows

MARGINS = np.array([[1.0, 3.0], [-1.0, -1.0], [0.5, -0.5], [4.0, 0.0]])
THREE = np.array([[1.0, 1.0, -0.1], [3.0, 3.0, -1.0], [2.0, 2.0, 2.0], [-1.0, 0.5, 0.2]])


def test_agreement_is_the_share_of_members_with_the_mean_sign():
    assert pair_confidence(MARGINS, "agreement").tolist() == [1.0, 1.0, 0.0, 0.5]
    assert pair_confidence(THREE, "agreement").tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1 / 3])


def test_ties_go_to_the_larger_tiebreak_then_the_earlier_pair():
    assert confident_half(np.array([1.0, 1.0, 1.0, 0.0]), np.array([0.0, 2.0, 1.0, 5.0])).tolist() == [
        False, True, True, False]
    assert confident_half(np.array([1.0, 1.0, 1.0]), np.zeros(3)).tolist() == [True, True, False]
    with pytest.raises(ValueError, match="tiebreak has shape"):
        confident_half(np.ones(3), np.ones(2))


def test_confident_pairs_break_agreement_ties_by_the_mean_margin():
    # rows 0 and 1 both have 2 of 3 members agreeing; row 1's mean margin (5/3) beats row 0's (0.63)
    assert confident_pairs(THREE, "agreement").tolist() == [False, True, True, False]


def test_group_rows_in_order_of_first_appearance():
    assert [r.tolist() for r in group_rows(["b", "a", "b", "c"])] == [[0, 2], [1], [3]]


def test_confidence_gap_by_prompt():
    # rows 0 and 2: unanimous and right (|mean|/std 3.5 and inf); rows 1 (mean -0.1, ratio 0.15) and 3
    # (mean -0.23, ratio 0.38): split and wrong; the halves are the same by agreement
    margins = np.array([[1.0, 2.0, 2.0], [-1.0, 0.5, 0.2], [2.0, 2.0, 2.0], [0.5, -1.0, -0.2]])
    metric = confidence_gap(margins, resamples=50, seed=0, groups=["p", "p", "p", "p"])
    assert metric.value == 1.0 and metric.low == metric.high == 1.0 and metric.n == 4
    # each prompt holds one confident right pair and one unsure wrong pair: every resample gives 1
    paired = confidence_gap(margins, resamples=200, seed=0, groups=["p", "p", "q", "q"])
    assert paired.value == 1.0 and paired.low == paired.high == 1.0
    # a prompt of only confident pairs can be drawn alone (gap 0 by definition)
    split = confidence_gap(margins, resamples=200, seed=0, groups=["p", "q", "p", "q"])
    assert split.value == 1.0 and split.low == 0.0
    assert confidence_gap(margins, resamples=0, seed=0, kind="agreement").value == 1.0
    alone = confidence_gap(margins, resamples=200, seed=0)
    assert alone.value == 1.0 and alone.low < 1.0
    with pytest.raises(ValueError, match="3 group keys for 4 pairs"):
        confidence_gap(margins, resamples=10, seed=0, groups=["p", "q", "p"])


def test_the_confidence_kind_picks_the_halves():
    # |mean|/std: [0.5, inf, 11, 6] -> rows 1, 2 confident; agreement [0.5, 1, 1, 1] with |mean| ties
    # [1, 0.2, 1.1, 0.6] -> rows 2, 3; only row 3 (mean -0.6) is wrong
    margins = np.array([[3.0, -1.0], [0.2, 0.2], [1.0, 1.2], [-0.5, -0.7]])
    assert confidence_gap(margins, resamples=0, seed=0).value == pytest.approx(0.5)
    assert confidence_gap(margins, resamples=0, seed=0, kind="agreement").value == pytest.approx(-0.5)
