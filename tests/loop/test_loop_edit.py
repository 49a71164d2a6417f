"""feedback.kind=edit: the panel rewrites candidates, rewrites become pairs for the reward model and SFT data."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.feedback.annotators import TaskItem, TaskView
from rlhfkit.loop.config import FeedbackConfig, PanelConfig
from rlhfkit.loop.runner import load_loop_config, run_rlhf_loop
from rlhfkit.feedback.edits import edit_pair, with_lead
from rlhfkit.loop.sft_phase import sft_examples
from rlhfkit.loop.state import ROUND_PHASES, LoopState, load_state
from rlhfkit.tasks import get_task

REVIEW = " the nova blender is not good, it is not good."


def _edit_row(resolved: dict, round_index: int = 1, kind: str = "edit", number: int = 1) -> dict:
    return {"kind": kind, "prompt": "Review of the Nova blender:", "resolved": resolved, "annotator": "sim-0",
            "samples": [{"id": 1, "text": REVIEW, "round": round_index}], "annotation_id": number,
            "submitted_at": "2026-01-01T00:00:00", "is_gold": False}


def test_edit_mode_is_refused_with_a_judge_and_edits_sft_needs_edits(tmp_path):
    settings = tiny_loop_settings(tmp_path)
    with pytest.raises(ValueError, match="judge writes no rewrites"):
        load_loop_config(write_config(tmp_path, {**settings, "feedback": {**settings["feedback"], "kind": "edit",
                                                                          "source": "judge"}}))
    with pytest.raises(ValueError, match="edits_sft needs feedback.kind=edit"):
        load_loop_config(write_config(tmp_path, {**settings, "feedback": {**settings["feedback"], "edits_sft": True}}))


def test_sft_examples_are_this_rounds_rewrites_continuing_the_prompt_like_the_original():
    rows = [_edit_row({"text": "The Nova blender is good."}), _edit_row({"unchanged": True}, number=2),
            _edit_row({"text": "Older round."}, round_index=0, number=3),
            _edit_row({"winner": 1}, kind="pairwise", number=4)]
    expected = {"prompt": "Review of the Nova blender:", "completion": " The Nova blender is good."}
    assert sft_examples(rows, 1) == [expected]
    assert with_lead("\n x", "y ") == "\n y " and with_lead("x", "  y") == "y"
    pair = edit_pair(_edit_row({"text": "The Nova blender is good."}))
    assert pair is not None and pair["chosen"] == " The Nova blender is good."  # no mark of its own


def test_edit_pairs_mode_chooses_rewrite_pairs_ranked_candidates_or_both():
    from rlhfkit.loop.edit_records import edit_feedback_records

    rows = [{**_edit_row({"text": "The Nova blender is good."}), "task_id": 1},
            {**_edit_row({"unchanged": True}, number=2), "task_id": 2,
             "samples": [{"id": 2, "text": " The Nova blender is great.", "round": 1}]}]
    rewrite, counts = edit_feedback_records(rows, "rewrite", "majority", 0.1)
    assert [(r["chosen"], r["rejected"]) for r in rewrite] == [(" The Nova blender is good.", REVIEW)]
    assert counts == {"feedback/edit_rewrite_pairs": 1.0, "feedback/edit_ranked_pairs": 0.0}
    ranked, _ = edit_feedback_records(rows, "ranked", "majority", 0.1)
    assert [(r["chosen"], r["rejected"]) for r in ranked] == [(" The Nova blender is great.", REVIEW)]
    both, counts = edit_feedback_records(rows, "both", "majority", 0.1)
    assert both == rewrite + ranked and counts["feedback/edit_ranked_pairs"] == 1.0
    with pytest.raises(ValueError, match="edit_pairs"):
        edit_feedback_records(rows, "edits", "majority", 0.1)


def test_the_edit_panel_improves_spams_or_damages_by_role():
    task = get_task("sentiment")
    config = FeedbackConfig(kind="edit", panel=PanelConfig(size=4, spammers=1, adversarial=1))
    from rlhfkit.loop.collect import panel_deciders

    members = panel_deciders(task, config, seed=0)
    prompt = "Review of the Nova blender:"
    answers: dict[str, list[dict]] = {m.name: [] for m in members}
    for k in range(4):
        view = TaskView(f"task-{k}", "edit", prompt, (TaskItem(1, REVIEW),))
        for member in members:
            answers[member.name].append(member.decide(view))
    gold = task.gold_reward([prompt], [REVIEW])[0]

    def gold_of(answer: dict) -> float:
        return task.gold_reward([prompt], [answer["text"]])[0]

    for name, given in answers.items():
        texts = [a for a in given if "text" in a]
        if name.endswith("-adv"):
            assert texts and all(gold_of(a) < gold for a in texts)
        elif name.endswith("-spam"):
            assert 0 < len(texts) < 4
            assert all(sorted(a["text"].split()) == sorted(REVIEW.split()) for a in texts)  # shuffled junk
        else:
            assert texts and all(gold_of(a) > gold for a in texts)
    view = TaskView("pair", "pairwise", prompt, (TaskItem(1, REVIEW), TaskItem(2, " The Nova blender is great.")))
    assert all("choice" in m.decide(view) for m in members)  # other kinds still answered by the member


def test_sft_with_lora_starts_fresh_adapters_on_a_full_policy_and_continues_an_adapter_policy(tmp_path):
    from helpers_models import save_tiny_model

    from rlhfkit.loop.sft_phase import lora_start
    from rlhfkit.rl.config import LoraOptions

    base = str(save_tiny_model(tmp_path / "base"))
    assert lora_start(base, None, tmp_path / "init") == base  # no LoRA: full fine-tuning of the policy
    start = lora_start(base, LoraOptions(r=2, alpha=4), tmp_path / "init")
    adapter = json.loads((tmp_path / "init" / "adapter_config.json").read_text())
    assert start == str(tmp_path / "init") and adapter["r"] == 2 and adapter["base_model_name_or_path"] == base
    assert lora_start(start, LoraOptions(r=2, alpha=4), tmp_path / "other") == start
    assert not (tmp_path / "other").exists()


def test_a_round_recorded_before_the_adversarial_and_sft_phases_still_loads():
    old = [p for p in ROUND_PHASES if p not in ("adversarial", "sft")]
    state = LoopState.from_dict({**LoopState(round=1).to_dict(), "done": old[: old.index("policy") + 1]})
    assert state.done == list(ROUND_PHASES[: ROUND_PHASES.index("policy") + 1])
    early = LoopState.from_dict({**LoopState(round=1).to_dict(), "done": old[: old.index("reward") + 1]})
    assert early.next_phase() == "adversarial"


def _held_out_edit_accuracy(run, task, reward_model: str) -> tuple[float, int]:
    """Rewrites by a fresh editor of the base policy's answers to the eval prompts (never trained on), scored."""
    from rlhfkit.feedback.editors import AspectEditor
    from rlhfkit.loop.scoring import load_scorer

    editor = AspectEditor.for_task(task)
    rng = np.random.default_rng(123)
    samples = run / "rounds" / "round-000" / "samples_after.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    pairs = [(r["prompt"], r["response"], editor(r["prompt"], r["response"], rng)) for r in rows]
    pairs = [(p, o, with_lead(o, e)) for p, o, e in pairs if e is not None]  # scored as the loop's pairs are
    model = load_scorer(reward_model)
    edited = model.score_texts([p for p, _, _ in pairs], [e for _, _, e in pairs])
    original = model.score_texts([p for p, _, _ in pairs], [o for _, o, _ in pairs])
    return float((edited > original).float().mean()), len(pairs)


