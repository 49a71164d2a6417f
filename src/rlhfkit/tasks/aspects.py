"""Gold as named aspects: each scores one thing a reader values in [0, 1]; a task combines them.

A task that declares ``aspects`` and a ``combine`` function gets its gold reward from them, so the
report can show every aspect beside the gold, the simulated annotators judge by the same aspects,
and a stricter rubric (default: the weakest aspect) can judge the policy without being trained on.
The shared aspects live here: ``well_formed`` (1 - the degeneracy penalty), ``original`` (the
response was not also given to other prompts) and ``mentions_prompt`` (a generic on-topic test).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rlhfkit.tasks.quality import FUNCTION_WORDS, degeneracy, words

AspectFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
"""(prompts, responses) -> one score in [0, 1] per pair; higher is better."""
Combine = Callable[[Mapping[str, float]], float]
"""{aspect name: score} of one response -> its gold reward."""
TopicFn = Callable[[Sequence[str], Sequence[str]], Sequence[bool]]
"""(prompts, responses) -> whether each response mentions its prompt's subject."""
# Words of the prompt templates themselves, which say nothing about the subject.
TEMPLATE_WORDS = frozenset({"review", "passage", "summary", "q", "a", "why", "does", "do", "is", "are"})


@dataclass(frozen=True)
class Aspect:
    """One named part of a task's gold: what it measures (for the report) and how."""

    name: str
    description: str
    score_fn: AspectFn

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"aspect name {self.name!r} must be an identifier like 'on_topic'")


def normalized(text: str) -> str:
    """Lower-cased words joined by single spaces: two responses are 'the same' when these match."""
    return " ".join(words(text))


def score_aspects(aspects: Sequence[Aspect], prompts: Sequence[str],
                  responses: Sequence[str]) -> dict[str, list[float]]:
    """Every aspect's scores, clamped to [0, 1] (a non-finite score counts as 0)."""
    out: dict[str, list[float]] = {}
    for aspect in aspects:
        raw = [float(v) for v in aspect.score_fn(prompts, responses)]
        if len(raw) != len(responses):
            raise ValueError(f"aspect {aspect.name!r} returned {len(raw)} scores for {len(responses)} responses")
        out[aspect.name] = [min(max(v, 0.0), 1.0) if math.isfinite(v) else 0.0 for v in raw]
    return out


def aspect_gold(aspects: Sequence[Aspect], combine: Combine) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """The gold function of a task declared by aspects: ``combine`` applied to each response's scores."""
    def gold(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        table = score_aspects(aspects, prompts, responses)
        return [combine({name: scores[i] for name, scores in table.items()}) for i in range(len(responses))]

    return gold


def weakest_aspect(aspects: Sequence[Aspect]) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """The default strict rubric: a response is as good as its weakest aspect."""
    def rubric(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        table = score_aspects(aspects, prompts, responses)
        return [min(scores[i] for scores in table.values()) for i in range(len(responses))]

    return rubric


def weighted_mean(scores: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Sum of weight * score over the named aspects, divided by the sum of the weights."""
    return sum(w * scores[name] for name, w in weights.items()) / sum(weights.values())


def original(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """1 / (1 + k), k = how many other prompts of the batch got the same (normalized) response."""
    given: dict[str, set[str]] = defaultdict(set)
    keys = [normalized(r) for r in responses]
    for prompt, key in zip(prompts, keys):
        given[key].add(prompt)
    return [1.0 / (1 + len(given[key] - {prompt})) if key else 0.0 for prompt, key in zip(prompts, keys)]


def well_formed(min_words: int, max_words: int) -> AspectFn:
    """1 - the shared degeneracy penalty (empty, short, run-on, looping, keyword salad, cut-off text)."""
    def score(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return [1.0 - degeneracy(r, min_words=min_words, max_words=max_words) for r in responses]

    return score


def content_words(text: str) -> set[str]:
    """Words of 3+ letters that are neither function words nor prompt-template words ("review", "why")."""
    return {w.removesuffix("'s") for w in words(text)
            if len(w) >= 3 and w not in FUNCTION_WORDS and w not in TEMPLATE_WORDS}


def mentions_prompt(prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
    """Generic on-topic test: the response shares at least one content word with its prompt."""
    return [bool(content_words(p) & content_words(r)) for p, r in zip(prompts, responses)]


def context_index(context: Sequence[tuple[str, str]]) -> dict[str, set[str]]:
    """normalized response -> the prompts it was given to, over (prompt, response) pairs seen together."""
    index: dict[str, set[str]] = defaultdict(set)
    for prompt, response in context:
        index[normalized(response)].add(prompt)
    return dict(index)
