"""reward.adversarial: probe the reward model, ask the panel about the worst probes, retrain, measure again."""

from __future__ import annotations

import json
import sqlite3

import pytest
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.loop.adversarial import comparison_set, probe_pool, success_table, worst_indices
from rlhfkit.loop.candidates import Candidate
from rlhfkit.loop.runner import load_loop_config, run_rlhf_loop
from rlhfkit.loop.state import load_state
from rlhfkit.reward.probes import probe_edits, share_rose


def test_share_rose_per_probe_and_overall():
    rates = share_rose(["a", "a", "b", "b"], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 2.0])
    assert rates == {"a": 0.5, "b": 0.5, "all": 0.5}
    with pytest.raises(ValueError, match="2 names, 1 base"):
        share_rose(["a", "b"], [0.0], [1.0, 2.0])


def test_probe_edits_leave_out_rewrites_that_change_nothing():
    samples = [("Review of the Nova blender:", " Great."), ("Review of the Orbit lamp:", " Lovely lamp. Bright.")]
    edits = probe_edits(samples, ["truncation", "repeated_sentence"], suffix="sure")
    names = [(e.probe, e.original) for e in edits]
    assert ("truncation", " Great.") not in names  # one word: truncation keeps it as is
    assert ("truncation", " Lovely lamp. Bright.") in names
    assert [e.probed for e in edits if e.probe == "greedy_suffix"] == [" Great. sure", " Lovely lamp. Bright. sure"]
    with pytest.raises(ValueError, match="unknown probe"):
        probe_edits(samples, ["nope"])


def test_the_worst_probes_are_the_largest_rises_among_the_sendable():
    assert worst_indices([0.5, 2.0, -1.0, 3.0, 1.0], [True, True, True, False, True], 2) == [1, 4]
    assert worst_indices([-1.0, 0.0], [True, True], 5) == []


def test_the_probe_pool_holds_out_odd_prompts_and_drops_empty_and_repeated_responses():
    candidates = [Candidate(0, 0, "p0", " a", True), Candidate(1, 0, "p0", " a", True),
                  Candidate(2, 1, "p1", " b", True), Candidate(3, 2, "p2", "  ", True),
                  Candidate(4, 2, "p2", " c", True)]
    sendable, held_out = probe_pool(candidates, limit=10, seed=0)
    assert sorted(sendable) == [("p0", " a"), ("p2", " c")] and held_out == [("p1", " b")]


def test_success_rates_before_and_after_on_the_same_texts_with_exploits():
    items = [{"probe": "x", "sent": True, "held_out": False, "reward_original": 0.0, "reward_probed": 1.0},
             {"probe": "x", "sent": False, "held_out": True, "reward_original": 0.0, "reward_probed": 1.0},
             {"probe": "y", "sent": False, "held_out": True, "reward_original": 0.0, "reward_probed": -1.0}]
    table = success_table(items, after=[0.0, 2.0, 1.0], after_original=[1.0, 1.0, 0.0], gold_fell=[True, True, False])
    assert table["adversarial/sent/x_before"] == 1.0 and table["adversarial/sent/x_after"] == 0.0
    assert table["adversarial/held_out/all_before"] == 0.5 and table["adversarial/held_out/all_after"] == 1.0
    assert table["adversarial/held_out/exploit_before"] == 1.0 and table["adversarial/held_out/exploit_after"] == 1.0
    candidates, models, pairs = comparison_set([{**items[0], "prompt": "p", "original": "o", "probed": "o!"}])
    assert [c.response for c in candidates] == ["o!", "o"] and models == ["probe:x", "original"]
    assert (pairs[0].a, pairs[0].b) == (0, 1)


def test_the_adversarial_round_needs_answers_within_the_round(tmp_path):
    settings = tiny_loop_settings(tmp_path)
    settings["reward"]["adversarial"] = {"enabled": True}
    with pytest.raises(ValueError, match="reward.adversarial needs feedback.source panel or judge"):
        load_loop_config(write_config(tmp_path, {**settings, "feedback": {**settings["feedback"], "source": "humans"}}))


@pytest.mark.slow
def test_an_adversarial_round_lowers_the_probes_success_on_held_out_samples(tmp_path):
    settings = tiny_loop_settings(tmp_path, rounds=1, comparisons=10)
    settings["model"] = "builtin"  # real sentences: appended filler or "this answer is correct" often add nothing
    settings["candidates"]["prompts_per_round"] = 16
    settings["reward"]["adversarial"] = {"enabled": True, "samples": 48, "comparisons": 24, "suffix_length": 0,
                                         "probes": ["filler_padding", "claims_correct"]}
    run_rlhf_loop(load_loop_config(write_config(tmp_path, settings)), quiet=True)
    run = tmp_path / "run"
    state = load_state(run)
    folder = run / "rounds" / "round-001"
    assert state.finished and len(state.campaign_ids) == 2
    assert state.reward_model == str(folder / "reward_adversarial" / "model")
    with sqlite3.connect(run / "feedback" / "feedback.db") as db:
        sizes = dict(db.execute("SELECT c.name, COUNT(t.id) FROM campaigns c JOIN tasks t ON t.campaign_id = c.id "
                                "GROUP BY c.name"))
    plan = json.loads((folder / "adversarial_probes.json").read_text())["items"]
    rises = sum(1 for it in plan if not it["held_out"] and it["reward_probed"] > it["reward_original"])
    sent = sum(1 for it in plan if it["sent"])
    assert sent == min(24, rises) > 0  # the largest rises, at most `comparisons` (24 on one CPU, 20 on another)
    assert sorted(sizes.values()) == sorted([10, sent])
    stats = json.loads((folder / "adversarial_stats.json").read_text())
    assert stats["adversarial/sent/all_before"] == 1.0  # sent because their reward rose
    # measured on held-out samples (never sent) and the same probed texts before and after retraining; exploits
    # are the probed samples whose gold did not rise (seeds 1 and 2: exploits fall too, "all" falls on seed 2)
    assert stats["adversarial/held_out/all_after"] < stats["adversarial/held_out/all_before"], stats
    assert stats["adversarial/held_out/exploit_after"] < stats["adversarial/held_out/exploit_before"], stats
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["adversarial/held_out/all_after"] == stats["adversarial/held_out/all_after"]
    rows = {r["metric"]: r for r in json.loads((run / "summary.json").read_text())}
    assert rows["probes raising the reward, after adversarial round (held-out)"]["final"] == stats[
        "adversarial/held_out/all_after"]
