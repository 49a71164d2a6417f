"""Aggregation: majority vote, Dawid-Skene EM, crowd Bradley-Terry, record export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlhfkit.feedback.aggregate import (Comparison, LabelItem, PairItem, Vote, aggregate_records,
                                        annotation_records, crowd_bradley_terry, dawid_skene, label_records,
                                        majority_vote, pairwise_records, quality_report, ranking_to_comparisons,
                                        rating_reliability, write_jsonl)


def simulate(accuracies, n_items=300, coverage=0.6, seed=0, flip_prob=0.0, left_bias=None):
    """Binary truths and votes: annotator j is right with probability accuracies[j] (one-coin).

    With left_bias[j] set, that annotator instead says "shown first" with that probability whatever the truth.
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n_items)
    votes = []
    for j, acc in enumerate(accuracies):
        for i in range(n_items):
            if rng.random() >= coverage:
                continue
            flipped = bool(rng.random() < flip_prob)
            if left_bias is not None and left_bias[j] is not None:
                shown_first = 1 if flipped else 0
                label = shown_first if rng.random() < left_bias[j] else 1 - shown_first
            else:
                label = int(truth[i]) if rng.random() < acc else 1 - int(truth[i])
            votes.append(Vote(i, f"a{j}", label, flipped=flipped))
    return truth, votes


def accuracy(result, truth) -> float:
    """Share of items whose winner is the truth; exact ties count 1/2 (a fair coin would break them)."""
    total = 0.0
    for item, win in result.winners().items():
        total += 0.5 if win is None else float(win == truth[item])
    return total / len(result.items)


def reference_dawid_skene(votes, k, iterations, smoothing=1.0):
    """Loop-by-loop Dawid & Skene (1979) EM, two-coin/full confusion, same smoothing; the slow reference."""
    items = sorted({v.item for v in votes})
    names = sorted({v.annotator for v in votes})
    post = {}
    for i in items:
        c = [0.0] * k
        for v in votes:
            if v.item == i:
                c[v.label] += 1
        post[i] = [x / sum(c) for x in c]
    for _ in range(iterations):
        prior = [(sum(post[i][c] for i in items) + smoothing) / (len(items) + k * smoothing) for c in range(k)]
        conf = {}
        for a in names:
            conf[a] = [[smoothing] * k for _ in range(k)]
            for v in votes:
                if v.annotator == a:
                    for c in range(k):
                        conf[a][c][v.label] += post[v.item][c]
            for c in range(k):
                s = sum(conf[a][c])
                conf[a][c] = [x / s for x in conf[a][c]]
        for i in items:
            logp = [math.log(prior[c]) for c in range(k)]
            for v in votes:
                if v.item == i:
                    for c in range(k):
                        logp[c] += math.log(conf[v.annotator][c][v.label])
            m = max(logp)
            z = sum(math.exp(x - m) for x in logp)
            post[i] = [math.exp(x - m) / z for x in logp]
    return post, conf


def test_majority_vote_by_hand() -> None:
    votes = [Vote("x", "a", 0), Vote("x", "b", 0), Vote("x", "c", 1),
             Vote("y", "a", 1), Vote("y", "b", 0),
             Vote("z", "a", 1, weight=0.5), Vote("z", "b", 1, weight=0.5), Vote("z", "c", 0)]
    res = majority_vote(votes)
    assert res.probability(0) == pytest.approx({"x": 2 / 3, "y": 0.5, "z": 0.5})
    assert res.winners() == {"x": 0, "y": None, "z": None}
    # reliability = agreement with decided winners: only item x is decided
    assert res.annotators["a"].accuracy == 1.0 and res.annotators["c"].accuracy == 0.0
    weighted = majority_vote(votes, annotator_weights={"a": 3.0, "b": 1.0})  # c missing -> weight 0
    assert weighted.winners() == {"x": 0, "y": 1, "z": 1}
    assert weighted.probability(0)["y"] == pytest.approx(0.25)


def test_vote_validation() -> None:
    with pytest.raises(ValueError, match="vote 1 .*item 'q'.*label 2"):
        majority_vote([Vote("p", "a", 0), Vote("q", "a", 2)])
    with pytest.raises(ValueError, match="no votes"):
        dawid_skene([])
    with pytest.raises(ValueError, match="unknown model"):
        dawid_skene([Vote(1, "a", 0)], model="three-coin")
    with pytest.raises(ValueError, match="gold answer 5"):
        dawid_skene([Vote(1, "a", 0)], gold={1: 5})


