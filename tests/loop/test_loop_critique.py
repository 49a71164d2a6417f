"""feedback.kind=critique: the panel rates and critiques candidates, the reward model trains on the critiques alone."""

from __future__ import annotations

import json
import sqlite3

import pytest
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.loop.aggregate import critique_records
from rlhfkit.loop.runner import load_loop_config, run_rlhf_loop
from rlhfkit.loop.state import ROUND_PHASES, load_state


def _row(critique: str | None, rating: float, annotator: str = "sim-0", number: int = 1) -> dict:
    return {"kind": "rating", "prompt": "Review the phone.", "samples": [{"id": 1, "text": "I love this phone."}],
            "resolved": {"rating": rating}, "scale": [1.0, 5.0], "critique": critique, "annotator": annotator,
            "annotation_id": number, "is_gold": False}


def test_critique_records_keep_only_the_text():
    rows = [_row("names the product; good reason given", 1.0, number=1), _row(None, 5.0, number=2),
            _row("too generic, doesn't name the product; no reason given", 5.0, "sim-1", number=3)]
    encoded = critique_records(rows, "rules")
    assert [r["kind"] for r in encoded.records] == ["rating", "rating"]
    first, second = encoded.records
    assert first["rating"] > 0 > second["rating"]  # the text decides, not the ratings (1 and 5) it came with
    assert first["scale"] == [-1.0, 1.0] and all(0 < r["weight"] <= 1 for r in encoded.records)
    assert encoded.stats["feedback/critiques"] == 2 and encoded.stats["feedback/critique_records"] == 2


def test_critique_mode_is_refused_with_a_judge_or_dpo(tmp_path):
    settings = tiny_loop_settings(tmp_path)
    critique = {**settings["feedback"], "kind": "critique"}
    with pytest.raises(ValueError, match="judge writes no critiques"):
        load_loop_config(write_config(tmp_path, {**settings, "feedback": {**critique, "source": "judge"}}))
    with pytest.raises(ValueError, match="dpo"):
        load_loop_config(write_config(tmp_path, {**settings, "feedback": critique,
                                                 "policy": {**settings["policy"], "algorithm": "dpo"}}))


@pytest.mark.slow
def test_a_critique_round_trains_the_reward_model_on_weighted_critique_ratings(tmp_path):
    settings = tiny_loop_settings(tmp_path, rounds=1, comparisons=6)
    settings["feedback"] = {**settings["feedback"], "kind": "critique"}
    config = load_loop_config(write_config(tmp_path, settings))
    run_rlhf_loop(config, quiet=True)
    run = tmp_path / "run"
    state = load_state(run)
    assert state.finished and state.done == list(ROUND_PHASES) and len(state.campaign_ids) == 1

    folder = run / "rounds" / "round-001"
    records = [json.loads(line) for line in (folder / "feedback.jsonl").read_text().splitlines()]
    assert records and {r["kind"] for r in records} == {"rating"}
    assert all(r["scale"] == [-1.0, 1.0] and 0 < r["weight"] <= 1 for r in records)
    assert all(r["weight"] < 1 for r in records)  # the rules encoder's confidence, not a full weight
    with sqlite3.connect(run / "feedback" / "feedback.db") as db:
        kinds = {row[0] for row in db.execute("SELECT kind FROM campaigns")}
        critiques = db.execute("SELECT COUNT(*) FROM annotations WHERE critique IS NOT NULL AND critique != ''").fetchone()[0]
    assert kinds == {"rating"} and critiques == len(records)  # one record per critique; the spammer writes none
    stats = json.loads((folder / "feedback_stats.json").read_text())
    assert stats["feedback/critique_records"] == len(records)
    assert (folder / "reward" / "model" / "reward_config.json").is_file()
    rm_eval = json.loads((folder / "rm_eval.json").read_text())
    assert "accuracy" not in rm_eval and -1 <= rm_eval.get("rating_spearman", 0) <= 1  # no pairs held out
    assert "eval/gold_reward" in json.loads((folder / "metrics.json").read_text())

    extended = load_loop_config(write_config(tmp_path, {**settings, "rounds": 2}))
    run_rlhf_loop(extended, resume=True, quiet=True)
    state = load_state(run)
    assert state.round == 2 and state.finished and len(state.campaign_ids) == 2
    second = [json.loads(line) for line in (run / "rounds" / "round-002" / "feedback.jsonl").read_text().splitlines()]
    assert len(second) > len(records) and {r["kind"] for r in second} == {"rating"}  # both rounds' critiques


