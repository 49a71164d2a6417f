"""Early stopping on a held-out slice of the training data: which prompts to hold out, when to check,
which check to keep and when to stop.

The slice is cut by prompt (all records of a prompt on one side), so the held-out loss measures
generalization to new prompts, as the evaluation split does. The kept step is the one with the lowest
held-out loss: on ~200 pairs the loss (a proper score) is steadier than the accuracy.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from rlhfkit.reward.batching import EncodedRecord, collate, step_denominators
from rlhfkit.reward.config import RewardLossConfig
from rlhfkit.reward.objective import batch_objective

T = TypeVar("T")


def split_by_prompt(records: Sequence[T], prompts: Sequence[Any], fraction: float, seed: int
                    ) -> tuple[list[int], list[int]]:
    """Indices (kept, held out): ``round(fraction x distinct prompts)`` whole prompts held out at random.

    Nothing is held out when that rounds to 0 or would leave no prompt to train on.
    """
    if len(records) != len(prompts):
        raise ValueError(f"{len(records)} records but {len(prompts)} prompts")
    distinct = sorted(set(prompts), key=repr)
    held_count = round(fraction * len(distinct)) if fraction > 0 else 0
    if held_count < 1 or held_count >= len(distinct):
        return list(range(len(records))), []
    random.Random(seed).shuffle(distinct)
    held = set(distinct[:held_count])
    return ([i for i, p in enumerate(prompts) if p not in held], [i for i, p in enumerate(prompts) if p in held])


def check_interval(steps_per_epoch: int, checks_per_epoch: int) -> int:
    """Optimizer steps between held-out checks: ``checks_per_epoch`` evenly spread checks per epoch."""
    if checks_per_epoch < 1:
        raise ValueError(f"early_stopping_checks must be at least 1, got {checks_per_epoch}")
    return max(1, steps_per_epoch // checks_per_epoch)


def best_check(history: Sequence[tuple[int, float]]) -> tuple[int, float]:
    """(step, loss) of the lowest finite held-out loss; the earliest such step on ties."""
    finite = [(step, loss) for step, loss in history if math.isfinite(loss)]
    if not finite:
        raise ValueError("no finite held-out loss to select a step from")
    return min(finite, key=lambda item: (item[1], item[0]))


def patience_exhausted(history: Sequence[tuple[int, float]], patience: int) -> bool:
    """True when the last ``patience`` checks (``patience`` >= 1) all came after the best one."""
    if patience < 1 or len(history) <= patience:
        return False
    best_step, _ = best_check(history)
    return all(step > best_step for step, _ in history[-patience:])


def unit_head_weights(records: Sequence[EncodedRecord], num_heads: int) -> list[EncodedRecord]:
    """Copies of ``records`` weighing every head equally (held-out records take no bootstrap draw)."""
    return [dataclasses.replace(r, head_weights=(1.0,) * num_heads) for r in records]


@torch.no_grad()
def heldout_loss(model: Any, records: Sequence[EncodedRecord], loss: RewardLossConfig, batch_size: int,
                 device: torch.device, thresholds: Mapping[str, torch.Tensor] | None = None) -> float:
    """The training objective over all of ``records`` (one weighted mean, as if one step), without gradients."""
    return batches_loss(heldout_rewards(model, records, batch_size, device), loss, thresholds,
                        step_denominators(records, model.num_heads))


def heldout_rewards(model: Any, records: Sequence[EncodedRecord], batch_size: int, device: torch.device
                    ) -> list[tuple[Any, torch.Tensor]]:
    """Each batch of ``records`` with the model's float32 rewards for it (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(records), batch_size):
                batch = collate(records[start:start + batch_size], model.pad_id).to(device)
                out.append((batch, model(batch.input_ids, batch.attention_mask, batch.response_start,
                                         batch.likelihood).float()))
    finally:
        model.train(was_training)
    return out


def batches_loss(rewarded: Sequence[tuple[Any, torch.Tensor]], loss: RewardLossConfig,
                 thresholds: Mapping[str, torch.Tensor] | None, denominators: Any) -> float:
    """The objective summed over (batch, rewards) pairs with the step's ``denominators``."""
    return sum(float(batch_objective(rewards, batch, loss, thresholds, denominators)[0]) for batch, rewards in rewarded)


def rewards_and_slopes(model: Any, records: Sequence[EncodedRecord], batch_size: int, device: torch.device
                       ) -> list[tuple[Any, torch.Tensor, torch.Tensor]]:
    """(batch, rewards at likelihood weight 0, reward per nat of that weight) for each batch of ``records``,
    from two passes (a reward is linear in the weight); the head's weight is put back."""
    weight, gain = model.head.likelihood_weight, model.head.likelihood_gain
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.zero_()
        at_zero = heldout_rewards(model, records, batch_size, device)
        weight.fill_(1.0 / gain)
        at_one = heldout_rewards(model, records, batch_size, device)
        weight.copy_(kept)
    return [(batch, zero, one - zero) for (batch, zero), (_, one) in zip(at_zero, at_one)]


def likelihood_weight_loss(model: Any, records: Sequence[EncodedRecord], loss: RewardLossConfig, batch_size: int,
                           device: torch.device, thresholds: Mapping[str, torch.Tensor] | None = None
                           ) -> Callable[[float], float]:
    """The held-out loss as a function of the head's likelihood weight (reward per nat), from two forward
    passes: a reward is linear in that weight, so rewards at 0 and at 1 per nat give every other value."""
    slopes = rewards_and_slopes(model, records, batch_size, device)
    denominators = step_denominators(records, model.num_heads)

    def loss_at(per_nat: float) -> float:
        return batches_loss([(batch, zero + per_nat * slope) for batch, zero, slope in slopes], loss, thresholds,
                            denominators)

    return loss_at


