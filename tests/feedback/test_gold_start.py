"""Dawid-Skene starts from the gold items when there are any (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

from rlhfkit.feedback.aggregate.labels import Vote, dawid_skene


def _outvoted_honest(n_items: int, seed: int) -> tuple[np.ndarray, list[Vote]]:
    """One honest annotator (90% right) and two adversaries who always give the wrong class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n_items)
    votes = []
    for i, cls in enumerate(truth):
        honest = int(cls) if rng.random() < 0.9 else 1 - int(cls)
        votes += [Vote(i, "honest", honest), Vote(i, "adv1", 1 - int(cls)), Vote(i, "adv2", 1 - int(cls))]
    return truth, votes


@pytest.mark.parametrize("model", ["two-coin", "one-coin", "confusion"])
@pytest.mark.parametrize("seed", [0, 1])
def test_gold_start_recovers_from_an_adversarial_majority(model, seed) -> None:
    truth, votes = _outvoted_honest(200, seed)
    gold = {i: int(truth[i]) for i in range(0, 200, 10)}  # 10% gold items
    result = dawid_skene(votes, model=model, gold=gold)
    winners = result.winners()
    free = [i for i in range(200) if i not in gold]
    accuracy = np.mean([winners[i] == truth[i] for i in free])
    assert accuracy > 0.9
    assert result.annotators["adv1"].accuracy < 0.2 < 0.8 < result.annotators["honest"].accuracy


def test_without_gold_the_start_is_still_majority_vote() -> None:
    truth, votes = _outvoted_honest(50, 0)
    result = dawid_skene(votes, max_iter=1)
    assert np.mean([result.winners()[i] == truth[i] for i in range(50)]) < 0.1


def test_crowd_bt_docstring_names_the_model_it_fits() -> None:
    from rlhfkit.feedback.aggregate import crowd_bt

    doc = crowd_bt.__doc__ or ""
    assert "sigmoid(beta_j (s_a - s_b))" in doc
    assert "not the Crowd-BT model of Chen et al. (2013)" in doc
