"""The reward-model training loop: micro-batches, gradient accumulation, checkpoints with exact resume.

One optimizer step = ``optim.grad_accum`` micro-batches; every micro-batch scores all responses of its
records in one forward pass. Per-kind loss denominators are those of the whole step, so
``batch_size=8, optim.grad_accum=1`` and ``batch_size=2, optim.grad_accum=4`` follow the same trajectory.
The data order is a pure function of (seed, epoch), so a checkpoint needs only the step counter,
weights, optimizer, scheduler and RNG state to continue exactly where it stopped.

Under several processes (``torchrun``) ``batch_size`` stays the global batch: each process takes a
contiguous shard of every micro-batch, the loss denominators are those of the whole global step
(every process knows it), gradients are summed across processes before clipping and metrics are
global means, so N processes take the steps one process takes. Only the main process writes.
"""

from __future__ import annotations

import hashlib
import math
import time
from array import array
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfkit.models.reward_model import RewardModel
from rlhfkit.reward.batching import (Batch, EncodedRecord, batches_per_epoch, collate, epoch_batches,
                                     ordinal_levels, step_denominators)
from rlhfkit.reward.config import RewardTrainConfig
from rlhfkit.reward.losses import ordered_thresholds
from rlhfkit.reward.objective import batch_objective
from rlhfkit.reward.selection import EarlyStopping, check_interval
from rlhfkit.reward.sharding import check_batch_size, local_records
from rlhfkit.rl.update import SeparateLosses, halves_now
from rlhfkit.utils.checkpoint import (all_finite, atomic_write_dir, capture_rng_state, latest_checkpoint, load_state,
                                      prune_checkpoints, restore_rng_state, save_state)
from rlhfkit.utils.distributed import (World, align_gradients, all_reduce_gradients, barrier, broadcast_object,
                                       broadcast_parameters, current_world, sum_floats)
from rlhfkit.utils.progress import make_progress
from rlhfkit.utils.runtime import side_by_side
from rlhfkit.utils.tracking import Tracker

StepHook = Callable[[int, dict[str, float]], None]
TRAINER_STATE = "trainer_state.pt"


@dataclass
class TrainSummary:
    """What a finished (or resumed-and-finished) training run reports."""

    steps: int
    resumed_from: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    pairs: int = 0
    best_step: int | None = None
    heldout_losses: list[tuple[int, float]] = field(default_factory=list)



@dataclass
class ScoredPart:
    """Some records of a micro-batch: their batch, rewards, share of the step's loss and loss stats."""

    batch: Batch
    rewards: torch.Tensor
    loss: torch.Tensor
    stats: dict[str, float]


def _threshold_name(key: str) -> str:
    return "scale_" + key.replace(".", "p").replace(":", "_").replace("-", "m")


def _initial_thresholds(levels: int) -> torch.Tensor:
    """Raw parameters whose cut points are evenly spaced on [-1, 1] (inverse of ordered_thresholds)."""
    cuts = torch.linspace(-1.0, 1.0, levels - 1) if levels > 2 else torch.zeros(1)
    steps = cuts[1:] - cuts[:-1]
    return torch.cat([cuts[:1], torch.log(torch.expm1(steps))])


KINDS = ("pairwise", "ranking", "rating", "label")
#: Metrics that are means over a step: each is summed with its count on every process, then divided.
MEAN_STATS = (*(f"loss/{kind}" for kind in KINDS), "train/pairwise_accuracy", "train/reward_margin",
              "train/reward_mean")
#: Plain sums over the step and all processes.
SUM_STATS = ("loss/total", "count/tokens", "count/padded", "count/pairs", "count/sequences", "count/non_finite")


def stat_counts(batch: Batch, rewards: torch.Tensor) -> dict[str, float]:
    """How many values each mean statistic of :func:`batch_objective` averaged over in ``batch``."""
    heads = rewards.shape[-1]
    counts = {f"loss/{kind}": float(rows.shape[0] * heads) for kind, rows in batch.rows.items()}
    if batch.tie is not None:
        decided = float((~batch.tie).sum())
        counts["train/pairwise_accuracy"] = counts["train/reward_margin"] = decided
    counts["train/reward_mean"] = float(rewards.numel())
    return counts


def step_means(totals: dict[str, float]) -> dict[str, float]:
    """Global means from summed ``<key>`` and ``n:<key>`` totals; keys with no values are left out."""
    return {key: totals[key] / totals[f"n:{key}"] for key in MEAN_STATS if totals.get(f"n:{key}", 0.0) > 0}


