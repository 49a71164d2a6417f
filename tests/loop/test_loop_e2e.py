"""Two rounds of the whole loop on a tiny model: every phase, the run-directory layout, the report."""

from __future__ import annotations

import json
import sqlite3

import pytest
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.loop.runner import load_loop_config, run_rlhf_loop
from rlhfkit.loop.state import ROUND_PHASES, StateError, load_state


@pytest.mark.slow
def test_two_rounds_write_the_report_layout(tmp_path):
    settings = tiny_loop_settings(tmp_path, rounds=2, comparisons=8)
    config = load_loop_config(write_config(tmp_path, settings))
    result = run_rlhf_loop(config, quiet=True)
    run = tmp_path / "run"

    state = load_state(run)
    assert state.finished and state.round == 2 and state.done == list(ROUND_PHASES)
    assert state.global_step == 4 and len(state.campaign_ids) == 2
    for index in (1, 2):
        folder = run / "rounds" / f"round-{index:03d}"
        for name in ("metrics.json", "rm_eval.json", "annotator_reliability.json", "samples_before.jsonl",
                     "samples_after.jsonl", "candidates.jsonl", "comparisons.json", "feedback.jsonl"):
            assert (folder / name).is_file(), f"{folder.name}/{name} missing"
        metrics = json.loads((folder / "metrics.json").read_text())
        for key in ("eval/gold_reward", "eval/proxy_reward", "eval/kl", "eval/win_rate", "rm/accuracy", "time/policy_s"):
            assert key in metrics, key
        assert metrics["eval/kl"] >= 0
        assert (folder / "policy" / "final" / "config.json").is_file()
        assert (folder / "reward" / "model" / "reward_config.json").is_file()
    assert json.loads((run / "rounds" / "round-002" / "comparisons.json").read_text())["strategy"] == "active"
    reliability = json.loads((run / "rounds" / "round-002" / "annotator_reliability.json").read_text())
    names = sorted(e["annotator"] for e in reliability)
    assert len(names) == 3 and sum(name.endswith("-spam") for name in names) == 1
    assert all(0 <= e["reliability"] <= 1 and "true_accuracy" in e for e in reliability)

    with sqlite3.connect(run / "feedback" / "feedback.db") as db:
        answers = db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
    assert answers == 2 * 8 * 2  # rounds x comparisons x redundancy: every comparison answered, none twice
    records = (run / "rounds" / "round-002" / "feedback.jsonl").read_text().splitlines()
    assert len(records) == 16  # the second round trains on both rounds' feedback

    timeline = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in timeline if "reward/mean" in r} == {1, 2, 3, 4}
    assert any("eval/gold_reward" in r for r in timeline)
    summary = json.loads((run / "summary.json").read_text())
    assert [row["metric"] for row in summary][:3] == ["gold reward", "reward-model score (proxy)", "KL to base (nats/sequence)"]
    assert result.summary == summary and result.report == run / "report.html"
    html = result.report.read_text()
    assert html.count("data:image/png;base64") == 4  # rewards/KL, RM accuracy, win rate, reliability

    with pytest.raises(StateError, match="--resume"):
        run_rlhf_loop(config, quiet=True)
    extended = load_loop_config(write_config(tmp_path, {**settings, "rounds": 3}))
    run_rlhf_loop(extended, resume=True, quiet=True)
    assert load_state(run).round == 3 and (run / "rounds" / "round-003" / "metrics.json").is_file()
