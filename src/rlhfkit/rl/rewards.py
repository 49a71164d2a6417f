"""Reward sources for policy optimization: reward models, ensembles, and Python functions.

Every source maps (prompts, responses) to a (b,) float32 tensor of scores. Reward models are
scored with their stored normalization statistics (each head mean 0 / std 1 on reference responses
from its feedback data) so a KL coefficient means the same thing across models, and the std over heads
measures their disagreement rather than their arbitrary offsets. Non-finite scores are never passed on
silently: :func:`check_scores` either raises naming the record or reports them for the trainer
to skip the step.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from rlhfkit.rl.packed_linear import packed_linears_while

NonFinitePolicy = Literal["skip", "error"]


class RewardError(ValueError):
    """A reward source that cannot be loaded, or returned unusable scores."""


class RewardSource(Protocol):
    """Anything that scores responses: ``source(prompts, responses) -> (b,) tensor``."""

    name: str

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor: ...


@dataclass
class RewardOutput:
    """Scores (b,) and the std (b,) over all heads of all members as an uncertainty estimate."""

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


def _as_head_scores(raw: Any, expected: int, name: str) -> torch.Tensor:
    """Per-head scores as a (b, H) float32 tensor, or raise naming ``name``."""
    try:
        scores = torch.as_tensor(raw, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError) as exc:
        raise RewardError(f"reward {name}: per-head scores of type {type(raw).__name__} are not numbers ({exc})") from exc
    if scores.dim() != 2 or scores.shape[0] != expected or scores.shape[1] < 1:
        raise RewardError(f"reward {name}: per-head scores have shape {tuple(scores.shape)}, "
                          f"expected ({expected}, heads)")
    return scores


class ModelReward:
    """Scores with a reward model's ``score_texts`` (rlhfkit RewardModel or compatible)."""

    def __init__(self, model: Any, name: str, normalized: bool = True, batch_size: int = 64,
                 pack_weights: bool = True) -> None:
        self.model = model
        self.name = name
        self.normalized = normalized
        self.batch_size = batch_size
        #: Score on weights packed for oneDNN (CPU, float32; :mod:`rlhfkit.rl.packed_linear`): ~10% faster, but a
        #: heap copy of the weights while scoring; off for a model kept on disk between scorings (``reward.offload``).
        self.pack_weights = pack_weights

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Score in chunks of ``batch_size`` without gradients: the mean over the model's heads, (b,)."""
        parts = [_as_scores(raw, n, self.name) for n, raw in self._chunks(prompts, responses)]
        return torch.cat(parts) if parts else torch.zeros(0)

    def heads(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Every head's score (b, H): ``score_texts(per_head=True)``, or (b, 1) for a model without heads."""
        if "per_head" not in inspect.signature(self.model.score_texts).parameters:
            return self(prompts, responses).unsqueeze(-1)
        parts = [_as_head_scores(raw, n, self.name) for n, raw in self._chunks(prompts, responses, per_head=True)]
        return torch.cat(parts) if parts else torch.zeros(0, 1)

    def _chunks(self, prompts: Sequence[str], responses: Sequence[str], **kwargs: Any) -> list[tuple[int, Any]]:
        """(chunk size, raw ``score_texts`` output) per chunk of ``batch_size`` pairs, without gradients."""
        out = []
        # PyTorch's own GELU (no fused MLPs): a model kept on disk scores unpacked, and ``reward.offload`` must
        # change memory only, never a score
        packed = packed_linears_while(self.model, fuse_mlps=False) \
            if isinstance(self.model, nn.Module) and self.pack_weights else contextlib.nullcontext()
        with torch.no_grad(), packed:
            for start in range(0, len(prompts), self.batch_size):
                chunk = slice(start, start + self.batch_size)
                raw = self.model.score_texts(list(prompts[chunk]), list(responses[chunk]),
                                             normalized=self.normalized, **kwargs)
                out.append((len(prompts[chunk]), raw))
        return out


class FunctionReward:
    """Scores with a Python callable ``f(prompts, responses) -> scores``."""

    def __init__(self, function: Callable[[list[str], list[str]], Any], name: str) -> None:
        self.function = function
        self.name = name

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Call the function and check the shape of what it returned."""
        return _as_scores(self.function(list(prompts), list(responses)), len(prompts), self.name)


def _import_from_cwd(module_name: str) -> Any:
    """Import a dotted module, also from the working directory (as ``python -m`` would): the
    ``rlhfkit`` console script does not put it on ``sys.path``, so ``mypkg.rewards`` next to you would not load."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = str(Path.cwd())
        top = module_name.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def _import_file(spec: str, file_name: str) -> Any:
    """Import a .py file as ``python file.py`` would: its folder goes first on ``sys.path`` (and
    stays, for imports inside the function), so modules beside it import; a missing one is named."""
    path = Path(file_name).expanduser().resolve()
    if not path.is_file():
        raise RewardError(f"reward function {spec!r}: file {path} does not exist")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
        importlib.invalidate_caches()
    unit = importlib.util.spec_from_file_location(f"rlhfkit_reward_{path.stem}", path)
    assert unit is not None and unit.loader is not None
    module = importlib.util.module_from_spec(unit)
    sys.modules[unit.name] = module
    try:
        unit.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        sys.modules.pop(unit.name, None)
        raise RewardError(f"reward function {spec!r}: {path} imports {exc.name!r}, which is neither "
                          f"installed nor a module in {folder}") from exc
    except BaseException:
        sys.modules.pop(unit.name, None)
        raise
    return module


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (a dotted module, importable or in the working directory, or a path
    to a .py file, before the colon)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise RewardError(f"reward function {spec!r} must look like module:function or path/file.py:function")
    try:
        module = _import_file(spec, module_name) if module_name.endswith(".py") else _import_from_cwd(module_name)
    except ImportError as exc:
        raise RewardError(f"reward function {spec!r}: cannot import {module_name!r} ({exc})") from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise RewardError(f"reward function {spec!r}: {module_name!r} has no callable named {attr!r}")
    return function


def mixture_mean_std(heads: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over all heads of all members, each member weighing the same: [(b, H_s)] -> (b,), (b,).

    Member s of S has weight 1/S, shared equally by its H_s heads: w_sh = 1 / (S * H_s), and
    mu = sum_sh w_sh r_sh,  sigma^2 = sum_sh w_sh (r_sh - mu)^2.
    With equal head counts this is the plain mean and population std over all heads; with one
    head per member, the mean and std over members.
    """
    values = torch.cat([h.float() for h in heads], dim=-1)
    weights = torch.cat([torch.full((h.shape[-1],), 1.0 / (len(heads) * h.shape[-1])) for h in heads])
    mean = values @ weights
    variance = ((values - mean.unsqueeze(-1)) ** 2) @ weights
    return mean, variance.clamp_min(0.0).sqrt()


def member_heads(member: RewardSource, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
    """A source's per-head scores (b, H): its ``heads`` method when it has one, else its scores as (b, 1)."""
    heads = getattr(member, "heads", None)
    return heads(prompts, responses) if callable(heads) else member(prompts, responses).unsqueeze(-1)


class EnsembleReward:
    """Mean of several sources over all their heads; the std across heads is reported and optionally subtracted.

    score = mu - uncertainty_coef * sigma, with mu and sigma the mean and std over every head of
    every member (:func:`mixture_mean_std`), so one k-head reward model is an ensemble of k. This is
    the ensemble lower bound ("uncertainty-weighted optimization") of Coste et al. 2023, "Reward Model
    Ensembles Help Mitigate Overoptimization": responses the heads disagree on earn less.
    """

    def __init__(self, members: Sequence[RewardSource], uncertainty_coef: float = 0.0) -> None:
        if not members:
            raise RewardError("an ensemble needs at least one reward source")
        self.members = list(members)
        self.uncertainty_coef = uncertainty_coef
        self.name = "ensemble(" + ", ".join(m.name for m in self.members) + ")"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> RewardOutput:
        """Penalised mean and the std over all heads of all members, each (b,)."""
        mean, std = mixture_mean_std([member_heads(m, prompts, responses) for m in self.members])
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
        from rlhfkit.models.gelu import fuse_gelu

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
