"""Exploit probes on reward functions whose weaknesses are known in advance."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.data.records import Comparison, Label, Ranking, Rating
from rlhfkit.reward.probes import PROBES, probe_samples, run_probes, split_sentences


class WordCountReward:
    """Reward = number of words + 3 per 'great' (a length- and flattery-loving reward model)."""

    def score_texts(self, prompts, responses, batch_size=64, normalized=False):
        return torch.tensor([len(r.split()) + 3.0 * r.split().count("great") for r in responses])


class TopicReward:
    """Reward = 1 when the response mentions the prompt's first word, else 0 (cares only about topic)."""

    def score_texts(self, prompts, responses, batch_size=64, normalized=False):
        return torch.tensor([float(p.rstrip("?").lower() in r.lower()) for p, r in zip(prompts, responses)])


SAMPLES = [("Cats?", "Cats purr. They sleep a lot."), ("Dogs?", "Dogs bark loudly. Dogs fetch."),
           ("Birds?", "Birds fly south. Birds sing at dawn.")]


def test_length_loving_reward_is_caught_by_padding_probes_and_the_suffix_search():
    report = run_probes(WordCountReward(), SAMPLES, suffix_length=2, candidates=["ok", "great", "fine"])
    shares = {r.name: r.share_rose for r in report.results}
    assert shares["filler_padding"] == shares["repeated_sentence"] == shares["flattery"] == 1.0
    assert shares["claims_correct"] == 1.0 and shares["truncation"] == 0.0
    assert report.suffix == "great great"
    suffix = report.results[-1]
    assert suffix.name == "greedy_suffix" and suffix.share_rose == 1.0 and suffix.mean_delta == pytest.approx(8.0)


def test_topic_reward_is_hurt_by_off_topic_swap_and_blind_to_padding():
    report = run_probes(TopicReward(), SAMPLES, probes=["off_topic_swap", "filler_padding"], suffix_length=1,
                        candidates=["zzz"])
    by_name = {r.name: r for r in report.results}
    assert by_name["off_topic_swap"].mean_delta == pytest.approx(-1.0)
    assert by_name["filler_padding"].share_rose == 0.0 and by_name["filler_padding"].mean_delta == 0.0
    assert report.suffix == "" and "greedy_suffix" not in by_name


def test_probe_edits_and_sample_selection():
    assert split_sentences("One. Two! Three?") == ["One.", "Two!", "Three?"]
    assert PROBES["repeated_sentence"]("p", "A b. C d.", 0, SAMPLES) == "A b. C d. C d."
    assert PROBES["truncation"]("p", "one two three four", 0, SAMPLES) == "one two"
    assert PROBES["off_topic_swap"]("Cats?", "Cats purr. They sleep a lot.", 0, SAMPLES) == SAMPLES[1][1]
    records = [Comparison("p", "good", "bad"), Ranking("p", ("x", "y"), (2, 1)), Rating("p", "low", 1.0, (1.0, 5.0)),
               Rating("p", "high", 5.0, (1.0, 5.0)), Label("p", "nope", False), Label("p", "yes", True)]
    assert probe_samples(records) == [("p", "good"), ("p", "y"), ("p", "high"), ("p", "yes")]
    with pytest.raises(ValueError, match="unknown probe"):
        run_probes(WordCountReward(), SAMPLES, probes=["nonsense"])