@pytest.mark.parametrize("k", [2, 3])
def test_dawid_skene_matches_loop_reference(k: int) -> None:
    rng = np.random.default_rng(k)
    votes = [Vote(int(i), f"a{j}", int(rng.integers(0, k)) if rng.random() < 0.4 else int(i) % k)
             for i in range(25) for j in range(4) if rng.random() < 0.8]
    res = dawid_skene(votes, k, model="confusion", max_iter=7, tol=0.0, diagonal_prior=0.0)
    ref_post, ref_conf = reference_dawid_skene(votes, k, iterations=7)
    got = dict(zip(res.items, res.posterior))
    for item, row in ref_post.items():
        np.testing.assert_allclose(got[item], row, atol=1e-10)
    for name, rel in res.annotators.items():
        np.testing.assert_allclose(rel.confusion, ref_conf[name], atol=1e-6)


def test_dawid_skene_recovers_reliability_and_beats_majority() -> None:
    accs = [0.9, 0.85, 0.8, 0.8, 0.75, 0.7, 0.7, 0.5, 0.5, 0.5]
    truth, votes = simulate(accs, n_items=400, coverage=0.5, seed=1)
    mv = majority_vote(votes)
    empirical = {f"a{j}": np.mean([v.label == truth[v.item] for v in votes if v.annotator == f"a{j}"])
                 for j in range(len(accs))}
    for model in ("one-coin", "two-coin"):
        ds = dawid_skene(votes, model=model)
        assert ds.converged
        errors = [abs(ds.annotators[name].accuracy - acc) for name, acc in empirical.items()]
        assert max(errors) < 0.1 and np.mean(errors) < 0.04, (model, errors)
        spam = [ds.annotators[f"a{j}"].spammer_score for j in (7, 8, 9)]
        good = [ds.annotators[f"a{j}"].spammer_score for j in (0, 1, 2)]
        assert max(spam) < 0.05 < min(good)
        assert accuracy(ds, truth) > accuracy(mv, truth) + 0.03, model


def test_gold_anchors_against_an_adversarial_majority() -> None:
    # three inverted annotators outvote two good ones: without anchoring EM labels everything backwards
    accs = [0.9, 0.9, 0.15, 0.15, 0.15]
    truth, votes = simulate(accs, n_items=200, coverage=1.0, seed=2)
    plain = dawid_skene(votes)
    assert accuracy(plain, truth) < 0.2
    gold = {i: int(truth[i]) for i in range(0, 200, 10)}  # 10% honeypots
    anchored = dawid_skene(votes, gold=gold)
    assert accuracy(anchored, truth) > 0.95
    assert anchored.annotators["a2"].accuracy < 0.25 < 0.8 < anchored.annotators["a0"].accuracy
    for i, cls in gold.items():
        assert anchored.probability(cls)[i] == 1.0


def test_position_aware_two_coin_sees_position_bias() -> None:
    # a4 answers "shown first" 90% of the time regardless of quality; positions shuffled per vote
    truth, votes = simulate([0.85] * 4 + [None], n_items=300, coverage=1.0, seed=3, flip_prob=0.5,
                            left_bias=[None] * 4 + [0.9])
    ds = dawid_skene(votes, model="two-coin")
    conf = np.array(ds.annotators["a4"].confusion)
    # displayed-position confusion: says "first" (column 0) ~90% whichever position holds the better response
    assert conf[0, 0] == pytest.approx(0.9, abs=0.06) and conf[1, 0] == pytest.approx(0.9, abs=0.06)
    assert ds.annotators["a4"].spammer_score < 0.02
    assert accuracy(ds, truth) > 0.9


def test_crowd_bradley_terry_finds_scores_spammers_and_adversaries() -> None:
    rng = np.random.default_rng(4)
    true_scores = rng.normal(0, 1.5, 30)
    kinds = {"good0": 1.0, "good1": 1.0, "good2": 0.7, "spam": 0.0, "adv": -1.0}
    comps = []
    for name, beta in kinds.items():
        for _ in range(300):
            a, b = rng.choice(30, 2, replace=False)
            p_a = 1 / (1 + math.exp(-beta * (true_scores[a] - true_scores[b])))
            w, lo = (a, b) if rng.random() < p_a else (b, a)
            comps.append(Comparison(int(w), int(lo), name))
    fit = crowd_bradley_terry(comps)
    assert fit.converged
    assert abs(fit.beta["spam"]) < 0.2
    assert fit.beta["adv"] < -0.4
    assert min(fit.beta["good0"], fit.beta["good1"]) > 0.6
    est = np.array([fit.scores[i] for i in range(30)])
    assert np.corrcoef(est, true_scores)[0, 1] > 0.9
    assert fit.preference(int(np.argmax(est)), int(np.argmin(est))) > 0.9
    with pytest.raises(ValueError, match="itself"):
        crowd_bradley_terry([Comparison(1, 1, "x")])


def test_ranking_to_comparisons() -> None:
    pairs = ranking_to_comparisons(["p", "q", "r"], [2, 1, 2], "ann")
    assert {(c.winner, c.loser) for c in pairs} == {("q", "p"), ("q", "r")}


