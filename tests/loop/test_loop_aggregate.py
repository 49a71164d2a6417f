"""Aggregating the API's annotation rows: weighted records, reliability, agreement with gold."""

from __future__ import annotations

import random

from rlhfkit.loop.aggregate import aggregate_feedback, annotator_reliability, gold_agreement, pairwise_votes


def _rows(n_tasks=30, seed=0):
    """Honest annotators pick the response starting with 'good'; the spammer flips a coin."""
    rng = random.Random(seed)
    rows = []
    for t in range(n_tasks):
        good, bad = 2 * t, 2 * t + 1
        samples = [{"id": good, "text": f"good answer {t}", "model": "p", "round": 1},
                   {"id": bad, "text": f"bad answer {t}", "model": "p", "round": 1}]
        if t % 2:
            samples.reverse()
        for name in ("ann-a", "ann-b", "ann-c", "spam"):
            winner = good if name != "spam" else rng.choice([good, bad])
            displayed = [s["id"] for s in samples]
            if rng.random() < 0.5:
                displayed.reverse()
            rows.append({"annotation_id": len(rows), "task_id": t, "kind": "pairwise", "scale": None,
                         "annotator": name, "is_gold": False, "gold": None, "prompt": f"q{t}", "samples": samples,
                         "displayed": displayed, "answer": {}, "resolved": {"winner": winner, "margin": None},
                         "submitted_at": f"2025-01-01T00:00:{t:02d}+00:00"})
    return rows


def _gold(prompts, responses):
    return [1.0 if r.startswith("good") else 0.0 for r in responses]


def test_votes_use_canonical_order_and_record_swaps():
    rows = _rows(4)
    votes = pairwise_votes(rows)
    assert len(votes) == 16
    first = votes[0]
    assert first.label == 0 and first.flipped == (rows[0]["displayed"][0] != rows[0]["samples"][0]["id"])
    assert pairwise_votes([dict(rows[0], resolved={"winner": "tie"})]) == []
    assert pairwise_votes([dict(rows[0], is_gold=True)]) == []


def test_reliability_finds_the_spammer_and_reports_true_accuracy():
    reliability = {e["annotator"]: e for e in annotator_reliability(_rows(40), _gold)}
    assert set(reliability) == {"ann-a", "ann-b", "ann-c", "spam"}
    assert reliability["spam"]["reliability"] < 0.75 < min(reliability[n]["reliability"] for n in ("ann-a", "ann-b", "ann-c"))
    assert reliability["ann-a"]["true_accuracy"] == 1.0 and reliability["ann-a"]["n"] == 40
    assert 0.25 < reliability["spam"]["true_accuracy"] < 0.75
    assert annotator_reliability([]) == []


def test_gold_agreement_skips_pairs_without_a_better_answer():
    rows = _rows(3)
    assert gold_agreement(rows, _gold)["ann-b"] == (3, 3)
    assert gold_agreement(rows, lambda p, r: [0.5] * len(r)) == {}


def test_aggregated_records_prefer_the_good_answers():
    records = aggregate_feedback(_rows(20), "reliability")
    assert len(records) == 20
    assert all(r["kind"] == "pairwise" and r["chosen"].startswith("good") and 0.5 < r["weight"] <= 1.0 for r in records)
    majority = aggregate_feedback(_rows(20), "majority")
    assert all(r["weight"] == 1.0 and r["chosen"].startswith("good") for r in majority)
