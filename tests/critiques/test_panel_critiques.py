"""The simulated panel writes critiques from the task's gold aspects, and the rules file reads them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from rlhfkit.critiques.rules import RulesEncoder
from rlhfkit.critiques.simulated import PHRASES, AspectCritic, mentions
from rlhfkit.feedback.annotators import TaskItem, TaskView, make_panel, run_member
from rlhfkit.tasks.aspects import context_index
from rlhfkit.tasks.sentiment import ASPECTS, TASK, combine, prompts


def reviews() -> tuple[list[str], list[str]]:
    """Prompts and responses from generic to specific, positive to negative, tidy to broken."""
    ps, rs = [], []
    for p in prompts(8, 0, "train"):
        subject = p.removeprefix("Review of the ").rstrip(":")
        for r in ("What a great find.", f"I loved the {subject} because the staff were kind and it was fresh.",
                  f"The {subject} was terrible and dirty.", "great great great great great great",
                  f"I really liked the {subject}, it was good."):
            ps.append(p)
            rs.append(r)
    return ps, rs


def test_noiseless_critiques_agree_with_the_aspects():
    ps, rs = reviews()
    critic = AspectCritic(ASPECTS, noise=0.0, context=context_index(list(zip(ps, rs))))
    table = TASK.aspect_scores(ps, rs)
    rng = np.random.default_rng(0)
    for i, (p, r) in enumerate(zip(ps, rs)):
        judged = critic.judged(p, r, rng)
        assert judged, r
        for name, good in judged.items():
            assert table[name][i] >= critic.high if good else table[name][i] < critic.low
    text = critic(ps[0], "What a great find.", rng)
    assert PHRASES["on_topic"][0] in text and PHRASES["original"][0] in text


def test_noisy_critiques_encode_to_the_gold_ordering():
    ps, rs = reviews()
    critic = AspectCritic(ASPECTS, context=context_index(list(zip(ps, rs))))
    rng = np.random.default_rng(1)
    scores = [e.score for e in RulesEncoder.from_file().encode([critic(p, r, rng) for p, r in zip(ps, rs)])]
    assert spearmanr(scores, TASK.gold_reward(ps, rs)).statistic > 0.6


def test_mentions_rank_remarkable_aspects_by_their_weight_on_the_gold():
    perceived = {"a": 1.2, "b": 0.1, "c": 0.6, "d": 0.8}  # c is unremarkable (between 0.5 and 0.75)
    assert mentions(perceived, 0.5, 0.75, 2) == {"b": False, "a": True}  # distances 0.525, 0.575 (a), 0.175
    weighted = mentions(perceived, 0.5, 0.75, 2, lambda s: 2 * s["a"] + 0.1 * s["b"] + s["d"])
    assert weighted == {"a": True, "d": True}  # weights 2 x 0.375 (a clipped to 1), 0.1 x 0.525, 0.175
    with pytest.raises(ValueError, match="low 0.8 must be below high 0.5"):
        mentions(perceived, 0.8, 0.5, 2)


def test_critiques_weighted_by_the_gold_name_what_moves_it():
    ps, rs = reviews()
    pairs = list(zip(ps, rs))
    by_distance, by_gold = (AspectCritic(ASPECTS, noise=0.0, context=context_index(pairs), combine=c)
                            for c in (None, combine))
    rng = np.random.default_rng(0)
    lukewarm = f"The {ps[0].removeprefix('Review of the ').rstrip(':')} was a bit slow."  # positive 0.38, gold -0.43
    assert by_gold.judged(ps[0], lukewarm, rng)["positive"] is False
    assert "positive" not in by_distance.judged(ps[0], lukewarm, rng)  # crowded out by always-true aspects
    encoder = RulesEncoder.from_file()
    rho = [spearmanr([e.score for e in encoder.encode([c(p, r, np.random.default_rng(1)) for p, r in pairs])],
                     TASK.gold_reward(ps, rs)).statistic for c in (by_distance, by_gold)]
    assert rho[1] > rho[0] + 0.05, rho


class FakeClient:
    """Serves one rating task, records what was submitted."""

    def __init__(self) -> None:
        self.served, self.submitted = False, []

    def next_assignment(self, campaign_id):
        if self.served:
            return None
        self.served = True
        return {"assignment_id": 7, "task_id": 3, "kind": "rating", "prompt": "Review of the Nova keyboard:",
                "items": [{"sample_id": 1, "text": "What a great find."}], "scale": [1, 5]}

    def submit(self, assignment_id, answer, *, idempotency_key, critique=None, time_spent_ms=None):
        self.submitted.append((answer, critique))
        return {"annotation_id": 1}


def test_panel_members_submit_critiques_with_single_response_answers():
    critic = AspectCritic(ASPECTS)
    plain, critical = (make_panel(lambda p, r: 0.5, 1, seed=3, critic=c)[0] for c in (None, critic))
    rating = TaskView("task-1", "rating", "Review of the Nova keyboard:", (TaskItem(1, "What a great find."),), (1, 5))
    pair = TaskView("task-2", "pairwise", "p", (TaskItem(1, "a"), TaskItem(2, "b")))
    answer = critical.decide(rating)
    assert PHRASES["on_topic"][0] in answer.pop("critique")
    assert answer == plain.decide(rating) and "critique" not in critical.decide(pair)
    client = FakeClient()
    run_member(client, critical, 1)
    (submitted, critique), = client.submitted
    assert "critique" not in submitted and PHRASES["on_topic"][0] in critique
