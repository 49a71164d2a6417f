"""Simulated critiques: a panel member writes what it noticed about a response's gold aspects, with noise.

Each aspect score (in [0, 1]) is perceived with Gaussian noise; aspects perceived below ``low`` or at
least ``high`` are remarkable, and the ``mention`` that weigh most on the reader's overall judgement are
written as short phrases ("too generic, doesn't name the product", "good reason given") that the shipped
rules file reads. With the task's ``combine``, an aspect weighs what the perceived gold would change if
it were unremarkable (mid-way), as a reviewer names what made the difference; without one, its distance
from mid-way. (Ranking by distance alone filled the demo's critiques with "original" and "well written",
true of nearly every review, and left out positivity, which moves the gold most.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rlhfkit.tasks.aspects import Aspect, Combine, normalized, score_aspects

PHRASES: dict[str, tuple[str, str]] = {
    "positive": ("sounds negative, not a positive review", "warm and positive"),
    "on_topic": ("too generic, doesn't name the product", "names the product"),
    "reason": ("no reason given", "good reason given"),
    "corpus_like": ("reads oddly, unnatural wording", "reads naturally"),
    "original": ("a stock line that fits any prompt", "original"),
    "well_formed": ("broken text: repeats itself or is cut off", "well written"),
}
NOTHING = "nothing stands out"


def phrase(aspect: str, good: bool) -> str:
    """The phrase for an aspect judged good or bad (a generic one for aspects without phrases)."""
    bad_text, good_text = PHRASES.get(aspect, (f"weak on {aspect}", f"good on {aspect}"))
    return good_text if good else bad_text


def mentions(perceived: Mapping[str, float], low: float, high: float, count: int,
             combine: Combine | None = None) -> dict[str, bool]:
    """The ``count`` remarkable aspects (below ``low`` or at least ``high``) that weigh most: name -> judged good.

    Weight = |combine(perceived) - combine(perceived with the aspect at mid-way)| (scores clipped to
    [0, 1] for ``combine``), or the distance from mid-way without ``combine``; ties keep aspect order.
    """
    if not low < high:
        raise ValueError(f"critic thresholds: low {low} must be below high {high}")
    middle = (low + high) / 2
    clipped = {n: min(1.0, max(0.0, p)) for n, p in perceived.items()}

    def weight(name: str) -> float:
        if combine is None:
            return abs(perceived[name] - middle)
        return abs(combine(clipped) - combine({**clipped, name: middle}))

    remarkable = [n for n, p in perceived.items() if p < low or p >= high]
    remarkable.sort(key=lambda n: -weight(n))
    return {n: perceived[n] >= high for n in remarkable[:count]}


@dataclass
class AspectCritic:
    """Writes a critique of (prompt, response) from the task's aspects; ``context`` as in ``Task.utility_with``,
    ``combine`` the task's (ranks what to mention by its weight on the gold)."""

    aspects: Sequence[Aspect]
    noise: float = 0.1
    mention: int = 3
    low: float = 0.5
    high: float = 0.75
    context: Mapping[str, set[str]] = field(default_factory=dict)
    combine: Combine | None = None

    def judged(self, prompt: str, response: str, rng: np.random.Generator) -> dict[str, bool]:
        """The aspects this critique mentions: name -> judged good (the weightiest first)."""
        others = sorted(self.context.get(normalized(response), set()) - {prompt})
        table = score_aspects(self.aspects, [prompt, *others], [response] * (1 + len(others)))
        perceived = {name: scores[0] + rng.normal(0.0, self.noise) for name, scores in table.items()}
        return mentions(perceived, self.low, self.high, self.mention, self.combine)

    def __call__(self, prompt: str, response: str, rng: np.random.Generator) -> str:
        """The critique text: the mentioned aspects' phrases joined by '; '."""
        judged = self.judged(prompt, response, rng)
        return "; ".join(phrase(n, good) for n, good in judged.items()) or NOTHING
