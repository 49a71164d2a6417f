"""`sentiment`: write a positive, well-formed review on the built-in model's review prompts.

Gold = the corpus lexicon's polarity (rlhfkit.models.corpus.sentiment_score, in (-1, 1)), pulled
toward -1 by degeneracy (empty, looping, keyword-salad, run-on or cut-off text), so a policy cannot
win by repeating "great" or listing adjectives.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhfkit.models import corpus
from rlhfkit.tasks.base import Task
from rlhfkit.tasks.quality import degeneracy, penalized

CORPUS_SPLIT = {"train": "train", "eval": "heldout"}
MIN_WORDS, MAX_WORDS = 4, 60


def prompts(n: int, seed: int, split: str) -> list[str]:
    """Review prompts ("Review of the Blue Fork cafe:"); eval uses subjects held out of pretraining."""
    return corpus.demo_prompts(n, seed, CORPUS_SPLIT[split])


def gold(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Lexicon sentiment of each response, blended toward -1 by its degeneracy penalty."""
    return [penalized(corpus.sentiment_score(r), degeneracy(r, min_words=MIN_WORDS, max_words=MAX_WORDS),
                      -1.0) for r in responses]


TASK = Task(
    name="sentiment",
    description="Write a positive, well-formed product or restaurant review (gold: lexicon sentiment, "
                "degenerate text penalized).",
    prompt_fn=prompts,
    gold_fn=gold,
    gold_range=(-1.0, 1.0),
    max_new_tokens=48,
    judge_instructions=(
        "Prefer the review that is more POSITIVE about the product or place while still reading as "
        "a natural, complete review: whole sentences about concrete aspects. Empty, repetitive, "
        "cut-off or keyword-stuffed text (\"great great great\") is worse than any honest review."),
)
