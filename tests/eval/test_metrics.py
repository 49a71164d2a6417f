"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhfkit.eval import metrics as m


def test_distinct_n_hand_computed() -> None:
    texts = ["the cat sat", "the cat ran"]
    # unigrams: the cat sat the cat ran -> 4 distinct of 6
    assert m.distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) -> 3 distinct of 4
    assert m.distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert m.distinct_n(["a b", ""], 3) == 0.0
    assert m.distinct_n(["good good good good"], 1) == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        m.distinct_n(texts, 0)


def test_repetition_rate() -> None:
    assert m.repetition_rate("a b c d") == 0.0
    # bigrams: (a b) (b a) (a b) (b a) -> 2 distinct of 4
    assert m.repetition_rate("a b a b a") == pytest.approx(0.5)
    assert m.repetition_rate("") == 0.0


def test_length_stats() -> None:
    stats = m.length_stats(["one two three", "", "a b c d e"])
    assert stats.mean == pytest.approx(8 / 3)
    assert (stats.min, stats.max, stats.median) == (0, 5, 3.0)
    assert stats.std == pytest.approx(float(np.std([3, 0, 5])))
    assert stats.empty_fraction == pytest.approx(1 / 3)
    assert stats.to_dict()["length/mean"] == pytest.approx(8 / 3)

    class CharTokenizer:
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
            return {"input_ids": list(text)}

    assert m.length_stats(["abc", "de"], tokenizer=CharTokenizer()).mean == 2.5
    with pytest.raises(ValueError):
        m.length_stats([])


def test_bleu_known_value() -> None:
    # Modified precisions 5/6, 3/5, 2/4, 1/3 with brevity penalty 1: BLEU = (1/12)^(1/4).
    score = m.bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert score == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)
    assert m.bleu(["a b c d e"], [["x y", "a b c d e"]]) == pytest.approx(100.0)
    assert m.bleu(["hello there"], ["completely different words here"]) == 0.0
    with pytest.raises(ValueError, match="2 reference"):
        m.bleu(["a"], ["a", "b"])


def test_rouge_known_values() -> None:
    out = m.rouge(["the cat sat on the mat"], ["the cat sat on a mat"])
    # unigram overlap 5 of 6 each way; bigram overlap 3 of 5; LCS "the cat sat on mat" = 5.
    assert out["rouge1"] == pytest.approx(5 / 6)
    assert out["rouge2"] == pytest.approx(3 / 5)
    assert out["rougeL"] == pytest.approx(5 / 6)
    per = m.rouge_per_item(["a b", ""], [["c d", "a b"], "a b"])
    assert per[0]["rougeL"] == pytest.approx(1.0)  # best of the two references
    assert per[1] == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_wilson_interval_table_value() -> None:
    # 7 of 10: Wilson 95% interval (0.3968, 0.8922), e.g. Newcombe (1998), table I.
    low, high = m.wilson_interval(7, 10)
    assert (low, high) == pytest.approx((0.39676, 0.89218), abs=1e-4)


def test_win_rate_with_ties() -> None:
    result = m.win_rate(["win", "win", "tie", "loss", 1, 0.5, 0, 1])
    assert (result.wins, result.losses, result.ties, result.n) == (4, 2, 2, 8)
    assert result.rate == pytest.approx(5 / 8)
    assert (result.low, result.high) == pytest.approx(m.wilson_interval(5, 8))
    assert result.low < result.rate < result.high
    flat = result.to_dict("eval/win_rate")
    assert flat["eval/win_rate"] == pytest.approx(0.625) and flat["eval/win_rate_n"] == 8
    with pytest.raises(ValueError, match="outcome 1"):
        m.win_rate([1, "draw"])
    with pytest.raises(ValueError):
        m.win_rate([])


def test_win_rate_bootstrap_is_seeded_and_covers() -> None:
    outcomes = [1] * 30 + [0] * 10 + [0.5] * 10
    a = m.win_rate(outcomes, method="bootstrap", seed=3)
    b = m.win_rate(outcomes, method="bootstrap", seed=3)
    assert (a.low, a.high) == (b.low, b.high)
    assert a.low < 0.7 < a.high
    wilson = m.win_rate(outcomes)
    assert abs(a.low - wilson.low) < 0.05 and abs(a.high - wilson.high) < 0.05
    assert m.win_rate([1, 1, 1]).high == 1.0


def test_outcomes_from_scores() -> None:
    assert m.outcomes_from_scores([0.9, 0.1, 0.5], [0.2, 0.3, 0.52], tie_tolerance=0.05) == [
        1.0, 0.0, 0.5]
    with pytest.raises(ValueError):
        m.outcomes_from_scores([1.0], [])


def test_kl_summary_matches_loop() -> None:
    per_token = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.5, -0.1, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    sums = [sum(v for v, k in zip(row, mk) if k) for row, mk in zip(per_token.tolist(), mask.tolist())]
    out = m.kl_summary(per_token, mask)
    assert out["kl/mean"] == pytest.approx(np.mean(sums))
    assert out["kl/std"] == pytest.approx(np.std(sums))
    assert out["kl/max"] == pytest.approx(0.6)
    assert out["kl/per_token"] == pytest.approx(sum(sums) / 5)
    with pytest.raises(ValueError, match="shape"):
        m.sequence_kl(per_token, mask[:, :2])


def test_kl_from_logprobs_zero_for_identical_and_k1_value() -> None:
    lp = torch.log(torch.tensor([[0.5, 0.25], [0.1, 0.9]]))
    mask = torch.ones(2, 2)
    assert m.kl_from_logprobs(lp, lp, mask)["kl/mean"] == pytest.approx(0.0)
    ref = lp - 0.2
    assert m.kl_from_logprobs(lp, ref, mask, estimator="k1")["kl/mean"] == pytest.approx(0.4)
    k3 = m.kl_from_logprobs(lp, ref, mask)["kl/mean"]
    assert k3 == pytest.approx(2 * (math.exp(-0.2) - 1 + 0.2), rel=1e-5)


def test_reward_correlation() -> None:
    gold = [1.0, 2.0, 3.0, 4.0]
    corr = m.reward_correlation(gold, [2.0, 4.0, 6.0, 100.0])
    assert corr.spearman == pytest.approx(1.0) and 0.5 < corr.pearson < 1.0
    anti = m.reward_correlation(gold, [4.0, 3.0, 2.0, 1.0])
    assert anti.pearson == pytest.approx(-1.0)
    assert m.reward_correlation(gold, [1.0, 1.0, 1.0, 1.0]).pearson is None
    dropped = m.reward_correlation([1.0, float("nan"), 3.0, 5.0], [1.0, 2.0, 3.0, 4.0])
    assert dropped.n == 3 and dropped.pearson == pytest.approx(0.98198, abs=1e-4)


def test_ensemble_disagreement() -> None:
    scores = [[0.0, 1.0], [2.0, 1.0]]  # per-sample std: 1.0 and 0.0
    assert m.ensemble_disagreement(scores) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        m.ensemble_disagreement([[1.0, 2.0]])
