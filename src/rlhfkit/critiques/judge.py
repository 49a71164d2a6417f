"""Judge encoders: a user's ``module:function``, or a reward model scoring critique-conditioned text."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.critiques.base import CritiqueError, Encoded

JudgeFn = Callable[[list[str], list[str], list[str]], Sequence[Any]]
"""(critiques, prompts, responses) -> per critique a score, a (score, confidence) pair or a mapping."""


def _unit(value: Any, what: str, low: float, where: str) -> float:
    """A finite number in [low, 1], or an error naming the critique and the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CritiqueError(f"{where}: {what} must be a finite number, got {value!r}")
    if not low <= value <= 1.0:
        raise CritiqueError(f"{where}: {what} {value} is outside [{low:g}, 1]")
    return float(value)


def to_encoded(value: Any, where: str) -> Encoded:
    """One judge output as :class:`Encoded`: a score (confidence 1), (score, confidence) or a mapping."""
    if isinstance(value, Mapping):
        aspects = {str(k): _unit(v, f"aspect {k!r}", -1.0, where) for k, v in (value.get("aspects") or {}).items()}
        return Encoded(_unit(value.get("score"), "score", -1.0, where),
                       _unit(value.get("confidence", 1.0), "confidence", 0.0, where), aspects)
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise CritiqueError(f"{where}: expected (score, confidence), got {len(value)} values")
        return Encoded(_unit(value[0], "score", -1.0, where), _unit(value[1], "confidence", 0.0, where))
    return Encoded(_unit(value, "score", -1.0, where), 1.0)


class FunctionJudge:
    """Calls a ``module:function`` (or ``file.py:function``) with (critiques, prompts, responses)."""

    def __init__(self, spec: str, function: JudgeFn | None = None) -> None:
        if function is None:
            from rlhfkit.rl.rewards import RewardError, load_function

            try:
                function = load_function(spec)
            except RewardError as exc:
                raise CritiqueError(f"critique encoder {spec!r}: {exc}") from exc
        self.function = function
        self.name = f"judge:{spec}"

    def encode(self, critiques: Sequence[str], prompts: Sequence[str],
               responses: Sequence[str]) -> list[Encoded]:
        """Score every critique in one call; each output is checked and named by its index."""
        out = list(self.function(list(critiques), list(prompts), list(responses)))
        if len(out) != len(critiques):
            raise CritiqueError(f"{self.name}: returned {len(out)} values for {len(critiques)} critiques")
        return [to_encoded(v, f"{self.name} critique {i + 1}") for i, v in enumerate(out)]


def conditioned_prompt(prompt: str, response: str) -> str:
    """The text a reward model sees before the critique: the task and the response being judged."""
    return f"{prompt}\n\nResponse: {response}\n\nCritique of the response:"


class RewardModelJudge:
    """A reward model scores the critique as a continuation of (prompt, response): score = tanh(z)."""

    def __init__(self, directory: str | Path, batch_size: int = 32) -> None:
        from rlhfkit.models.reward_model import load_reward_model

        self.model = load_reward_model(str(directory)).eval()
        self.batch_size = batch_size
        self.name = f"judge:{Path(directory).name}"

    def encode(self, critiques: Sequence[str], prompts: Sequence[str],
               responses: Sequence[str]) -> list[Encoded]:
        """Normalized reward z of each conditioned critique; confidence |tanh(z)| (a neutral score says little)."""
        texts = [conditioned_prompt(p, r) for p, r in zip(prompts, responses)]
        z = self.model.score_texts(texts, list(critiques), normalized=True, batch_size=self.batch_size).tolist()
        return [Encoded(math.tanh(v), abs(math.tanh(v))) for v in z]
