"""AI judges: one batch scoring call per task, API-shaped answers, reward-model adapter."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.feedback.annotators import TaskItem, TaskView, invite_panel, make_panel, run_panel
from rlhfkit.feedback.client import LocalServer
from rlhfkit.feedback.judges import AIJudge


def length_score(prompt: str, response: str) -> float:
    return float(len(response))


def test_function_judge_answers_every_kind() -> None:
    judge = AIJudge.from_function(length_score, name="longest")
    assert judge.name == "longest"
    pair = TaskView("t1", "pairwise", "q", (TaskItem(1, "short"), TaskItem(2, "much longer")))
    assert judge.decide(pair) == {"choice": "right"}
    ranking = TaskView("t2", "ranking", "q", (TaskItem(1, "bb"), TaskItem(2, "a"), TaskItem(3, "cccc")))
    assert judge.decide(ranking) == {"order": [3, 1, 2]}
    assert judge.decide(TaskView("t3", "binary", "q", (TaskItem(1, "x"),))) == {"label": "good"}  # 1 > threshold 0
    # default cut-points on (-2, 2) for 1..5: -1.2, -0.4, 0.4, 1.2 -> score 1 is a 4, score 2 a 5
    assert judge.decide(TaskView("t4", "rating", "q", (TaskItem(1, "x"),), scale=(1, 5))) == {"rating": 4.0}
    assert judge.decide(TaskView("t5", "rating", "q", (TaskItem(1, "xx"),), scale=(1, 5))) == {"rating": 5.0}


class FakeRewardModel:
    """score_texts like rlhfkit's RewardModel: a (b,) tensor; counts batch calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def score_texts(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        self.calls.append((prompts, responses))
        return torch.tensor([r.count("good") - r.count("bad") for r in responses], dtype=torch.float32)


def test_reward_model_judge_scores_a_task_in_one_batch() -> None:
    model = FakeRewardModel()
    judge = AIJudge.from_reward_model(model, temperature=0.0)
    pair = TaskView("t", "pairwise", "prompt", (TaskItem(1, "good good"), TaskItem(2, "bad")))
    assert judge.decide(pair) == {"choice": "left"}
    assert model.calls == [(["prompt", "prompt"], ["good good", "bad"])]


def test_sampling_judge_is_deterministic_per_task() -> None:
    judge = AIJudge.from_function(length_score, temperature=5.0, seed=3)
    views = [TaskView(f"t{i}", "pairwise", "q", (TaskItem(1, "abc"), TaskItem(2, "abcd"))) for i in range(40)]
    first = [judge.decide(v)["choice"] for v in views]
    assert first == [judge.decide(v)["choice"] for v in views]
    assert set(first) == {"left", "right"}  # T = 5 on a 1-char gap is close to a coin flip


def test_bad_scorer_output_is_reported() -> None:
    judge = AIJudge(lambda prompts, responses: [1.0])
    with pytest.raises(ValueError, match="1 scores for 2 responses"):
        judge.decide(TaskView("t", "pairwise", "q", (TaskItem(1, "a"), TaskItem(2, "b"))))
    nan_judge = AIJudge(lambda prompts, responses: [float("nan")] * len(responses))
    with pytest.raises(ValueError, match="non-finite"):
        nan_judge.decide(TaskView("t", "binary", "q", (TaskItem(1, "a"),)))


@pytest.mark.slow
def test_judge_and_panel_answer_every_kind_through_the_api(tmp_path) -> None:
    """Every task kind round-trips: served, decided, stored, resolved and exported in every aggregate mode."""
    quality = {"great answer": 2.0, "fine answer": 0.5, "poor answer": -1.0, "awful answer": -2.0}
    samples = [{"prompt": f"question {p}", "response": text, "model": "sim", "round": 0}
               for p in range(2) for text in quality]
    judge = AIJudge.from_function(lambda prompt, response: quality[response], name="judge")
    panel = make_panel(lambda prompt, response: quality[response], 3, temperature=0.0, seed=0)
    with LocalServer(tmp_path, admin_token="admin-token-judges-0123456789") as server:
        admin = server.admin_client()
        exported = {}
        for kind in ("pairwise", "rating", "ranking", "binary"):
            cid = admin.create_campaign(f"{kind} campaign", kind, redundancy=4, gold_rate=0.0, scale=[1, 5],
                                        rank_k=4, samples=samples)["id"]
            clients = invite_panel(admin, [judge, *panel], [cid])
            done = run_panel(clients, [judge, *panel], cid)
            n_tasks = len(admin.tasks(cid))
            assert all(len(acks) == n_tasks for acks in done.values()), kind
            rows = admin.annotations(cid)
            judged = {a.annotation_id: a.answer for a in done["judge"]}
            assert {r["annotation_id"]: r["answer"] for r in rows if r["annotator"] == "judge"} == judged
            exported[kind] = {mode: admin.export(cid, mode) for mode in ("none", "majority", "reliability")}
            for c in clients:
                c.close()
    best = "great answer"
    for mode in ("majority", "reliability"):
        pairs = exported["pairwise"][mode]
        assert len(pairs) == 12 and all(quality[r["chosen"]] > quality[r["rejected"]] for r in pairs)
        ratings = {r["response"]: r["rating"] for r in exported["rating"][mode] if r["prompt"] == "question 0"}
        assert ratings == {"great answer": 5.0, "fine answer": 4.0, "poor answer": 2.0, "awful answer": 1.0}
        (ranking,) = [r for r in exported["ranking"][mode] if r["prompt"] == "question 0"]
        assert ranking["ranks"][ranking["responses"].index(best)] == 1
        assert sorted(ranking["ranks"]) == [1, 2, 3, 4]
        labels = {r["response"]: r["label"] for r in exported["binary"][mode] if r["prompt"] == "question 1"}
        assert labels == {"great answer": True, "fine answer": True, "poor answer": False, "awful answer": False}
    assert len(exported["pairwise"]["none"]) == 4 * 12
