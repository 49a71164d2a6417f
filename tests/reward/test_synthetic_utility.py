"""Behaviour: reward models trained on feedback drawn from a known utility recover that utility.

The utility is (# 'good') - (# 'bad') words; see tests/reward/synthetic.py. Accuracy is the
expected accuracy against Bradley-Terry labels, computed exactly from the utility, so the bound
"model >= 95% of Bayes-optimal" has no label-sampling noise.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from rlhfkit.reward.batching import encode_records
from rlhfkit.reward.config import RewardLossConfig, RewardOptimConfig, RewardTrainConfig
from rlhfkit.reward.evaluation import evaluate_model, evaluate_scores
from rlhfkit.reward.trainer import RewardTrainer

from .synthetic import (bayes_accuracy, comparisons, expected_accuracy, labels, prompt, rankings, ratings, response,
                        tiny_reward_model, unlabelled_pairs, utility, word_tokenizer)

pytestmark = pytest.mark.slow


def _train(records, tmp_path, rating_loss="regression", epochs=2):
    tokenizer = word_tokenizer()
    model = tiny_reward_model(tokenizer, seed=0)
    encoded, report = encode_records(records, tokenizer, max_length=32, eos_id=tokenizer.eos_token_id,
                                     ordinal=rating_loss == "ordinal")
    assert not report.problems
    config = RewardTrainConfig(output_dir=str(tmp_path), batch_size=32, epochs=epochs,
                               optim=RewardOptimConfig(lr=3e-3), progress=False, save_every=0, report_to="none",
                               loss=RewardLossConfig(rating_loss=rating_loss))
    trainer = RewardTrainer(model, config, encoded)
    trainer.train()
    model.settings.ordinal_thresholds = trainer.ordinal_cut_points() or None
    return model.eval()


def _correlations(model):
    rng = random.Random(99)
    texts = [response(rng) for _ in range(300)]
    rewards = model.score_texts([prompt(rng) for _ in texts], texts).numpy()
    truth = [utility(t) for t in texts]
    return stats.kendalltau(rewards, truth).statistic, stats.spearmanr(rewards, truth).statistic


def test_pairwise_accuracy_reaches_95_percent_of_bayes_optimal(tmp_path):
    model = _train(comparisons(1000, random.Random(0)), tmp_path)
    held_out = unlabelled_pairs(2000, random.Random(1))
    bayes = bayes_accuracy(held_out)
    assert 0.75 < bayes < 0.9  # a task where noise matters: 100% accuracy is impossible
    assert expected_accuracy(model, held_out) >= 0.95 * bayes


def test_rankings_recover_the_utility(tmp_path):
    model = _train(rankings(300, random.Random(0)), tmp_path)
    tau, rho = _correlations(model)
    assert tau >= 0.75 and rho >= 0.9


@pytest.mark.parametrize("rating_loss", ["regression", "ordinal"])
def test_ratings_recover_the_utility(tmp_path, rating_loss):
    model = _train(ratings(800, random.Random(0)), tmp_path, rating_loss=rating_loss)
    tau, rho = _correlations(model)
    assert rho >= 0.9 and tau >= 0.75
    held_out = ratings(300, random.Random(5))
    report = evaluate_model(model, held_out, resamples=100)
    oracle = evaluate_scores(held_out, [np.array([(utility(r.response) / 2)]) for r in held_out], resamples=0)
    assert report.metrics["rating_spearman"].value >= 0.9 * oracle.metrics["rating_spearman"].value
    assert report.metrics["rating_rmse"].value < 1.0  # stars, on the 1..5 scale


def test_all_four_kinds_mixed_in_one_model(tmp_path):
    rng = random.Random(0)
    records = comparisons(300, rng) + rankings(80, rng) + ratings(300, rng) + labels(300, rng)
    model = _train(records, tmp_path)
    pairs = unlabelled_pairs(2000, random.Random(1))
    assert expected_accuracy(model, pairs) >= 0.95 * bayes_accuracy(pairs)
    tau, rho = _correlations(model)
    assert tau >= 0.75 and rho >= 0.9
    test_rng = random.Random(7)
    held_out = comparisons(200, test_rng) + rankings(60, test_rng) + ratings(100, test_rng) + labels(100, test_rng)
    report = evaluate_model(model, held_out, resamples=200)
    oracle = evaluate_scores(held_out, [np.array([utility(t) for t in _texts(r)], dtype=float) for r in held_out],
                             resamples=0)
    for name in ("pairwise_accuracy", "ranking_kendall_tau", "rating_spearman", "label_accuracy"):
        metric = report.metrics[name]
        assert metric.low <= metric.value <= metric.high
        assert metric.value >= oracle.metrics[name].value - 0.1, name


def _texts(record):
    from rlhfkit.data.records import responses_of

    return responses_of(record)
