"""AI judges: annotate through the same API as people, deciding with a scoring function or a reward model.

A judge scores the responses of a task in one batch call and then answers exactly like a simulated
annotator whose hidden utility is that score (`rlhfkit.feedback.annotators`): temperature 0 gives
deterministic judgements (argmax, threshold, sorted order), a positive temperature samples
Bradley-Terry / Plackett-Luce choices from the scores ("RLAIF", Lee et al. 2023; Bai et al. 2022).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from rlhfkit.feedback.annotators import AnnotatorProfile, RatingModel, SimulatedAnnotator, TaskView

BatchScorer = Callable[[list[str], list[str]], Any]


class TextScorer(Protocol):
    """What a reward model offers: score_texts(prompts, responses) -> (b,) scores."""

    def score_texts(self, prompts: list[str], responses: list[str]) -> Any: ...


def _as_floats(scores: Any, expected: int) -> list[float]:
    """Scores as floats from a list, numpy array or torch tensor of shape (b,)."""
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    arr = np.asarray(scores, dtype=float).reshape(-1)
    if arr.shape[0] != expected:
        raise ValueError(f"judge scorer returned {arr.shape[0]} scores for {expected} responses")
    if not np.isfinite(arr).all():
        raise ValueError(f"judge scorer returned non-finite scores {arr.tolist()}")
    return arr.tolist()


class AIJudge:
    """Judges tasks by batch scores; `decide(task)` returns an API answer like a simulated member."""

    def __init__(self, scorer: BatchScorer, *, name: str = "ai-judge", temperature: float = 0.0, seed: int = 0,
                 rating_model: RatingModel | None = None) -> None:
        self._scorer = scorer
        self._scores: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()  # the score cache is per decision; one decision at a time
        self._member = SimulatedAnnotator(AnnotatorProfile(name, temperature=temperature), self._lookup, seed=seed,
                                          rating_model=rating_model or RatingModel())

    @classmethod
    def from_function(cls, fn: Callable[[str, str], float], **kwargs: Any) -> AIJudge:
        """A judge from a per-response scoring function fn(prompt, response) -> float."""
        return cls(lambda prompts, responses: [float(fn(p, r)) for p, r in zip(prompts, responses)], **kwargs)

    @classmethod
    def from_reward_model(cls, model: TextScorer, **kwargs: Any) -> AIJudge:
        """A judge from a reward model's `score_texts(prompts, responses)` (normalized scores if it offers them)."""
        return cls(model.score_texts, **kwargs)

    @property
    def name(self) -> str:
        return self._member.name

    def _lookup(self, prompt: str, response: str) -> float:
        return self._scores[(prompt, response)]

    def score(self, prompt: str, responses: Sequence[str]) -> list[float]:
        """Scores of `responses` to `prompt` in one scorer call."""
        return _as_floats(self._scorer([prompt] * len(responses), list(responses)), len(responses))

    def decide(self, task: TaskView) -> dict[str, Any]:
        """The API answer for `task`, from one batch of scores."""
        texts = [item.text for item in task.items]
        scores = self.score(task.prompt, texts)
        with self._lock:
            self._scores = dict(zip(((task.prompt, t) for t in texts), scores))
            try:
                return self._member.decide(task)
            finally:
                self._scores = {}
