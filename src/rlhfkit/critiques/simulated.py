"""Simulated critiques: a panel member writes what it noticed about a response's gold aspects, with noise.

Each aspect score (in [0, 1]) is perceived with Gaussian noise; aspects perceived below ``low`` or at
least ``high`` are remarkable, and the ``mention`` most remarkable ones are written as short phrases
("too generic, doesn't name the product", "good reason given") that the shipped rules file reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rlhfkit.tasks.aspects import Aspect, normalized, score_aspects

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


@dataclass
class AspectCritic:
    """Writes a critique of (prompt, response) from the task's aspects; ``context`` as in ``Task.utility_with``."""

    aspects: Sequence[Aspect]
    noise: float = 0.1
    mention: int = 3
    low: float = 0.5
    high: float = 0.75
    context: Mapping[str, set[str]] = field(default_factory=dict)

    def judged(self, prompt: str, response: str, rng: np.random.Generator) -> dict[str, bool]:
        """The aspects this critique mentions: name -> judged good (the most remarkable first)."""
        others = sorted(self.context.get(normalized(response), set()) - {prompt})
        table = score_aspects(self.aspects, [prompt, *others], [response] * (1 + len(others)))
        perceived = {name: scores[0] + rng.normal(0.0, self.noise) for name, scores in table.items()}
        middle = (self.low + self.high) / 2
        remarkable = [(n, p) for n, p in perceived.items() if p < self.low or p >= self.high]
        remarkable.sort(key=lambda np_: -abs(np_[1] - middle))
        return {n: p >= self.high for n, p in remarkable[: self.mention]}

    def __call__(self, prompt: str, response: str, rng: np.random.Generator) -> str:
        """The critique text: the mentioned aspects' phrases joined by '; '."""
        judged = self.judged(prompt, response, rng)
        return "; ".join(phrase(n, good) for n, good in judged.items()) or NOTHING
