"""The Task record: prompts, a gold (or judge) reward, references and the text judges see.

A task is data plus three small functions, so a user adds one by writing a Python file that builds
``TASK = Task(...)`` (see rlhfkit.tasks.load_task_file). The methods wrap those functions with the
checks every caller relies on: the right number of prompts, and gold rewards that are finite and
inside ``gold_range`` whatever the function returned. A task may declare its gold as named
``aspects`` with a ``combine`` function instead of a ``gold_fn`` (rlhfkit.tasks.aspects).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlhfkit.tasks.aspects import (Aspect, Combine, TopicFn, aspect_gold, context_index, mentions_prompt,
                                   normalized, score_aspects, weakest_aspect)

SPLITS = ("train", "eval")

PromptFn = Callable[[int, int, str], list[str]]
"""(n, seed, split) -> n prompts; the same arguments must give the same prompts."""
GoldFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
"""(prompts, responses) -> one score per pair; higher is better."""
ReferenceFn = Callable[[Sequence[str]], list[str]]
"""prompts -> one reference answer per prompt."""


class TaskError(ValueError):
    """A task was misused or misdefined; the message names the task and what is wrong."""


@dataclass(frozen=True)
class Task:
    """A task preset: where prompts come from, how answers are scored, what judges are told."""

    name: str
    description: str
    prompt_fn: PromptFn
    judge_instructions: str
    gold_fn: GoldFn | None = None
    reference_fn: ReferenceFn | None = None
    gold_range: tuple[float, float] = (0.0, 1.0)
    max_new_tokens: int = 32
    aspects: tuple[Aspect, ...] = ()
    combine: Combine | None = None
    combination: str = ""
    rubric_fn: GoldFn | None = None
    topic_fn: TopicFn | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise TaskError(f"task name {self.name!r} must be a short identifier like 'my_task'")
        names = [a.name for a in self.aspects]
        if len(set(names)) != len(names):
            raise TaskError(f"task {self.name!r}: aspect names {names} repeat")
        if self.aspects and self.gold_fn is None:
            if self.combine is None:
                raise TaskError(f"task {self.name!r}: aspects without a combine function give no gold")
            object.__setattr__(self, "gold_fn", aspect_gold(self.aspects, self.combine))
        if self.aspects and self.rubric_fn is None:
            object.__setattr__(self, "rubric_fn", weakest_aspect(self.aspects))
        low, high = self.gold_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise TaskError(f"task {self.name!r}: gold_range {self.gold_range} must be finite, low < high")
        if self.max_new_tokens < 1:
            raise TaskError(f"task {self.name!r}: max_new_tokens must be >= 1")

    @property
    def has_gold(self) -> bool:
        """Whether the task defines a gold reward (else feedback must come from humans or a judge)."""
        return self.gold_fn is not None

    @property
    def has_rubric(self) -> bool:
        """Whether the task has a strict rubric (the default ``eval.judge``) besides its gold."""
        return self.rubric_fn is not None

    @property
    def has_references(self) -> bool:
        """Whether BLEU/ROUGE against references can be computed for this task."""
        return self.reference_fn is not None

    def prompts(self, n: int, seed: int = 0, split: str = "train") -> list[str]:
        """``n`` prompts of ``split`` ("train" or "eval"), deterministic in (n, seed, split)."""
        if n < 0:
            raise TaskError(f"task {self.name!r}: cannot draw {n} prompts")
        if split not in SPLITS:
            raise TaskError(f"task {self.name!r}: split must be one of {SPLITS}, got {split!r}")
        prompts = list(self.prompt_fn(n, seed, split))
        if len(prompts) != n or not all(isinstance(p, str) for p in prompts):
            raise TaskError(f"task {self.name!r}: prompt function returned {len(prompts)} items "
                            f"for n={n} (must be {n} strings)")
        return prompts

    def gold_reward(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float] | None:
        """Gold score per (prompt, response), finite and clamped to ``gold_range``; None without gold.

        A non-finite score from the gold function becomes the bottom of the range.
        """
        if self.gold_fn is None:
            return None
        if len(prompts) != len(responses):
            raise TaskError(f"task {self.name!r}: {len(prompts)} prompts but {len(responses)} responses")
        raw = list(self.gold_fn(list(prompts), list(responses)))
        if len(raw) != len(prompts):
            raise TaskError(f"task {self.name!r}: gold function returned {len(raw)} scores "
                            f"for {len(prompts)} responses")
        low, high = self.gold_range
        out = []
        for value in raw:
            value = float(value)
            out.append(min(max(value, low), high) if math.isfinite(value) else low)
        return out

    def utility(self, prompt: str, response: str) -> float:
        """Gold score of one response: the hidden utility of simulated annotators."""
        scores = self.gold_reward([prompt], [response])
        if scores is None:
            raise TaskError(f"task {self.name!r} has no gold reward to simulate annotators with")
        return scores[0]

    def utility_with(self, context: Sequence[tuple[str, str]]) -> Callable[[str, str], float]:
        """The utility of annotators who also see ``context`` (prompt, response) pairs, e.g. a campaign.

        A response is scored together with the context pairs that gave the same text to other
        prompts, so batch aspects ("not reused across prompts") count what the annotators saw.
        """
        if not self.has_gold:
            raise TaskError(f"task {self.name!r} has no gold reward to simulate annotators with")
        index = context_index(context)

        def utility(prompt: str, response: str) -> float:
            others = sorted(index.get(normalized(response), set()) - {prompt})
            scores = self.gold_reward([prompt, *others], [response] * (1 + len(others)))
            assert scores is not None
            return scores[0]

        return utility

    def aspect_scores(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, list[float]]:
        """Each declared aspect's scores in [0, 1] (empty when the task declares none)."""
        if len(prompts) != len(responses):
            raise TaskError(f"task {self.name!r}: {len(prompts)} prompts but {len(responses)} responses")
        return score_aspects(self.aspects, list(prompts), list(responses))

    def rubric(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Scores of the strict rubric, a judge the loop never trains on (TaskError when there is none)."""
        if self.rubric_fn is None:
            raise TaskError(f"task {self.name!r} has no strict rubric (declare aspects or rubric_fn)")
        scores = [float(v) for v in self.rubric_fn(list(prompts), list(responses))]
        if len(scores) != len(prompts):
            raise TaskError(f"task {self.name!r}: rubric returned {len(scores)} scores for {len(prompts)} responses")
        return [v if math.isfinite(v) else 0.0 for v in scores]

    def mentions_subject(self, prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
        """Whether each response mentions its prompt's subject (``topic_fn``, else a shared content word)."""
        found = list((self.topic_fn or mentions_prompt)(list(prompts), list(responses)))
        if len(found) != len(prompts):
            raise TaskError(f"task {self.name!r}: topic function returned {len(found)} values for "
                            f"{len(prompts)} responses")
        return [bool(v) for v in found]

    def references(self, prompts: Sequence[str]) -> list[str] | None:
        """One reference answer per prompt (for BLEU/ROUGE), or None when the task has none."""
        if self.reference_fn is None:
            return None
        refs = list(self.reference_fn(list(prompts)))
        if len(refs) != len(prompts):
            raise TaskError(f"task {self.name!r}: reference function returned {len(refs)} "
                            f"references for {len(prompts)} prompts")
        return refs