def test_rating_reliability_downweights_a_noisy_rater() -> None:
    rng = np.random.default_rng(5)
    truth = rng.uniform(1, 5, 60)
    rows = []
    for name, sd in (("calm", 0.2), ("calm2", 0.3), ("wild", 2.0)):
        rows += [(i, name, float(truth[i] + rng.normal(0, sd))) for i in range(60)]
    est, var = rating_reliability(rows, gold={0: float(truth[0])})
    assert var["wild"] > 10 * var["calm"]
    means = np.array([np.mean([r for i, _, r in rows if i == t]) for t in range(60)])
    weighted = np.array([est[t] for t in range(60)])
    assert np.abs(weighted - truth).mean() < 0.5 * np.abs(means - truth).mean()
    assert est[0] == pytest.approx(truth[0])


def test_pairwise_records_hard_soft_tie() -> None:
    items = {1: PairItem("p", "A", "B"), 2: PairItem("q", "C", "D"), 3: PairItem("r", "E", "F")}
    hard = pairwise_records(items, {1: 0.8, 2: 0.3, 3: 0.5}, margins={1: -1.5})
    assert hard[0] == {"kind": "pairwise", "prompt": "p", "chosen": "A", "rejected": "B", "margin": 1.5,
                       "tie": False, "annotator": None, "timestamp": None, "weight": 0.8}
    assert (hard[1]["chosen"], hard[1]["rejected"], hard[1]["weight"]) == ("D", "C", pytest.approx(0.7))
    assert hard[2]["tie"] is True
    assert len(pairwise_records(items, {1: 0.8, 2: 0.3}, min_confidence=0.75)) == 1
    soft = pairwise_records(items, {1: 0.8, 2: 1.0}, mode="soft")
    assert [(r["chosen"], r["weight"]) for r in soft] == [("A", 0.8), ("B", pytest.approx(0.2)), ("C", 1.0)]
    with pytest.raises(ValueError, match="no texts for item 9"):
        pairwise_records(items, {9: 0.5})
    with pytest.raises(ValueError, match="outside"):
        pairwise_records(items, {1: 1.5})


def test_label_and_annotation_records(tmp_path) -> None:
    labels = label_records({1: LabelItem("p", "r"), 2: LabelItem("p", "s"), 3: LabelItem("p", "t")},
                           {1: 0.9, 2: 0.5, 3: 0.2})
    assert [(r["response"], r["label"], round(r["weight"], 6)) for r in labels] == [("r", True, 0.9), ("t", False, 0.8)]
    recs = annotation_records([Vote(1, "ann", 1), Vote(1, "spam", 0)], {1: PairItem("p", "A", "B")},
                              {"ann": 2.0, "spam": 0.0})
    assert len(recs) == 1 and recs[0]["chosen"] == "B" and recs[0]["annotator"] == "ann" and recs[0]["weight"] == 2.0
    path = tmp_path / "out.jsonl"
    assert write_jsonl(labels, path) == 2
    assert [json.loads(line) for line in path.read_text().splitlines()] == labels


def _row(aid, task, kind, annotator, resolved, samples, displayed=None, gold=None, scale=None,
         ts="2025-01-01T00:00:00"):
    return {"annotation_id": aid, "task_id": task, "kind": kind, "scale": scale, "annotator_id": 0,
            "annotator": annotator, "is_gold": gold is not None, "gold": gold, "prompt": f"prompt {task}",
            "samples": [{"id": s, "text": f"text {s}", "model": "m", "round": 0} for s in samples],
            "displayed": displayed or samples, "answer": {}, "resolved": resolved, "critique": None,
            "time_spent_ms": 10, "served_at": ts, "submitted_at": ts}


def every_kind_rows() -> list[dict]:
    return [
        _row(1, 10, "pairwise", "a", {"winner": 2}, [1, 2]),
        _row(2, 10, "pairwise", "b", {"winner": 2}, [1, 2], displayed=[2, 1], ts="2025-01-02T00:00:00"),
        _row(3, 10, "pairwise", "c", {"winner": 1}, [1, 2]),
        _row(14, 10, "pairwise", "d", {"winner": 2}, [1, 2]),
        _row(4, 11, "pairwise", "a", {"winner": "tie"}, [3, 4]),
        _row(5, 11, "pairwise", "b", {"skip": True}, [3, 4]),
        _row(6, 12, "pairwise", "a", {"winner": 5}, [5, 6], gold={"winner": 5}),
        _row(7, 20, "binary", "a", {"label": "good"}, [7]),
        _row(8, 20, "binary", "b", {"label": "bad"}, [7]),
        _row(9, 20, "binary", "c", {"label": "good"}, [7]),
        _row(10, 30, "rating", "a", {"rating": 4.0}, [8], scale=[1, 5]),
        _row(11, 30, "rating", "b", {"rating": 2.0}, [8], scale=[1, 5]),
        _row(12, 40, "ranking", "a", {"order": [11, 9, 10]}, [9, 10, 11]),
        _row(13, 40, "ranking", "b", {"order": [11, 10, 9]}, [9, 10, 11]),
    ]


