"""Ensemble confidence: per-pair confidence from member margins and the confident-minus-unsure accuracy."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rlhfkit.reward.confidence import confident_half, half_accuracy_gap, pair_confidence
from rlhfkit.reward.ensemble_eval import confidence_gap, ensemble_confidence_metric

from .synthetic import comparisons, tiny_reward_model, word_tokenizer

MARGINS = np.array([[1.0, 3.0], [-1.0, -1.0], [0.5, -0.5], [4.0, 0.0]])


def test_pair_confidence_by_hand():
    assert pair_confidence(MARGINS, "low_spread").tolist() == [-1.0, 0.0, -0.5, -2.0]
    assert pair_confidence(MARGINS, "margin").tolist() == [2.0, 1.0, 0.0, 2.0]
    ratio = pair_confidence(MARGINS, "margin_over_spread")
    assert ratio[0] == 2.0 and ratio[2] == 0.0 and ratio[3] == 1.0 and ratio[1] > 1e11
    with pytest.raises(ValueError, match="unknown confidence 'x'"):
        pair_confidence(MARGINS, "x")
    with pytest.raises(ValueError, match=r"\(pairs, members\)"):
        pair_confidence(np.zeros(3), "margin")


def test_confident_half_breaks_ties_by_position():
    assert confident_half(np.array([2.0, 1.0, 0.0, 2.0])).tolist() == [True, False, False, True]
    assert confident_half(np.array([1.0, 1.0, 1.0])).tolist() == [True, True, False]


def test_half_accuracy_gap_by_hand():
    correct = np.array([1.0, 1.0, 0.0, 0.5, 1.0, 0.0])
    confident = np.array([True, True, True, False, False, False])
    assert half_accuracy_gap(correct, confident) == pytest.approx(2 / 3 - 0.5)
    assert half_accuracy_gap(correct, np.ones(6, dtype=bool)) == 0.0
    with pytest.raises(ValueError, match="6 outcomes but 2"):
        half_accuracy_gap(correct, np.array([True, False]))


def test_confidence_gap_metric_by_hand():
    margins = np.array([[2.0, 2.2], [1.0, 1.1], [-0.5, 1.0], [0.4, -0.1]])
    metric = confidence_gap(margins, resamples=200, seed=0)
    assert metric.value == 0.0 and metric.n == 4
    flipped = np.array([[2.0, 2.2], [1.0, 1.1], [0.5, -1.0], [-0.4, 0.1]])
    metric = confidence_gap(flipped, resamples=200, seed=0)
    assert metric.value == 1.0
    assert -1.0 <= metric.low <= metric.high <= 1.0


def test_ensemble_confidence_metric_needs_several_heads_and_pairs():
    tokenizer = word_tokenizer()
    pairs = comparisons(6, random.Random(2))
    metric = ensemble_confidence_metric(tiny_reward_model(tokenizer, num_heads=3).eval(), pairs, 50, 0)
    assert metric is not None and metric.n == 6 and -1.0 <= metric.value <= 1.0
    assert ensemble_confidence_metric(tiny_reward_model(tokenizer).eval(), pairs, 50, 0) is None
    assert ensemble_confidence_metric(tiny_reward_model(tokenizer, num_heads=3).eval(), pairs[:1], 50, 0) is None
