"""evaluate_responses: the flat eval/* metrics the loop writes, on a hand-checkable toy task."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.eval.evaluate import evaluate_responses
from rlhfkit.eval.metrics import kl_summary
from rlhfkit.tasks.base import Task


def _task(with_refs: bool) -> Task:
    return Task(name="count_a", description="more a's is better", judge_instructions="count a",
                prompt_fn=lambda n, seed, split: [f"p{i}" for i in range(n)],
                gold_fn=lambda p, r: [min(x.count("a"), 4) / 4 for x in r],
                reference_fn=(lambda p: ["a a a a"] * len(p)) if with_refs else None)


def test_all_inputs_give_all_metrics() -> None:
    prompts = ["p0", "p1", "p2", "p3"]
    responses = ["a a a a", "a a", "b", "a b"]
    base = ["a", "a a", "a", "b"]
    kl = kl_summary(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.ones(2, 2))
    out = evaluate_responses(_task(True), prompts, responses, baseline_responses=base,
                             proxy_scores=[4.0, 2.0, 0.0, 1.0],
                             ensemble_scores=[[0.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 1.0]], kl=kl)
    assert out["eval/gold_reward"] == pytest.approx((1 + 0.5 + 0 + 0.25) / 4)
    # vs base gold (0.25, 0.5, 0.25, 0): win, tie, loss, win
    assert out["eval/win_rate"] == pytest.approx(2.5 / 4)
    assert out["eval/win_rate_n"] == 4 and out["eval/win_rate_ties"] == 1
    assert out["eval/win_rate_low"] < out["eval/win_rate"] < out["eval/win_rate_high"]
    assert out["eval/proxy_reward"] == pytest.approx(1.75)
    assert out["eval/gold_proxy_spearman"] == pytest.approx(1.0)
    assert out["eval/disagreement"] == pytest.approx(0.25)
    assert out["eval/kl"] == pytest.approx(1.0)
    assert out["eval/rougeL"] == pytest.approx((1 + 2 / 3 + 0 + 1 / 3) / 4)  # F1 vs "a a a a"
    assert 0 < out["eval/bleu"] < 100
    assert out["length/mean"] == pytest.approx(9 / 4)
    assert out["eval/distinct_1"] == pytest.approx(2 / 9)


def test_optional_inputs_are_optional() -> None:
    out = evaluate_responses(_task(False), ["p0", "p1"], ["a", "b"])
    assert "eval/gold_reward" in out and "eval/bleu" not in out and "eval/win_rate" not in out
    assert "eval/proxy_reward" not in out and "eval/kl" not in out
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        evaluate_responses(_task(False), ["p0", "p1"], ["a"])
    with pytest.raises(ValueError, match="baseline"):
        evaluate_responses(_task(False), ["p0"], ["a"], baseline_responses=[])
    with pytest.raises(ValueError, match="ensemble member"):
        evaluate_responses(_task(False), ["p0"], ["a"], ensemble_scores=[[1.0, 2.0], [1.0, 2.0]])