def test_aggregate_records_every_kind() -> None:
    rows = every_kind_rows()
    majority = {r["prompt"]: r for r in aggregate_records(rows, "majority")}
    assert list(majority) == ["prompt 10", "prompt 11", "prompt 20", "prompt 30", "prompt 40"]  # gold task 12 omitted
    r10 = majority["prompt 10"]
    assert (r10["chosen"], r10["rejected"], r10["weight"], r10["timestamp"]) == ("text 2", "text 1", 1.0,
                                                                                "2025-01-02T00:00:00")
    assert majority["prompt 11"]["tie"] is True
    assert majority["prompt 20"]["label"] is True
    assert majority["prompt 30"]["rating"] == 3.0 and majority["prompt 30"]["scale"] == [1, 5]
    assert majority["prompt 40"]["responses"] == ["text 9", "text 10", "text 11"]
    assert majority["prompt 40"]["ranks"] == [2, 2, 1]  # mean positions 1.5, 1.5, 0
    reliable = {r["prompt"]: r for r in aggregate_records(rows, "reliability")}
    assert set(reliable) == set(majority)
    assert reliable["prompt 10"]["chosen"] == "text 2" and 0.5 < reliable["prompt 10"]["weight"] < 1.0
    assert reliable["prompt 40"]["ranks"][2] == 1
    for record in reliable.values():
        assert record["annotator"] is None and record["weight"] > 0


def test_exports_are_valid_feedback_records() -> None:
    from rlhfkit.data.records import record_from_dict

    rows = every_kind_rows() + [
        _row(20, 50, "pairwise", "a", {"winner": 21}, [21, 22]),  # two samples with the same text
        _row(21, 60, "ranking", "a", {"order": [25, 23, 24]}, [23, 24, 25]),
    ]
    rows[-2]["samples"][1]["text"] = rows[-2]["samples"][0]["text"]
    rows[-1]["samples"][2]["text"] = rows[-1]["samples"][0]["text"]
    for method in ("majority", "reliability"):
        records = aggregate_records(rows, method)
        assert "prompt 50" not in {r["prompt"] for r in records}
        (dup,) = [r for r in records if r["prompt"] == "prompt 60"]
        assert dup["responses"] == ["text 23", "text 24"] and dup["ranks"] == [1, 2]
        for record in records:
            record_from_dict(record)  # raises RecordError on anything train-rm would reject


def test_aggregate_records_bad_rows() -> None:
    with pytest.raises(ValueError, match="annotation 1 of task 10: winner 99"):
        aggregate_records([_row(1, 10, "pairwise", "a", {"winner": 99}, [1, 2])])
    with pytest.raises(ValueError, match="row 0 .*missing field 'task_id'"):
        aggregate_records([{"annotation_id": 5, "resolved": {"winner": 1}}])
    with pytest.raises(ValueError, match="unknown method"):
        aggregate_records([], "vote")


def test_quality_report() -> None:
    report = quality_report(every_kind_rows())
    assert set(report) == {"pairwise", "binary", "rating", "ranking"}
    # task 10 holds the only pairable pairwise unit: values 2,2,1,2 -> o_22 = 2, o_12 = o_21 = 1, n = 4:
    # D_o = 2/4, D_e = 2*3*1/(4*3) = 1/2 -> alpha = 0; the rating unit (4, 2) gives D_o = D_e = 4 -> alpha = 0
    assert report["pairwise"]["krippendorff_alpha"] == pytest.approx(0.0)
    assert report["rating"]["krippendorff_alpha"] == pytest.approx(0.0)
    assert report["pairwise"]["tasks"] == 3 and report["pairwise"]["annotations"] == 6  # skip left out
    assert set(report["ranking"]["annotators"]) == {"a", "b"}
    assert report["rating"]["annotators"]["a"]["n_votes"] == 1

    truth, votes = simulate([0.9, 0.9, 0.85, 0.5], n_items=150, coverage=1.0, seed=6)
    rows = [_row(i, v.item, "pairwise", v.annotator, {"winner": 100 + 2 * v.item + v.label},
                 [100 + 2 * v.item, 101 + 2 * v.item]) for i, v in enumerate(votes)]
    pairwise = quality_report(rows)["pairwise"]
    people = pairwise["annotators"]
    assert people["a3"]["reliability"] < 0.6 < 0.8 < min(people[f"a{j}"]["reliability"] for j in range(3))
    assert people["a3"]["spammer_score"] < 0.05
    assert 0.2 < pairwise["krippendorff_alpha"] < 0.8
