"""`sentiment`: write a positive review of the prompt's subject that a reader would find useful.

Gold is declared as six named aspects, each in [0, 1] (rlhfkit.tasks.reviews says how each is
measured):
  positive    = (lexicon polarity + 1) / 2   (rlhfkit.models.corpus.sentiment_score, in (-1, 1));
  on_topic    = names the subject or one of its aspects;
  reason      = gives a concrete reason ("because ..." with content);
  corpus_like = reads like the corpus (share of word bigrams seen in corpus reviews);
  original    = 1 / (1 + other prompts given the same response);
  well_formed = 1 - the degeneracy penalty (empty, looping, keyword-salad, run-on or cut-off text).
Combination:
  quality = (0.3 on_topic + 0.25 reason + 0.3 original + 0.15 corpus_like) / 1.0
  score   = positive * (0.25 + 0.75 quality)                 in [0, 1]
  gold    = (2 score - 1) pulled toward -1 by (1 - well_formed)   in [-1, 1],
so a generic phrase given to every prompt ("What a great find.") scores far below a positive
review that names what it liked and why. The strict rubric (the default ``eval.judge``) gives 0
unless the review is clearly positive (polarity >= 0.25), original and flawless in form, else
(1 + on_topic + full reason + fully corpus-like) / 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rlhfkit.models import corpus
from rlhfkit.tasks import reviews
from rlhfkit.tasks.aspects import Aspect, original, score_aspects, weighted_mean, well_formed
from rlhfkit.tasks.base import Task
from rlhfkit.tasks.quality import penalized

CORPUS_SPLIT = {"train": "train", "eval": "heldout"}
MIN_WORDS, MAX_WORDS = 4, 60
QUALITY_WEIGHTS = {"on_topic": 0.3, "reason": 0.25, "original": 0.3, "corpus_like": 0.15}
CLEARLY_POSITIVE = (corpus.CLEARLY_POSITIVE_POLARITY + 1) / 2


def prompts(n: int, seed: int, split: str) -> list[str]:
    """Review prompts ("Review of the Blue Fork cafe:"); eval uses subjects held out of pretraining."""
    return corpus.demo_prompts(n, seed, CORPUS_SPLIT[split])


def positive(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Lexicon polarity mapped from (-1, 1) to (0, 1)."""
    return [(corpus.sentiment_score(r) + 1.0) / 2.0 for r in responses]


ASPECTS = (
    Aspect("positive", "positive about the subject (lexicon polarity, rescaled to 0-1)", positive),
    Aspect("on_topic", "names the subject or one of its aspects", reviews.on_topic),
    Aspect("reason", "gives a concrete reason (\"because\" + content)", reviews.reason),
    Aspect("corpus_like", "reads like the corpus (share of word bigrams seen in corpus reviews)",
           reviews.corpus_like),
    Aspect("original", "not the same response as given to other prompts", original),
    Aspect("well_formed", "whole sentences, no loops, salad, run-on or cut-off text",
           well_formed(MIN_WORDS, MAX_WORDS)),
)


def combine(scores: Mapping[str, float]) -> float:
    """The gold of one review from its aspect scores (formula in the module docstring)."""
    quality = weighted_mean(scores, QUALITY_WEIGHTS)
    score = scores["positive"] * (0.25 + 0.75 * quality)
    return penalized(2.0 * score - 1.0, 1.0 - scores["well_formed"], -1.0)


def strict(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """The strict rubric: gates on positive, original and well-formed, then counts full marks."""
    table = score_aspects(ASPECTS, prompts, responses)
    out = []
    for i in range(len(responses)):
        s = {name: scores[i] for name, scores in table.items()}
        if s["positive"] < CLEARLY_POSITIVE or s["original"] < 1.0 or s["well_formed"] < 1.0:
            out.append(0.0)
        else:
            out.append((1.0 + s["on_topic"] + float(s["reason"] >= 1.0) + float(s["corpus_like"] >= 1.0)) / 4.0)
    return out


TASK = Task(
    name="sentiment",
    description="Write a positive review that names what it liked and why (gold: six aspects -- positive, "
                "on topic, reason, corpus-like, original, well-formed).",
    prompt_fn=prompts,
    aspects=ASPECTS,
    combine=combine,
    combination="gold = 2 * positive * (0.25 + 0.75 * (0.3 on_topic + 0.25 reason + 0.3 original "
                "+ 0.15 corpus_like)) - 1, pulled toward -1 by (1 - well_formed)",
    rubric_fn=strict,
    topic_fn=reviews.mentions_subject,
    gold_range=(-1.0, 1.0),
    max_new_tokens=48,
    judge_instructions=(
        "Prefer the review that is POSITIVE about this particular product or place and says why: it "
        "names the thing or its aspects (the broth, the battery) and gives a concrete reason, in whole, "
        "natural sentences. A generic line that could answer any prompt (\"What a great find.\") is "
        "worse than a specific review; empty, repetitive, cut-off or keyword-stuffed text is worst."),
)
