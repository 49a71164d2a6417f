"""Reward sources for policy optimization: reward models, ensembles, and Python functions.

Every source maps (prompts, responses) to a (b,) float32 tensor of scores. Reward models are
scored with their stored normalization statistics (mean 0 / std 1 on their training data) so a
KL coefficient means the same thing across models. Non-finite scores are never passed on
silently: :func:`check_scores` either raises naming the record or reports them for the trainer
to skip the step.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

NonFinitePolicy = Literal["skip", "error"]


class RewardError(ValueError):
    """A reward source that cannot be loaded, or returned unusable scores."""


class RewardSource(Protocol):
    """Anything that scores responses: ``source(prompts, responses) -> (b,) tensor``."""

    name: str

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor: ...


@dataclass
class RewardOutput:
    """Scores (b,) and, for an ensemble, the members' std (b,) as an uncertainty estimate."""

    scores: torch.Tensor
    std: torch.Tensor | None = None


def _as_scores(raw: Any, expected: int, name: str) -> torch.Tensor:
    """Turn a list / array / tensor of numbers into a (b,) float32 tensor, or raise naming ``name``."""
    try:
        scores = torch.as_tensor(raw if isinstance(raw, torch.Tensor) else list(raw), dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise RewardError(f"reward {name}: returned {type(raw).__name__}, expected a sequence of numbers ({exc})") from exc
    scores = scores.detach().cpu().reshape(-1)
    if scores.numel() != expected:
        raise RewardError(f"reward {name}: returned {scores.numel()} scores for {expected} responses")
    return scores


class ModelReward:
    """Scores with a reward model's ``score_texts`` (rlhfkit RewardModel or compatible)."""

    def __init__(self, model: Any, name: str, normalized: bool = True, batch_size: int = 64) -> None:
        self.model = model
        self.name = name
        self.normalized = normalized
        self.batch_size = batch_size

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Score in chunks of ``batch_size`` without gradients."""
        parts = []
        with torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                end = start + self.batch_size
                raw = self.model.score_texts(list(prompts[start:end]), list(responses[start:end]),
                                             normalized=self.normalized)
                parts.append(_as_scores(raw, len(prompts[start:end]), self.name))
        return torch.cat(parts) if parts else torch.zeros(0)


class FunctionReward:
    """Scores with a Python callable ``f(prompts, responses) -> scores``."""

    def __init__(self, function: Callable[[list[str], list[str]], Any], name: str) -> None:
        self.function = function
        self.name = name

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Call the function and check the shape of what it returned."""
        return _as_scores(self.function(list(prompts), list(responses)), len(prompts), self.name)


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (a dotted module, or a path to a .py file, before the colon)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise RewardError(f"reward function {spec!r} must look like module:function or path/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser()
            if not path.is_file():
                raise RewardError(f"reward function {spec!r}: file {path} does not exist")
            unit = importlib.util.spec_from_file_location(f"rlhfkit_reward_{path.stem}", path)
            assert unit is not None and unit.loader is not None
            module = importlib.util.module_from_spec(unit)
            sys.modules[unit.name] = module
            unit.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardError(f"reward function {spec!r}: cannot import {module_name!r} ({exc})") from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise RewardError(f"reward function {spec!r}: {module_name!r} has no callable named {attr!r}")
    return function


class EnsembleReward:
    """Mean of several sources; their std is reported and optionally subtracted (conservative reward).

    score = mean_k r_k - uncertainty_coef * std_k r_k  (an ensemble lower bound as in
    Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization").
    """

    def __init__(self, members: Sequence[RewardSource], uncertainty_coef: float = 0.0) -> None:
        if not members:
            raise RewardError("an ensemble needs at least one reward source")
        self.members = list(members)
        self.uncertainty_coef = uncertainty_coef
        self.name = "ensemble(" + ", ".join(m.name for m in self.members) + ")"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> RewardOutput:
        """Mean and std across members, each (b,)."""
        stacked = torch.stack([member(prompts, responses) for member in self.members])
        mean = stacked.mean(0)
        std = stacked.std(0, unbiased=False) if len(self.members) > 1 else torch.zeros_like(mean)
        return RewardOutput(mean - self.uncertainty_coef * std, std)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """The (possibly penalised) mean score."""
        return self.score(prompts, responses).scores


def build_reward(model_paths: Sequence[str] = (), function_specs: Sequence[str] = (),
                 normalized: bool = True, uncertainty_coef: float = 0.0,
                 device: str | torch.device | None = None, fused_gelu: bool = True) -> EnsembleReward:
    """Reward from model paths and/or ``module:function`` specs (several = an ensemble)."""
    members: list[RewardSource] = []
    if model_paths:
        from rlhfkit.models.reward_model import load_reward_model
        from rlhfkit.rl.speedups import fuse_gelu

        for path in model_paths:
            model = load_reward_model(path, device=device)
            for part in getattr(model, "members", [model]):
                if fused_gelu and isinstance(part, torch.nn.Module):
                    fuse_gelu(part)
            members.append(ModelReward(model, name=str(path), normalized=normalized))
    for spec in function_specs:
        members.append(FunctionReward(load_function(spec), name=spec))
    if not members:
        raise RewardError("no reward given: pass --reward-model PATH and/or --reward-fn module:function")
    return EnsembleReward(members, uncertainty_coef)


def check_scores(scores: torch.Tensor, prompts: Sequence[str], responses: Sequence[str],
                 source: str, policy: NonFinitePolicy) -> torch.Tensor:
    """Boolean (b,) mask of non-finite scores; with ``policy="error"`` raise naming the first one."""
    bad = ~torch.isfinite(scores)
    if bad.any() and policy == "error":
        index = int(bad.nonzero()[0, 0])
        raise RewardError(f"reward {source}: score {scores[index].item()} for record {index} "
                          f"(prompt {prompts[index][:60]!r}, response {responses[index][:60]!r}); "
                          f"{int(bad.sum())} of {len(scores)} scores are not finite")
    return bad


def describe(scores: torch.Tensor) -> dict[str, float]:
    """Mean/std/min/max of finite scores, for logging (NaN when none are finite)."""
    finite = scores[torch.isfinite(scores)]
    if finite.numel() == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": finite.mean().item(), "std": finite.std(unbiased=False).item(),
            "min": finite.min().item(), "max": finite.max().item()}
