"""Win rate against the base policy judged by a scoring function and by the round's annotators."""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers_models import save_tiny_model
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.loop.compare import comparison_candidates, decided_without_asking, majority_outcomes
from rlhfkit.loop.runner import load_loop_config, run_rlhf_loop


def test_identical_and_empty_responses_are_settled_without_asking() -> None:
    assert decided_without_asking("Nice.", " Nice. ") == 0.5
    assert decided_without_asking("", "Good food.") == 0.0
    assert decided_without_asking("Good food.", "  ") == 1.0
    assert decided_without_asking("Good food.", "Bad food.") is None


def test_comparison_pairs_policy_first_and_base_second() -> None:
    candidates, models, pairs, settled = comparison_candidates(
        ["p0", "p1", "p2"], ["good", "same", ""], ["bad", "same", "fine"])
    assert [c.response for c in candidates] == ["good", "same", "", "bad", "same", "fine"]
    assert models == ["policy"] * 3 + ["base"] * 3
    assert [(p.a, p.b, p.prompt_index) for p in pairs] == [(0, 3, 0)]
    assert settled == {1: 0.5, 2: 0.0}
    with pytest.raises(ValueError, match="3 prompts but 2 policy"):
        comparison_candidates(["a", "b", "c"], ["x", "y"], ["x", "y", "z"])


def _row(task: int, winner: object, kind: str = "pairwise") -> dict:
    return {"task_id": task, "kind": kind, "samples": [{"id": 10 * task + 1}, {"id": 10 * task + 2}],
            "resolved": {"winner": winner}}


def test_majority_outcomes_by_hand() -> None:
    rows = [_row(1, 11), _row(1, 11), _row(1, 12),      # 2:1 for the policy -> 1
            _row(2, 22), _row(2, 21), _row(2, 22),      # 1:2 -> 0
            _row(3, 31), _row(3, 32),                   # split -> 1/2
            _row(4, "tie"),                             # tie answers only -> 1/2
            _row(5, None),                              # skipped only -> no outcome
            _row(6, 61, kind="rating")]                 # other kinds are ignored
    assert sorted(majority_outcomes(rows)) == [0.0, 0.5, 0.5, 1.0]


@pytest.mark.slow
def test_round_measures_win_rate_by_judge_and_by_annotators(tmp_path) -> None:
    settings = tiny_loop_settings(tmp_path, rounds=1, comparisons=6)
    settings["eval"] = {"prompts": 6, "judge": "gold", "ask_annotators": True}
    config = load_loop_config(write_config(tmp_path, settings))
    run_rlhf_loop(config, quiet=True)
    run = tmp_path / "run"
    metrics = json.loads((run / "rounds" / "round-001" / "metrics.json").read_text())
    # the judge here is the gold reward itself, so both win rates are the same computation
    assert metrics["eval/judge_win_rate"] == pytest.approx(metrics["eval/win_rate"])
    assert metrics["eval/feedback_win_rate_n"] == 6
    assert 0.0 <= metrics["eval/feedback_win_rate_low"] <= metrics["eval/feedback_win_rate"] \
        <= metrics["eval/feedback_win_rate_high"] <= 1.0

    after = [json.loads(line)["response"] for line in (run / "rounds" / "round-001" / "samples_after.jsonl").open()]
    base = [json.loads(line)["response"] for line in (run / "rounds" / "round-000" / "samples_after.jsonl").open()]
    asked = sum(decided_without_asking(a, b) is None for a, b in zip(after, base))
    with sqlite3.connect(run / "feedback" / "feedback.db") as db:
        names = [n for (n,) in db.execute("SELECT name FROM campaigns ORDER BY id")]
        compare_answers = db.execute(
            "SELECT COUNT(*) FROM annotations a JOIN tasks t ON a.task_id = t.id JOIN campaigns c "
            "ON t.campaign_id = c.id WHERE c.name LIKE '% vs base'").fetchone()[0]
    assert len(names) == (2 if asked else 1) and names[0].endswith("round 1")
    assert compare_answers == 2 * asked  # redundancy 2
    # the comparison campaign is evaluation only: the reward model never trains on it
    records = (run / "rounds" / "round-001" / "feedback.jsonl").read_text().splitlines()
    assert len(records) <= 6
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64") == 4


@pytest.mark.slow
def test_dpo_round_on_the_summary_task(tmp_path) -> None:
    """policy.algorithm=dpo trains offline on the aggregated feedback; a task with references adds ROUGE/BLEU."""
    settings = tiny_loop_settings(tmp_path, rounds=1, comparisons=8)
    settings["model"] = str(save_tiny_model(tmp_path / "long-model", n_positions=320))
    settings["task"] = "summary"
    settings["policy"] = {"algorithm": "dpo", "dpo": {"epochs": 2, "batch_size": 4, "max_prompt_tokens": 256,
                                                      "max_response_tokens": 12, "run": {"save_every": 1}}}
    config = load_loop_config(write_config(tmp_path, settings))
    run_rlhf_loop(config, quiet=True)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "rounds" / "round-001" / "feedback.jsonl").open()]
    pairs = sum(not r.get("tie") for r in records)
    steps = 2 * -(-pairs // 4)
    timeline = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in timeline if "loss/dpo" in r} == set(range(1, steps + 1))
    assert (run / "rounds" / "round-001" / "policy" / "final" / "config.json").is_file()
    metrics = json.loads((run / "rounds" / "round-001" / "metrics.json").read_text())
    for key in ("eval/rougeL", "eval/bleu", "eval/gold_reward", "eval/kl", "eval/win_rate"):
        assert key in metrics, key
    assert metrics["eval/kl"] > 0
