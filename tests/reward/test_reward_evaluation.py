"""Evaluation metrics on hand-made scores, bootstrap intervals, and the reliability diagram."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhfkit.data.records import Comparison, Label, Ranking, Rating
from rlhfkit.reward.evaluation import (bootstrap_ci, evaluate_scores, expected_calibration_error, mean_kendall_tau,
                                       pairwise_outcomes, plot_reliability, predicted_normalized_rating)


def test_pairwise_outcomes_count_exact_ties_as_half():
    assert pairwise_outcomes(np.array([2.0, 1.0, 0.0]), np.array([1.0, 1.0, 3.0])).tolist() == [1.0, 0.5, 0.0]


def test_ece_hand_value():
    # p = 0.9 for two pairs: points (0.9, 1), (0.9, 1), (0.1, 0), (0.1, 0); every bin is exact except
    # the |1 - 0.9| and |0 - 0.1| gaps: ECE = 0.5 * 0.1 + 0.5 * 0.1 = 0.1
    ece, bins = expected_calibration_error(np.array([0.9, 0.9]))
    assert ece == pytest.approx(0.1)
    assert sum(b["count"] for b in bins) == 4
    assert expected_calibration_error(np.full(1000, 0.5))[0] == pytest.approx(0.0)


def test_kendall_tau_per_ranking_and_rating_prediction():
    taus = mean_kendall_tau([np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])],
                            [np.array([1, 2, 3]), np.array([1, 2, 3]), np.array([1, 2, 3])])
    assert taus[0] == pytest.approx(1.0) and taus[1] == pytest.approx(-1.0) and math.isnan(taus[2])
    assert predicted_normalized_rating(np.array([-1.0, 0.0, 3.0])).tolist() == [0.0, 0.5, 1.0]
    # far above every threshold -> the top level; far below -> the bottom level
    levels = predicted_normalized_rating(np.array([-40.0, 40.0]), thresholds=[-1.0, 0.0, 1.0])
    np.testing.assert_allclose(levels, [0.0, 1.0], atol=1e-6)


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=50), rng.normal(size=5000)
    low_s, high_s = bootstrap_ci(lambda i: small[i].mean(), small.size, 300)
    low_l, high_l = bootstrap_ci(lambda i: large[i].mean(), large.size, 300)
    assert low_s < small.mean() < high_s and low_l < large.mean() < high_l
    assert high_l - low_l < (high_s - low_s) / 4
    assert all(math.isnan(x) for x in bootstrap_ci(lambda i: 0.0, 0))


def test_evaluate_scores_for_every_kind():
    records = [Comparison("p", "a", "b"), Comparison("p", "c", "d"), Comparison("p", "e", "f", tie=True),
               Ranking("p", ("a", "b", "c"), (1, 2, 3)), Rating("p", "a", 5.0, (1.0, 5.0)),
               Rating("p", "b", 1.0, (1.0, 5.0)), Rating("p", "c", 3.0, (1.0, 5.0)),
               Label("p", "a", True), Label("p", "b", False)]
    scores = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([5.0, 0.0]), np.array([2.0, 1.0, 0.0]),
              np.array([1.0]), np.array([-1.0]), np.array([0.5]), np.array([0.3]), np.array([0.2])]
    report = evaluate_scores(records, scores, resamples=50)
    metrics = report.metrics
    assert metrics["pairwise_accuracy"].value == 0.5 and metrics["pairwise_accuracy"].n == 2  # the tie is left out
    assert metrics["ranking_kendall_tau"].value == pytest.approx(1.0)
    assert metrics["rating_spearman"].value == pytest.approx(1.0)
    # predicted stars: 5, 1, 1 + 4 * 0.75 = 4 -> errors 0, 0, 1 -> RMSE sqrt(1/3)
    assert metrics["rating_rmse"].value == pytest.approx(math.sqrt(1 / 3))
    assert metrics["label_accuracy"].value == 0.5
    assert len(report.probabilities) == 2
    assert set(report.flat()) >= {"eval/pairwise_accuracy", "eval/pairwise_accuracy_low", "eval/rating_rmse_high"}
    assert "pairwise_accuracy" in report.lines()[0]


def test_reliability_plot_is_a_png(tmp_path):
    path = plot_reliability(np.random.default_rng(0).uniform(size=200), tmp_path / "plots" / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