@pytest.mark.slow
def test_critiques_alone_raise_the_gold_of_the_builtin_model(tmp_path):
    """One round at a reduced size (~350 critiques of 256 candidates, 12 PPO steps of 32 prompts) raises the gold
    read on 256 eval prompts by >= 0.01, and the "reason" aspect (what the critiques move most) by >= 0.1.

    The gain at this size is small and 64 eval prompts read it with a standard error of ~0.04: seeds 0-5 on an
    AVX2-only AMD EPYC gained +0.116, +0.077, +0.057, +0.061, +0.048, +0.217 on 64 prompts and +0.031, +0.074,
    +0.065, +0.014, +0.020, +0.043 (mean 0.041) when the same policies were re-read on 256 others; 24 PPO steps
    instead of 12 gave +0.010, +0.066 and +0.068 at seeds 3, 4 and 0 (no stronger). Over those ten runs the
    reason aspect rose by +0.19 to +0.49 every time, the positive aspect by -0.02 to +0.09 (flat or lower in
    three): the critique round teaches "give a reason" far more than "be positive"."""
    settings = tiny_loop_settings(tmp_path, rounds=1, comparisons=160)
    settings |= {"model": "builtin", "seed": 0, "eval": {"prompts": 256}}
    settings["candidates"] = {"prompts_per_round": 64, "per_prompt": 4, "max_new_tokens": 48}
    settings["feedback"] = {**settings["feedback"], "kind": "critique", "panel": {"size": 5, "spammers": 1}}
    settings["reward"]["train"] |= {"epochs": 3, "batch_size": 16, "max_length": 128}
    ppo = {"run": {"steps": 12, "save_every": 12}, "num_prompts": 32, "epochs": 4, "num_minibatches": 2,
           "generation": {"max_new_tokens": 48}}
    settings["policy"] = {"prompts": 128, "ppo": ppo}
    run_rlhf_loop(load_loop_config(write_config(tmp_path, settings)), quiet=True)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "rounds" / "round-001" / "feedback.jsonl").read_text().splitlines()]
    assert len(records) > 300 and {r["kind"] for r in records} == {"rating"}  # critiques only, ratings dropped
    rows = {r["metric"]: r for r in json.loads((run / "summary.json").read_text())}
    gold = rows["gold reward"]
    assert gold["final"] - gold["base"] >= 0.01, gold
    reason = rows["gold aspect: reason"]
    assert reason["final"] >= reason["base"] + 0.1, reason


def test_the_critique_panel_critiques_rating_tasks_and_spammers_write_none():
    from rlhfkit.feedback.annotators import TaskItem, TaskView
    from rlhfkit.loop.collect import panel_critic, panel_deciders
    from rlhfkit.loop.config import FeedbackConfig, PanelConfig
    from rlhfkit.tasks import get_task

    config = FeedbackConfig(kind="critique", panel=PanelConfig(size=3, spammers=1))
    view = TaskView("task-1", "rating", "Review of the Nova blender:",
                    (TaskItem(1, " The Nova blender is great because it is quiet and strong."),), (1.0, 5.0))
    answers = {d.name: d.decide(view) for d in panel_deciders(get_task("sentiment"), config, seed=0)}
    assert all("rating" in a for a in answers.values())
    assert {name.endswith("-spam") for name, a in answers.items() if "critique" not in a} == {True}
    assert panel_critic(get_task("sentiment"), config).combine is get_task("sentiment").combine  # mentions by weight
    pairwise = FeedbackConfig(panel=PanelConfig(size=3, spammers=1))
    assert all("critique" not in d.decide(view) for d in panel_deciders(get_task("sentiment"), pairwise, seed=0))