COMPARING_KINDS = ("pairwise", "ranking")


def likelihood_alone_loss(model: Any, records: Sequence[EncodedRecord], loss: RewardLossConfig, batch_size: int,
                          device: torch.device) -> Callable[[float], float] | None:
    """The loss of rewards that are the likelihood alone times a weight (reward per nat), over the records
    whose loss compares responses (pairs, rankings; a shift-free score needs no pooled part to be judged):
    the likelihood calibrated by itself as a Bradley-Terry / Plackett-Luce score. None without such records.

    A frozen LM's scores ride on the records; the trunk's own likelihood takes two passes (weights 0 and 1 per
    nat: a reward is linear in the weight). The loss is summed in float64: it is flat near its minimum."""
    comparing = unit_head_weights([r for r in records if r.kind in COMPARING_KINDS], model.num_heads)
    if not comparing:
        return None
    if model.frozen_likelihood is not None:
        slopes = []
        for start in range(0, len(comparing), batch_size):
            batch = collate(comparing[start:start + batch_size], model.pad_id).to(device)
            slopes.append((batch, batch.likelihood.double()[:, None].expand(-1, model.num_heads)))
    else:
        slopes = [(batch, slope.double()) for batch, _, slope in rewards_and_slopes(model, comparing, batch_size,
                                                                                     device)]
    denominators = step_denominators(comparing, model.num_heads)

    def loss_at(per_nat: float) -> float:
        return batches_loss([(batch, per_nat * slope) for batch, slope in slopes], loss, None, denominators)

    return loss_at


def fit_likelihood_alone(head: Any, loss_at: Callable[[float], float], limit: float = 100.0) -> float:
    """Set every head's likelihood weight to the value (reward per nat, within +-``limit``) that minimizes
    ``loss_at`` (:func:`likelihood_alone_loss`, convex in it); returns that value.

    The pooled head trained without the likelihood and is calibrated by its own loss; this weight calibrates
    the likelihood the same way, alone, so the reward adds two independently calibrated log-odds. On real
    preferences a weight learned jointly landed anywhere from 0.19 to 0.95 per nat across folds of the same
    data (early stopping caught it mid-way) and a refit on the ~200-pair early-stopping slice stayed noisy;
    the likelihood's own fit sees every training pair and has one parameter. A likelihood that says nothing
    (a flat loss) gets 0; one that separates every pair runs to the bound, ``limit``."""
    per_nat, best = golden_section_minimum(loss_at, -limit, limit, evaluations=40)
    if loss_at(0.0) <= best:
        per_nat = 0.0
    with torch.no_grad():
        head.likelihood_weight.fill_(per_nat / head.likelihood_gain)
    return per_nat


def golden_section_minimum(function: Callable[[float], float], low: float, high: float,
                           evaluations: int = 24) -> tuple[float, float]:
    """(x, f(x)) of the lowest value seen by a golden-section search on [low, high]: the minimum of a
    convex (unimodal) ``function`` to within (high - low) * 0.618^(evaluations - 2)."""
    ratio = (5 ** 0.5 - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = function(c), function(d)
    seen = [(fc, c), (fd, d)]
    for _ in range(max(0, evaluations - 2)):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = function(c)
            seen.append((fc, c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = function(d)
            seen.append((fd, d))
    value, x = min(seen)
    return x, value


def refit_likelihood_weight(head: Any, loss_at: Callable[[float], float], limit: float = 10.0
                            ) -> tuple[float, float]:
    """Set a one-head reward head's likelihood weight to the value (reward per nat, within +-``limit``) that
    minimizes ``loss_at(per_nat)`` (the held-out loss, :func:`likelihood_weight_loss`), keeping the trained
    one if no value beats it.

    Jointly with the trunk, SGD leaves this one weight wherever early stopping caught it (0.19 to 0.95 per nat
    across folds of the same data); the held-out loss is convex in it, so a 1-D search finds its best value.
    Returns (before, after) in reward per nat.
    """
    weight, gain = head.likelihood_weight, head.likelihood_gain
    before = float(weight.detach()[0]) * gain
    trained_loss = loss_at(before)
    best, best_loss = golden_section_minimum(loss_at, -limit, limit)
    after = best if best_loss < trained_loss else before
    with torch.no_grad():
        weight.fill_(after / gain)
    return before, after


@dataclass
class EarlyStopping:
    """Held-out checks of one run and a CPU copy of the modules' weights at the best one.

    ``measure`` returns the held-out loss of the current weights; checks happen every ``every``
    steps and at the last step.
    """

    measure: Callable[[], float]
    every: int
    patience: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)
    best_state: dict[str, dict[str, torch.Tensor]] | None = None
    stopped: bool = False

    def check(self, step: int, modules: Mapping[str, nn.Module], last: bool) -> float | None:
        """Measure at ``step`` when due; remember the weights when it is the best so far. Returns the loss."""
        if not last and step % self.every:
            return None
        loss = self.measure()
        self.history.append((step, loss))
        if math.isfinite(loss) and best_check(self.history)[0] == step:
            self.best_state = {name: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
                               for name, module in modules.items()}
        self.stopped = patience_exhausted(self.history, self.patience)
        return loss

    def restore(self, modules: Mapping[str, nn.Module]) -> int | None:
        """Load the best check's weights into ``modules``; returns its step (None before any check)."""
        if self.best_state is None:
            return None
        for name, module in modules.items():
            module.load_state_dict(self.best_state[name])
        return best_check(self.history)[0]

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores to resume the checks."""
        return {"history": list(self.history), "best_state": self.best_state, "stopped": self.stopped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.history = [(int(s), float(v)) for s, v in state["history"]]
        self.best_state = state["best_state"]
        self.stopped = bool(state["stopped"])