TRAJECTORY_FIELDS = ("batch_size", "epochs", "max_steps", "optim", "seed", "group_by_length", "loss",
                     "early_stopping_fraction", "early_stopping_checks", "early_stopping_patience")


def data_fingerprint(records: Sequence[EncodedRecord], config: RewardTrainConfig | None = None) -> str:
    """Hash of the encoded training data and the settings that shape the training trajectory.

    A resume with a different fingerprint is refused: it could not continue the same run.
    """
    digest = hashlib.sha256()
    if config is not None:
        digest.update(repr([getattr(config, name) for name in TRAJECTORY_FIELDS]).encode())
    for record in records:
        digest.update(record.kind.encode())
        digest.update(array("d", [record.weight, record.margin, record.target, *record.head_weights]).tobytes())
        for seq in record.sequences:
            digest.update(array("q", seq).tobytes())
            digest.update(b"|")
    return digest.hexdigest()[:16]


class RewardTrainer:
    """Trains a :class:`RewardModel` on encoded records of any mix of kinds."""

    def __init__(self, model: RewardModel, config: RewardTrainConfig, train_set: Sequence[EncodedRecord],
                 *, tracker: Tracker | None = None, device: torch.device | str = "cpu",
                 autocast_dtype: torch.dtype | None = None,
                 evaluate: Callable[[], dict[str, float]] | None = None, world: World | None = None,
                 select: Callable[[], float] | None = None) -> None:
        if not train_set:
            raise ValueError("no training records")
        self.world = world or current_world()
        check_batch_size(config.batch_size, self.world)
        self.model = model.to(device)
        self.config = config
        self.train_set = list(train_set)
        self.tracker = tracker
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.evaluate = evaluate
        self.checkpoint_dir = Path(config.output_dir) / "checkpoints"
        self.thresholds = nn.ParameterDict()
        if config.loss.rating_loss == "ordinal":
            for record in self.train_set:
                if record.kind == "rating" and _threshold_name(record.scale_key) not in self.thresholds:
                    low, high = (float(x) for x in record.scale_key.split(":"))
                    raw = _initial_thresholds(ordinal_levels((low, high)))
                    self.thresholds[_threshold_name(record.scale_key)] = nn.Parameter(raw.to(self.device))
        self.batches_per_epoch = batches_per_epoch(len(self.train_set), config.batch_size)
        micro_total = config.epochs * self.batches_per_epoch
        self.total_steps = config.max_steps or math.ceil(micro_total / config.optim.grad_accum)
        broadcast_parameters([*self.model.parameters(), *self.thresholds.parameters()])
        self.optimizer = torch.optim.AdamW(self._param_groups(), **config.optim.adamw_kwargs({self.device.type}))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.fingerprint = data_fingerprint(self.train_set, config)
        steps_per_epoch = math.ceil(self.batches_per_epoch / config.optim.grad_accum)
        self.early_stopping = (EarlyStopping(select, check_interval(steps_per_epoch, config.early_stopping_checks),
                                             config.early_stopping_patience) if select is not None else None)
        self._epoch_cache: dict[int, list[list[int]]] = {}

    def _param_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices only; the reward head in groups of its own at ``head_lr`` when that is set
        (without it the parameters keep one order, on which gradient clipping's summed norm depends)."""
        decay, no_decay, head_decay, head_no_decay = [], [], [], []
        separate = self.config.head_lr is not None and self.model.head is not None
        head = {id(p) for p in self.model.head.parameters()} if separate else set()
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            plain = param.ndim < 2 or "norm" in name.lower() or "ln_" in name
            if id(param) in head:
                (head_no_decay if plain else head_decay).append(param)
            else:
                (no_decay if plain else decay).append(param)
        no_decay.extend(self.thresholds.parameters())
        optim = self.config.optim
        groups = [{"params": decay, "weight_decay": optim.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0},
                  {"params": head_decay, "weight_decay": optim.weight_decay, "lr": self.config.head_lr},
                  {"params": head_no_decay, "weight_decay": 0.0, "lr": self.config.head_lr}]
        return [g for g in groups if g["params"]]

    def _lr_factor(self, step: int) -> float:
        return self.config.optim.lr_factor(step, self.total_steps)

    def _micro_batch(self, global_index: int) -> list[EncodedRecord]:
        epoch, position = divmod(global_index, self.batches_per_epoch)
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: epoch_batches(self.train_set, self.config.batch_size, self.config.seed,
                                                      epoch, self.config.group_by_length)}
        return [self.train_set[i] for i in self._epoch_cache[epoch][position]]

    def _step_micro_batches(self, step: int) -> list[list[EncodedRecord]]:
        micro_total = self.config.epochs * self.batches_per_epoch
        start = step * self.config.optim.grad_accum
        stop = start + self.config.optim.grad_accum
        if not self.config.max_steps:
            stop = min(stop, micro_total)
        return [self._micro_batch(g) for g in range(start, stop)]

    def ordinal_cut_points(self) -> dict[str, list[float]]:
        """Current ordered thresholds per rating scale key (stored with the model for evaluation)."""
        return {key: ordered_thresholds(value).detach().cpu().tolist()
                for key, value in self.thresholds_by_key().items()}

    def thresholds_by_key(self) -> dict[str, torch.Tensor]:
        """The ordinal thresholds (raw parameters) of each rating scale in the training set."""
        return {key: self.thresholds[_threshold_name(key)] for key in
                {r.scale_key for r in self.train_set if r.kind == "rating"}
                if _threshold_name(key) in self.thresholds}

    def _part_loss(self, records: list[EncodedRecord], thresholds: dict[str, torch.Tensor],
                   denominators: Any) -> ScoredPart:
        """``records``' share of the step's loss (over the step's ``denominators``), with its batch and rewards."""
        batch = collate(records, self.model.pad_id).to(self.device)
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else nullcontext())
        with autocast:
            rewards = self.model(batch.input_ids, batch.attention_mask, batch.response_start, batch.likelihood)
        loss, stats = batch_objective(rewards.float(), batch, self.config.loss, thresholds, denominators)
        return ScoredPart(batch, rewards, loss, stats)

    def train_step(self) -> dict[str, float]:
        """One optimizer step over ``optim.grad_accum`` micro-batches (this process's shards); returns its metrics."""
        self.model.train()
        started = time.perf_counter()
        micro_batches = self._step_micro_batches(self.step)
        denominators = step_denominators([r for mb in micro_batches for r in mb], self.model.num_heads)
        thresholds = self.thresholds_by_key()
        totals = dict.fromkeys([*SUM_STATS, *MEAN_STATS, *(f"n:{key}" for key in MEAN_STATS)], 0.0)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        halves = not self.config.gradient_checkpointing and halves_now(self.config.row_halves, self.device,
                                                                        [self.model])
        for micro in micro_batches:
            shard = local_records(micro, self.world)
            if not shard:
                continue
            parts = [shard[:len(shard) // 2], shard[len(shard) // 2:]] if halves and len(shard) > 1 else [shard]
            scored = side_by_side([partial(self._part_loss, part, thresholds, denominators) for part in parts])
            if not all(torch.isfinite(part.loss) for part in scored):
                totals["count/non_finite"] += 1.0
                break
            losses = tuple(part.loss for part in scored if part.loss.requires_grad)
            if losses:
                SeparateLosses(losses, tuple(params)).backward()
            for part in scored:
                for key, count in stat_counts(part.batch, part.rewards).items():
                    if key in part.stats:
                        totals[key] += part.stats[key] * count
                        totals[f"n:{key}"] += count
                totals["loss/total"] += float(part.loss.detach())
                totals["count/tokens"] += float(part.batch.attention_mask.sum())
                totals["count/padded"] += float(part.batch.attention_mask.numel())
                totals["count/pairs"] += float(part.batch.num_pairs)
                totals["count/sequences"] += float(part.batch.input_ids.shape[0])
        totals = sum_floats(totals, self.device)
        if totals["count/non_finite"]:
            raise FloatingPointError(f"non-finite reward-model loss at step {self.step + 1}")
        align_gradients(params)
        all_reduce_gradients(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.optim.clip_threshold())
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        elapsed = time.perf_counter() - started
        tokens, padded = totals["count/tokens"], totals["count/padded"]
        metrics = {"loss/total": totals["loss/total"], **step_means(totals)}
        metrics.update({"grad/norm": float(grad_norm), "optim/lr": lr,
                        "perf/pairs_per_s": totals["count/pairs"] / elapsed,
                        "perf/sequences_per_s": totals["count/sequences"] / elapsed,
                        "perf/tokens_per_s": tokens / elapsed, "perf/padding_fraction": 1.0 - tokens / max(1.0, padded),
                        "time/step": elapsed, "count/pairs": totals["count/pairs"]})
        return metrics

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/checkpoint-<step>`` atomically (a loadable reward model + trainer state).

        The main process writes; the others wait for it (weights are the same on every process).
        """
        if not all_finite(self.model):
            raise FloatingPointError(f"refusing to checkpoint non-finite weights at step {self.step}")
        target = self.checkpoint_dir / f"checkpoint-{self.step}"
        if self.world.is_main:
            self._write_checkpoint()
        barrier()
        return target

    def _write_checkpoint(self) -> Path:
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": capture_rng_state(), "thresholds": {k: v.detach().cpu() for k, v in self.thresholds.items()},
                 "fingerprint": self.fingerprint, "total_steps": self.total_steps,
                 "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None}

        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp)
            save_state(tmp / TRAINER_STATE, state)

        target = atomic_write_dir(self.checkpoint_dir / f"checkpoint-{self.step}", write)
        prune_checkpoints(self.checkpoint_dir, self.config.keep_checkpoints)
        return target

    def load_checkpoint(self, directory: Path) -> None:
        """Restore weights, optimizer, scheduler, thresholds, RNG and step from ``directory``."""
        state = load_state(directory / TRAINER_STATE)
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(f"checkpoint {directory} was trained on different data or settings; "
                             "use a new output_dir or --set resume=false")
        saved = RewardModel.from_pretrained(directory)
        self.model.load_state_dict(saved.state_dict())
        for name in ("mean", "std", "head_mean", "head_std"):
            setattr(self.model.settings, name, getattr(saved.settings, name))
        for key, value in state["thresholds"].items():
            self.thresholds[key].data.copy_(value.to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        self.step = int(state["step"])
        if self.early_stopping is not None and state.get("early_stopping"):
            self.early_stopping.load_state_dict(state["early_stopping"])

    def train(self, on_step: StepHook | None = None) -> TrainSummary:
        """Run (or continue) training to ``total_steps``; checkpoint, log, evaluate on schedule."""
        resumed_from = 0
        latest = latest_checkpoint(self.checkpoint_dir) if self.config.resume else None
        latest = broadcast_object(latest)
        if latest is not None:
            self.load_checkpoint(latest)
            resumed_from = self.step
        started = time.perf_counter()
        metrics: dict[str, float] = {}
        pairs = 0
        with make_progress(disable=not (self.config.progress and self.world.is_main)) as progress:
            task = progress.add_task("train-rm", total=self.total_steps, completed=self.step, info="")
            while self.step < self.total_steps and not (self.early_stopping and self.early_stopping.stopped):
                metrics = self.train_step()
                pairs += int(metrics["count/pairs"])
                progress.update(task, completed=self.step,
                                info=f"loss {metrics['loss/total']:.4f}"
                                     + (f" acc {metrics['train/pairwise_accuracy']:.2f}"
                                        if "train/pairwise_accuracy" in metrics else ""))
                self._after_step(metrics)
                if on_step is not None:
                    on_step(self.step, metrics)
        best_step, history = None, []
        if self.early_stopping is not None:
            best_step, history = self.early_stopping.restore(self._weights()), list(self.early_stopping.history)
        return TrainSummary(self.step, resumed_from, metrics, time.perf_counter() - started, pairs, best_step, history)

    def _weights(self) -> dict[str, nn.Module]:
        return {"model": self.model, "thresholds": self.thresholds}

    def _after_step(self, metrics: dict[str, float]) -> None:
        last = self.step == self.total_steps
        logs = self.tracker is not None and self.world.is_main
        if logs and (last or self.step % max(1, self.config.log_every) == 0):
            self.tracker.log(metrics, self.step)
        if self.evaluate is not None and self.config.eval_every and self.step % self.config.eval_every == 0 and not last:
            results = self.evaluate()
            if logs:
                self.tracker.log(results, self.step)
        if self.early_stopping is not None:
            loss = self.early_stopping.check(self.step, self._weights(), last)
            if loss is not None and logs:
                self.tracker.log({"early_stopping/heldout_loss": loss}, self.step)
            last = last or self.early_stopping.stopped
        if (self.config.save_every and self.step % self.config.save_every == 0) or last:
            self.save_checkpoint()
