"""The three critique encoders on hand-made critiques: rules (exact), learned (beats a constant), judge."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rlhfkit.critiques.base import CritiqueError, CritiqueItem
from rlhfkit.critiques.judge import FunctionJudge
from rlhfkit.critiques.learned import LearnedEncoder, confidence, fit_learned
from rlhfkit.critiques.records import load_encoder
from rlhfkit.critiques.rules import RulesEncoder, parse_rules

RULES = """# weight aspect regex
-0.4 reason \\bno reason\\b
+0.5 reason \\breason\\b
-0.5 on_topic doesn'?t name
+0.2 - \\bgreat\\b
"""


def test_rules_exact_scores_first_match_per_aspect():
    encoder = RulesEncoder(parse_rules(RULES))
    generic, good, great, nothing = encoder.encode(["Too generic, doesn't name the product; no reason given",
                                                    "good reason given", "great reason, great", "meh"])
    assert (generic.score, generic.confidence, dict(generic.aspects)) == (-0.9, 0.75, {"reason": -0.4, "on_topic": -0.5})
    assert (good.score, good.confidence, dict(good.aspects)) == (0.5, 0.5, {"reason": 0.5})
    assert great.score == pytest.approx(0.7) and great.confidence == 0.75
    assert (nothing.score, nothing.confidence) == (0.0, 0.0)


def test_rules_clip_and_file_errors(tmp_path):
    assert RulesEncoder(parse_rules("-0.8 a x\n-0.8 b y")).encode_one("x y").score == -1.0
    with pytest.raises(CritiqueError, match="line 2: weight 'heavy' is not a number"):
        parse_rules("0.1 - ok\nheavy - x")
    with pytest.raises(CritiqueError, match="line 1: bad regular expression"):
        parse_rules("0.1 - (unclosed")
    path = tmp_path / "mine.txt"
    path.write_text("+1 - splendid\n")
    encoder, _ = load_encoder(f"rules:{path}")
    assert encoder.encode(["Splendid!"])[0].score == 1.0 and encoder.name == "rules:mine.txt"


PHRASES = {"no reason given": -0.5, "good reason given": 0.5, "too generic": -0.6, "names the product": 0.4,
           "well written": 0.2, "broken text": -0.8}
FILLER = ["honestly", "overall", "i think", "the review", "mostly", "again"]


def synthetic_items(n: int, seed: int, noise: float = 0.1) -> list[CritiqueItem]:
    """Critiques of 1-3 phrases and filler; rating = clipped sum of the phrases' values + noise, on 1..5."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        chosen = rng.sample(sorted(PHRASES), rng.randint(1, 3))
        value = max(-1.0, min(1.0, sum(PHRASES[p] for p in chosen) + rng.gauss(0, noise)))
        text = "; ".join(f"{rng.choice(FILLER)} {p}" for p in chosen)
        items.append(CritiqueItem("p", f"r{i}", text, round(3 + 2 * value), (1.0, 5.0)))
    return items


def test_learned_fits_and_beats_a_constant(tmp_path):
    encoder, report = fit_learned(synthetic_items(300, 0))
    assert report.heldout_pearson > 0.85 and report.heldout_rmse < 0.6 * report.constant_rmse
    good, bad, unknown = encoder.encode(["overall good reason given; well written", "too generic; broken text",
                                         "zzz qqq"])
    assert good.score > 0.3 and bad.score < -0.6
    assert good.confidence > 0.5 and unknown.confidence == 0.0
    saved = LearnedEncoder.load(encoder.save(tmp_path / "enc.npz"))
    assert np.allclose(saved.predict(["no reason given"]), encoder.predict(["no reason given"]))


def test_learned_confidence_is_the_inverse_variance_share():
    assert confidence(1.0, 0.0) == 1.0 and confidence(0.5, 1.0) == 0.25 and confidence(0.0, 0.3) == 0.0
    with pytest.raises(CritiqueError, match="leverage >= 0"):
        confidence(0.5, -0.1)


def test_learned_keeps_critiques_when_ratings_are_noisy_and_grows_surer_with_more():
    # ratings that are mostly noise (as a simulated panel's 1..5 ratings of similar responses): the encoder
    # explains little of their variance, yet no critique in known words is dropped, and more data -> surer
    small, large = fit_learned(synthetic_items(37, 1, noise=0.8))[0], fit_learned(synthetic_items(300, 1, noise=0.8))[0]
    texts = [i.critique for i in synthetic_items(37, 1, noise=0.8)]
    few, many = [c.confidence for c in small.encode(texts)], [c.confidence for c in large.encode(texts)]
    assert min(few) > 0 and np.median(few) > 0.3 and np.median(many) > 0.8, (np.median(few), np.median(many))
    assert small.encode(["zzz qqq"])[0].confidence == 0.0


def test_learned_needs_rated_critiques():
    unrated = [CritiqueItem("p", "r", "fine") for _ in range(20)]
    with pytest.raises(CritiqueError, match="at least 10 critiques that came with a rating, got 0 of 20"):
        fit_learned(unrated)


def test_judge_from_a_file_function(tmp_path):
    (tmp_path / "myjudge.py").write_text(
        "def judge(critiques, prompts, responses):\n"
        "    return [(-0.5, 0.8) if 'bad' in c else {'score': 1.0, 'confidence': 0.3, 'aspects': {'tone': 1}}\n"
        "            for c in critiques]\n"
        "def broken(critiques, prompts, responses):\n"
        "    return [2.0 for c in critiques]\n")
    encoder, _ = load_encoder(f"{tmp_path / 'myjudge.py'}:judge")
    bad, good = encoder.encode(["bad answer", "fine"], ["p", "p"], ["a", "b"])
    assert (bad.score, bad.confidence) == (-0.5, 0.8)
    assert (good.score, good.confidence, dict(good.aspects)) == (1.0, 0.3, {"tone": 1.0})
    with pytest.raises(CritiqueError, match="critique 1: score 2.0 is outside"):
        FunctionJudge(f"{tmp_path / 'myjudge.py'}:broken").encode(["x"], ["p"], ["r"])
    with pytest.raises(CritiqueError, match="has no callable named 'missing'"):
        load_encoder(f"{tmp_path / 'myjudge.py'}:missing")


def test_reward_model_judge_scores_conditioned_critiques(tmp_path):
    from helpers_models import save_tiny_model

    from rlhfkit.models.reward_model import RewardModel

    save_tiny_model(tmp_path / "trunk")
    RewardModel.from_trunk(str(tmp_path / "trunk"), num_heads=1, max_length=64, seed=0).save_pretrained(tmp_path / "rm")
    encoder, _ = load_encoder(str(tmp_path / "rm"))
    codes = encoder.encode(["good reason", "too generic"], ["p", "p"], ["a", "b"])
    assert encoder.name == "judge:rm" and len(codes) == 2
    assert all(-1 <= c.score <= 1 and c.confidence == pytest.approx(abs(c.score)) for c in codes)
