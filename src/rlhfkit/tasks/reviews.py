"""What a reader values in a review, measured on the built-in corpus: the sentiment task's aspects.

- ``on_topic``: 1 when the review names the subject (a word of its name, "Kestrel", "noodle bar")
  or one of the aspects the corpus gives that subject ("the broth", "battery life"); 0 otherwise.
  Prompts outside the corpus catalogue fall back to sharing a content word with the prompt.
- ``reason``: a reason marker ("because", "since", ...) followed by two or more content words
  (1), an empty reason ("because it just is", 0.1), no reason (0) -- the `explain` task's test.
- ``corpus_like``: share of the review's word bigrams (with a start-of-text marker) that occur in
  10,000 corpus reviews (all splits, seed 0), divided by 0.9 and capped at 1, so ordinary corpus
  prose scores 1 and invented word salad or stutter ("great great") less. Cheap and deterministic:
  the bigram set is built once per process (about a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from rlhfkit.models import corpus
from rlhfkit.tasks.aspects import content_words, mentions_prompt, normalized
from rlhfkit.tasks.explain import reason_quality
from rlhfkit.tasks.quality import words

CORPUS_REVIEWS = 10_000
FULL_COVERAGE = 0.9
START = "<s>"


@cache
def _subjects() -> dict[str, corpus.Subject]:
    """Review prompt -> its corpus subject, over every split."""
    return {subject.prompt: subject for subject in corpus.review_subjects()}


@cache
def _corpus_bigrams() -> frozenset[tuple[str, str]]:
    """Word bigrams of the corpus reviews, each review starting with the START marker."""
    grams: set[tuple[str, str]] = set()
    for doc in corpus.generate_reviews(CORPUS_REVIEWS, seed=0, split="all"):
        tokens = [START, *words(doc.completion)]
        grams.update(zip(tokens, tokens[1:]))
    return frozenset(grams)


def names_subject(prompt: str, response: str) -> bool:
    """Whether the response names the prompt's subject or one of its corpus aspects."""
    subject = _subjects().get(prompt.strip())
    if subject is None:
        return mentions_prompt([prompt], [response])[0]
    text = f" {normalized(response)} "
    if any(f" {normalized(aspect)} " in text for aspect in subject.aspects):
        return True
    return bool(content_words(subject.name) & content_words(response))


def on_topic(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """1 for a review that names its subject or one of the subject's aspects, else 0."""
    return [float(names_subject(p, r)) for p, r in zip(prompts, responses)]


def mentions_subject(prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
    """The watch's on-topic test for reviews: the subject or one of its aspects is named."""
    return [names_subject(p, r) for p, r in zip(prompts, responses)]


def reason(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """1 for a reason marker followed by 2+ content words, 0.1 for an empty reason, 0 for none."""
    return [reason_quality(r) for r in responses]


def corpus_like(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Share of the response's bigrams seen in the corpus reviews, / 0.9, capped at 1 (0 when empty)."""
    known = _corpus_bigrams()
    out = []
    for response in responses:
        tokens = words(response)
        grams = list(zip([START, *tokens], tokens))
        out.append(min(1.0, sum(g in known for g in grams) / len(grams) / FULL_COVERAGE) if grams else 0.0)
    return out
