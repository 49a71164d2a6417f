"""Reward losses against values worked out by hand, and vectorized forms against slow loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlhfkit.reward.losses import (bradley_terry_loss, cumulative_link_loss, label_bce_loss, mixture_loss,
                                   ordered_thresholds, plackett_luce_loss, preference_probability,
                                   rating_regression_loss)

T = torch.tensor


def test_bradley_terry_hand_values():
    # d = 2: -log σ(2) = log(1 + e^-2) = 0.126928...
    assert bradley_terry_loss(T([2.0]), T([0.0])).item() == pytest.approx(0.1269280110429726, abs=1e-6)
    # margin 1: -log σ(2 - 1) = log(1 + e^-1)
    assert bradley_terry_loss(T([2.0]), T([0.0]), margin=T([1.0])).item() == pytest.approx(0.31326168751822286, abs=1e-6)
    # ε = 0.1: 0.9 log(1 + e^-2) + 0.1 log(1 + e^2)
    assert bradley_terry_loss(T([2.0]), T([0.0]), label_smoothing=0.1).item() == pytest.approx(0.32692801104297264, abs=1e-6)
    # tie: ½ log(1 + e^-2) + ½ log(1 + e^2); the margin is ignored for ties
    tie = bradley_terry_loss(T([2.0, 2.0]), T([0.0, 0.0]), margin=T([5.0, 5.0]), tie=T([True, False]))
    assert tie[0].item() == pytest.approx(1.1269280110429727, abs=1e-6)
    assert tie[1].item() == pytest.approx(math.log(1 + math.exp(3.0)), abs=1e-5)


def test_bradley_terry_tie_is_minimal_at_equal_rewards_and_probability_is_sigmoid():
    diffs = torch.linspace(-3, 3, 61)
    losses = bradley_terry_loss(diffs, torch.zeros(61), tie=torch.ones(61, dtype=torch.bool))
    assert diffs[losses.argmin()].item() == pytest.approx(0.0, abs=1e-6)
    assert preference_probability(T([1.0]), T([0.0])).item() == pytest.approx(1 / (1 + math.exp(-1)))
    with pytest.raises(ValueError):
        bradley_terry_loss(T([0.0]), T([0.0]), label_smoothing=0.5)


def test_plackett_luce_hand_values_and_ties():
    scores = T([[1.0, 0.0, -1.0]])
    # log(e + 1 + e^-1) - 1  +  log(1 + e^-1) - 0  +  0
    assert plackett_luce_loss(scores, T([[1, 2, 3]])).item() == pytest.approx(0.7208676519626032, abs=1e-6)
    # Breslow ties: items 0 and 1 share the first risk set {0, 1, 2}
    assert plackett_luce_loss(scores, T([[1, 1, 2]])).item() == pytest.approx(1.8152119288887607, abs=1e-6)


def test_plackett_luce_two_items_equals_bradley_terry_and_masking():
    chosen, rejected = torch.randn(5), torch.randn(5)
    pl = plackett_luce_loss(torch.stack([chosen, rejected], dim=1), torch.tensor([[1, 2]] * 5))
    torch.testing.assert_close(pl, bradley_terry_loss(chosen, rejected))
    padded = plackett_luce_loss(T([[1.0, 0.0, 7.0]]), T([[1, 2, 0]]), mask=T([[True, True, False]]))
    assert padded.item() == pytest.approx(bradley_terry_loss(T([1.0]), T([0.0])).item(), abs=1e-6)


def _pl_reference(scores: list[float], ranks: list[int]) -> float:
    total = 0.0
    for i, s in enumerate(scores):
        risk = [math.exp(scores[j]) for j in range(len(scores)) if ranks[j] >= ranks[i]]
        total += math.log(sum(risk)) - s
    return total


def test_plackett_luce_matches_slow_loop_on_random_rankings():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 4, generator=generator, dtype=torch.float64)
    ranks = torch.randint(1, 4, (20, 4), generator=generator)
    fast = plackett_luce_loss(scores, ranks)
    slow = [_pl_reference(s, r) for s, r in zip(scores.tolist(), ranks.tolist())]
    torch.testing.assert_close(fast, torch.tensor(slow, dtype=torch.float64))


def test_plackett_luce_likelihood_sums_to_one_over_permutations():
    scores = T([[0.3, -1.2, 2.0]], dtype=torch.float64)
    total = sum(math.exp(-plackett_luce_loss(scores, torch.tensor([list(p)])).item())
                for p in itertools.permutations([1, 2, 3]))
    assert total == pytest.approx(1.0, abs=1e-9)


def test_rating_regression_and_label_bce_hand_values():
    # target = 2y - 1
    torch.testing.assert_close(rating_regression_loss(T([0.5, 0.0, -1.0]), T([0.75, 1.0, 0.0])), T([0.0, 1.0, 0.0]))
    losses = label_bce_loss(T([0.0, 2.0]), T([True, False]))
    torch.testing.assert_close(losses, T([0.6931471805599453, 2.1269280110429727]))


def test_cumulative_link_hand_values_and_normalization():
    cuts = T([-1.0, 1.0])
    losses = cumulative_link_loss(torch.zeros(3), T([0, 1, 2]), cuts)
    # -log σ(-1), -log(σ(1) - σ(-1)), -log(1 - σ(1))
    torch.testing.assert_close(losses, T([1.3132616875182228, 0.7719368329053047, 1.3132616875182228]))
    rewards = torch.randn(7, dtype=torch.float64) * 3
    thresholds = ordered_thresholds(torch.randn(4, dtype=torch.float64))
    probs = torch.stack([torch.exp(-cumulative_link_loss(rewards, torch.full((7,), j), thresholds)) for j in range(5)])
    torch.testing.assert_close(probs.sum(0), torch.ones(7, dtype=torch.float64))


def test_cumulative_link_gradients_are_finite_at_extreme_rewards():
    rewards = T([-50.0, 0.0, 50.0], requires_grad=True)
    raw = torch.zeros(3, requires_grad=True)
    loss = cumulative_link_loss(rewards, T([3, 0, 0]), ordered_thresholds(raw)).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(rewards.grad).all() and torch.isfinite(raw.grad).all()


def test_ordered_thresholds_increase():
    cuts = ordered_thresholds(T([0.5, -3.0, 0.0, 4.0]))
    assert cuts[0].item() == 0.5
    assert (cuts[1:] > cuts[:-1]).all()


def test_mixture_loss_hand_value_and_accumulation_denominators():
    losses = {"pairwise": T([1.0, 3.0]), "label": T([2.0])}
    weights = {"pairwise": T([1.0, 3.0]), "label": T([2.0])}
    # pairwise: (1*1 + 3*3) / 4 = 2.5 ; label: 2*2 / 2 = 2 ; λ = (1, 0.5) -> 2.5 + 1 = 3.5
    value = mixture_loss(losses, weights, {"pairwise": 1.0, "label": 0.5})
    assert value.item() == pytest.approx(3.5)
    # Split into two micro-batches with the step's denominators: the parts sum to the whole.
    denominators = {"pairwise": 4.0, "label": 2.0}
    first = mixture_loss({"pairwise": T([1.0])}, {"pairwise": T([1.0])}, {"pairwise": 1.0, "label": 0.5}, denominators)
    second = mixture_loss({"pairwise": T([3.0]), "label": T([2.0])}, {"pairwise": T([3.0]), "label": T([2.0])},
                          {"pairwise": 1.0, "label": 0.5}, denominators)
    assert (first + second).item() == pytest.approx(3.5)
    assert mixture_loss({"pairwise": T([1.0, 3.0])}, {"pairwise": None}, {}).item() == pytest.approx(2.0)
