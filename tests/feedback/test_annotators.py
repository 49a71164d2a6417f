"""Simulated annotators: answer formats, noise model statistics, biases, spammers, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhfkit.feedback.annotators import (
    AnnotatorProfile,
    RatingModel,
    SimulatedAnnotator,
    TaskItem,
    TaskView,
    make_panel,
)

UTILITY = {"great": 2.0, "good": 1.0, "meh": 0.0, "bad": -1.0, "awful": -2.0}


def utility(prompt: str, response: str) -> float:
    return UTILITY[response.split()[0]]


def pair(key: str, left: str, right: str) -> TaskView:
    return TaskView(key, "pairwise", "p", (TaskItem(1, left), TaskItem(2, right)))


def member(**kw) -> SimulatedAnnotator:
    return SimulatedAnnotator(AnnotatorProfile("m", **kw), utility, seed=7)


def left_rate(m: SimulatedAnnotator, left: str, right: str, n: int = 3000) -> float:
    return float(np.mean([m.decide(pair(f"t{i}", left, right))["choice"] == "left" for i in range(n)]))


def test_pairwise_follows_bradley_terry() -> None:
    # P(left) = sigmoid((u_l - u_r) / T): good vs meh at T = 1 -> sigmoid(1) = 0.731; T = 2 -> sigmoid(.5) = .622
    assert left_rate(member(temperature=1.0), "good", "meh") == pytest.approx(1 / (1 + math.exp(-1)), abs=0.03)
    assert left_rate(member(temperature=2.0), "good", "meh") == pytest.approx(1 / (1 + math.exp(-0.5)), abs=0.03)
    assert left_rate(member(temperature=0.0), "good", "meh", n=50) == 1.0
    assert left_rate(member(temperature=0.0), "bad", "meh", n=50) == 0.0


def test_position_and_length_bias() -> None:
    # equal utility: position bias 1 -> P(left) = sigmoid(1)
    assert left_rate(member(position_bias=1.0), "meh a", "meh b") == pytest.approx(0.731, abs=0.03)
    # length bias 1 per 100 chars: a 100-char-longer right response gains +1 utility
    long = "meh " + "x" * 100
    assert left_rate(member(length_bias=1.0), "meh", long) == pytest.approx(1 - 0.731, abs=0.03)


def test_spammer_and_adversary() -> None:
    assert left_rate(member(spammer=True), "great", "awful") == pytest.approx(0.5, abs=0.03)
    assert left_rate(member(adversarial=True, temperature=0.0), "great", "awful", n=20) == 0.0


def test_tie_margin() -> None:
    m = member(tie_margin=0.5)
    assert m.decide(pair("x", "meh a", "meh b")) == {"choice": "tie"}
    assert m.decide(pair("x", "great", "awful"))["choice"] in ("left", "right")


def test_deterministic_per_task_key() -> None:
    a = member(temperature=1.0)
    b = member(temperature=1.0)
    keys = [f"k{i}" for i in range(50)]
    forward = [a.decide(pair(k, "good", "meh"))["choice"] for k in keys]
    backward = [b.decide(pair(k, "good", "meh"))["choice"] for k in reversed(keys)][::-1]
    assert forward == backward
    other = SimulatedAnnotator(AnnotatorProfile("m"), utility, seed=8)
    assert [other.decide(pair(k, "good", "meh"))["choice"] for k in keys] != forward


def test_binary_rating_ranking_answers() -> None:
    m = member(temperature=1.0)
    good = np.mean([m.decide(TaskView(f"b{i}", "binary", "p", (TaskItem(3, "good"),)))["label"] == "good"
                    for i in range(3000)])
    assert good == pytest.approx(1 / (1 + math.exp(-1)), abs=0.03)  # P(good) = sigmoid(u - 0)

    # ordered logit on a 1..5 scale: cut-points over (-2, 2) at -1.2, -0.4, 0.4, 1.2; T = 0 -> deterministic
    exact = member(temperature=0.0)
    for word, expected in (("awful", 1.0), ("bad", 2.0), ("meh", 3.0), ("good", 4.0), ("great", 5.0)):
        view = TaskView("r", "rating", "p", (TaskItem(4, word),), scale=(1, 5))
        assert exact.decide(view) == {"rating": expected}
    ratings = [m.decide(TaskView(f"r{i}", "rating", "p", (TaskItem(4, "good"),), scale=(1, 5)))["rating"]
               for i in range(2000)]
    # P(rating >= 4) = P(1 + noise > 0.4) = sigmoid(0.6)
    assert np.mean(np.array(ratings) >= 4) == pytest.approx(1 / (1 + math.exp(-0.6)), abs=0.03)
    assert set(ratings) <= {1.0, 2.0, 3.0, 4.0, 5.0}

    items = (TaskItem(10, "meh"), TaskItem(11, "great"), TaskItem(12, "bad"))
    assert exact.decide(TaskView("k", "ranking", "p", items)) == {"order": [11, 10, 12]}
    # Plackett-Luce: P(first = great) = e^2 / (e^0 + e^2 + e^-1)
    firsts = [m.decide(TaskView(f"k{i}", "ranking", "p", items))["order"][0] for i in range(3000)]
    p_first = math.exp(2) / (1 + math.exp(2) + math.exp(-1))
    assert np.mean(np.array(firsts) == 11) == pytest.approx(p_first, abs=0.03)


def test_spammer_answers_every_kind_validly() -> None:
    m = member(spammer=True)
    ratings = {m.decide(TaskView(f"r{i}", "rating", "p", (TaskItem(1, "good"),), scale=(1, 7)))["rating"]
               for i in range(300)}
    assert ratings == {float(x) for x in range(1, 8)}
    order = m.decide(TaskView("k", "ranking", "p", (TaskItem(1, "meh"), TaskItem(2, "bad"), TaskItem(3, "good"))))
    assert sorted(order["order"]) == [1, 2, 3]
    assert m.decide(TaskView("b", "binary", "p", (TaskItem(1, "good"),)))["label"] in ("good", "bad")


def test_from_assignment_and_errors() -> None:
    view = TaskView.from_assignment({"assignment_id": 4, "task_id": 9, "kind": "rating", "scale": [1, 10],
                                     "prompt": "q", "items": [{"position": 0, "sample_id": 5, "text": "good"}]})
    assert view == TaskView("task-9", "rating", "q", (TaskItem(5, "good"),), (1.0, 10.0))
    with pytest.raises(ValueError, match="assignment 4: malformed"):
        TaskView.from_assignment({"assignment_id": 4, "task_id": 9, "kind": "rating", "prompt": "q"})
    with pytest.raises(ValueError, match="pairwise task with 1 responses"):
        member().decide(TaskView("x", "pairwise", "p", (TaskItem(1, "good"),)))
    with pytest.raises(ValueError, match="unknown kind"):
        member().decide(TaskView("x", "essay", "p", (TaskItem(1, "good"),)))
    with pytest.raises(ValueError, match="without a scale"):
        member().decide(TaskView("x", "rating", "p", (TaskItem(1, "good"),)))
    with pytest.raises(ValueError, match="temperature"):
        AnnotatorProfile("x", temperature=-1)
    assert RatingModel().levels((0.0, 1.0)).tolist() == [0.0, 1.0]  # integral ends: integer levels
    assert RatingModel().levels((0.0, 0.5)).tolist() == pytest.approx(np.linspace(0, 0.5, 11).tolist())


def test_make_panel_roles() -> None:
    panel = make_panel(utility, 10, spammer_fraction=0.3, adversarial=1, seed=3, temperature=0.5)
    assert len(panel) == 10
    assert sum(m.profile.spammer for m in panel) == 3 and sum(m.profile.adversarial for m in panel) == 1
    assert all(m.name.endswith("-spam") == m.profile.spammer for m in panel)
    assert len({m.name for m in panel}) == 10
    assert [m.profile.spammer for m in make_panel(utility, 10, spammer_fraction=0.3, seed=3)] == \
        [m.profile.spammer for m in panel]
    with pytest.raises(ValueError, match="exceed"):
        make_panel(utility, 3, spammer_fraction=1.0, adversarial=1)
    with pytest.raises(ValueError, match="2 temperatures for 3"):
        make_panel(utility, 3, temperature=[1.0, 2.0])