@pytest.mark.slow
def test_two_edit_rounds_train_on_rewrites_fine_tune_on_them_and_resume_after_a_kill(tmp_path, monkeypatch):
    from rlhfkit.loop import phases

    settings = tiny_loop_settings(tmp_path, rounds=2, comparisons=8)
    settings["feedback"] = {**settings["feedback"], "kind": "edit", "edits_sft": True, "edits_sft_steps": 2}
    settings["eval"] = {"prompts": 16}
    config = load_loop_config(write_config(tmp_path, settings))
    optimize = phases.optimize
    killed: list[int] = []

    def killed_in_round_two(ctx):
        if ctx.round == 2 and not killed:
            killed.append(ctx.round)
            raise KeyboardInterrupt  # as a kill after the SFT phase, before the policy phase of round 2
        optimize(ctx)

    monkeypatch.setattr(phases, "optimize", killed_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        run_rlhf_loop(config, quiet=True)
    run = tmp_path / "run"
    state = load_state(run)
    assert state.round == 2 and state.done[-1] == "sft" and state.policy.endswith("round-002/sft/final")
    sft_stats = run / "rounds" / "round-002" / "sft_stats.json"
    written = sft_stats.stat().st_mtime_ns

    run_rlhf_loop(config, resume=True, quiet=True)
    state = load_state(run)
    assert state.finished and state.round == 2 and state.done == list(ROUND_PHASES)
    assert sft_stats.stat().st_mtime_ns == written  # the finished SFT phase was reused, not rerun
    with sqlite3.connect(run / "feedback" / "feedback.db") as db:
        assert {row[0] for row in db.execute("SELECT kind FROM campaigns")} == {"edit"}
    for index in (1, 2):
        folder = run / "rounds" / f"round-{index:03d}"
        records = [json.loads(line) for line in (folder / "feedback.jsonl").read_text().splitlines()]
        assert records and {r["kind"] for r in records} == {"pairwise"}
        examples = [json.loads(line) for line in (folder / "sft_edits.jsonl").read_text().splitlines()]
        assert {e["completion"].strip() for e in examples} <= {r["chosen"].strip() for r in records}
        assert (folder / "sft" / "final" / "config.json").is_file()
        assert json.loads((folder / "metrics.json").read_text())["sft/steps"] == 2
    accuracy, n = _held_out_edit_accuracy(run, get_task("sentiment"), state.reward_model)
    assert n >= 8 and accuracy > 0.7, (accuracy, n)


@pytest.mark.slow
def test_an_edits_only_round_on_the_builtin_model_raises_the_gold_reward(tmp_path):
    """The loop's done-when at small size: one round where the only feedback is the panel's edits (rewrite pairs
    and candidates ranked by how much they were edited) raises the eval gold by >= 0.01 over the base policy,
    read on 4 samples of each of 256 eval prompts, and the reason aspect the edits add by >= 0.1.

    Chaotic at this size: any change of float rounding (another CPU) or of the editor takes another path. With
    16 prompts per PPO step and one sample per eval prompt, seeds 0-3 gained +0.009, +0.039, +0.043, +0.031 on
    an AVX-512 Xeon without bf16 units (seed 0 failed the earlier 0.03 bar there), +0.112, +0.095, +0.077,
    +0.085 on an AVX2-only AMD EPYC. With editors that also raise lukewarm reviews and 32 prompts per step, the
    Xeon's seeds 0-3 gain +0.068, +0.026, +0.078, +0.051 read on 1,024 samples; one sample per prompt read the
    same policies as +0.078, +0.056, +0.145, +0.037 (reading noise alone moved them by up to 0.07), and an
    editor that only also kept capitals gave +0.004, +0.039, +0.065, -0.002 on one sample. Reason rose +0.23 to
    +0.47 at every seed. An all-spammer panel (no signal in the edits; 16 prompts per step, one sample): -0.033,
    -0.121, -0.052, -0.197. Editors that keep capitals and cut complaints no word swap turns around ("Avoid this
    book.") instead of writing "lovely this book.": +0.031, +0.031, +0.097, +0.067 on 1,024 samples, reason
    +0.29 to +0.42.
    """
    settings = tiny_loop_settings(tmp_path, rounds=1)
    settings["model"] = "builtin"
    settings["candidates"] = {"prompts_per_round": 24, "per_prompt": 6, "max_new_tokens": 40}
    settings["selection"] = {"comparisons_per_round": 200, "max_per_prompt": 3}
    settings["feedback"] = {**settings["feedback"], "kind": "edit"}
    settings["reward"]["train"]["epochs"] = 2
    settings["policy"] = {"prompts": 64, "ppo": {"run": {"steps": 24, "save_every": 24}, "num_prompts": 32,
                                                 "num_minibatches": 2, "epochs": 2, "optim": {"lr": 1.5e-4},
                                                 "generation": {"max_new_tokens": 40}}}
    settings["eval"] = {"prompts": 256, "samples_per_prompt": 4}
    run_rlhf_loop(load_loop_config(write_config(tmp_path, settings)), quiet=True)
    rounds = tmp_path / "run" / "rounds"
    stats = json.loads((rounds / "round-001" / "feedback_stats.json").read_text())
    assert stats["feedback/edit_rewrite_pairs"] > 0 and stats["feedback/edit_ranked_pairs"] > 0, stats
    base, final = (json.loads((rounds / f"round-00{i}" / "metrics.json").read_text()) for i in (0, 1))
    assert final["eval/gold_reward"] >= base["eval/gold_reward"] + 0.01, (base, final)
    assert final["eval/aspect/reason"] >= base["eval/aspect/reason"] + 0.1, (base, final)
