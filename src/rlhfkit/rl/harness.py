"""State and bookkeeping every trainer shares: optimizer, scheduler, skip guard, registered state
(KL controller, RNG streams, data position, ...), checkpoints with exact resume, logging, the step loop.

Trainers own a :class:`Harness` (composition) and supply only their ``train_step``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from rlhfkit.config import config_to_dict
from rlhfkit.models.loading import PolicyBundle
from rlhfkit.models.value import CriticModel, PolicyWithValueHead
from rlhfkit.rl.checkpointing import load_checkpoint, save_checkpoint
from rlhfkit.rl.config import OptimConfig, RunConfig
from rlhfkit.rl.guard import SkipGuard
from rlhfkit.models.gelu import fuse_gelu
from rlhfkit.rl.timers import PhaseTimer
from rlhfkit.rl.update import OptimizerStep, make_optimizer, make_scheduler
from rlhfkit.utils.checkpoint import all_finite, capture_rng_state, restore_rng_state
from rlhfkit.utils.distributed import barrier, current_world
from rlhfkit.utils.tracking import Tracker

logger = logging.getLogger(__name__)


def fuse_bundle_gelu(bundle: PolicyBundle) -> None:
    """Fused GELU in the policy, the frozen reference and the value model (see models.gelu)."""
    for module in (bundle.policy, bundle.frozen_reference, bundle.value_model):
        if module is not None:
            fuse_gelu(module)


def checkpoint_modules(bundle: PolicyBundle) -> dict[str, nn.Module]:
    """What a checkpoint stores: the policy, and the value head or critic (never the frozen reference)."""
    modules: dict[str, nn.Module] = {"policy": bundle.policy}
    if isinstance(bundle.value_model, PolicyWithValueHead):
        modules["value_head"] = bundle.value_model.value_head
    elif isinstance(bundle.value_model, CriticModel):
        modules["critic"] = bundle.value_model
    return modules


NEGATIVE_KL_TOLERANCE = 1e-2


def warn_negative_kl(kl_mean: float, step: int) -> bool:
    """Warn when the batch-mean sequence KL estimate is clearly negative (< -0.01 nats).

    The true KL is >= 0; a negative mean points at samples not drawn from the scored policy
    (top-k/top-p filtering, a temperature mismatch, a reference that is not the start policy) or
    at k1 noise on tiny batches. Float noise around 0 when policy == reference is not reported.
    """
    if kl_mean < -NEGATIVE_KL_TOLERANCE:
        logger.warning("step %d: mean KL estimate %.4g is negative; check that sampling and scoring use the "
                       "same temperature and unfiltered distribution (top_k/top_p bias the estimate), or use "
                       "the k3 estimator", step, kl_mean)
        return True
    return False


class Stateful(Protocol):
    """Anything whose state a checkpoint keeps: KL controller, running moments, prompt stream, ..."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class GeneratorState:
    """A torch.Generator as a :class:`Stateful`."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        """The generator's state tensor."""
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the generator from a saved state."""
        self.generator.set_state(state["state"])


class Harness:
    """Optimizer, scheduler, skip guard, step counter, logging and checkpoints around one PolicyBundle.

    Every trainer (the on-policy trainer and DPO) owns one; what else it must save to resume
    bit-for-bit it registers with :meth:`register`. Under several processes only the main one
    writes (checkpoints, tracker, final model) while the others wait; every process resumes from
    the same checkpoint (the global RNG state saved is the main process's: all processes seed it
    alike and draw from it alike, so it is theirs too).
    """

    def __init__(self, run: RunConfig, optim: OptimConfig, bundle: PolicyBundle, total_optimizer_steps: int,
                 config: Any, tracker: Tracker | None = None) -> None:
        self.run = run
        self.bundle = bundle
        self.config = config
        self.tracker = tracker
        if run.fused_gelu:
            fuse_bundle_gelu(bundle)
        self.params = bundle.trainable_parameters()
        self.optimizer = make_optimizer(self.params, optim)
        self.scheduler = make_scheduler(self.optimizer, optim, total_optimizer_steps)
        self.guard = SkipGuard(run.max_consecutive_skips)
        self.optimizer_step = OptimizerStep(self.params, self.optimizer, self.scheduler, optim.max_grad_norm, self.guard)
        self.timer = PhaseTimer()
        self.world = current_world()
        self.step = 0
        self.stateful: dict[str, Stateful] = {}
        self.log_extras: list[Callable[[], dict[str, float]]] = []
        if not run.output_dir:
            raise ValueError("run.output_dir is not set: where should checkpoints and the final model go?")
        self.output_dir = Path(run.output_dir)

    def register(self, name: str, state: Stateful) -> None:
        """Save and restore ``state`` with every checkpoint under ``name``."""
        self.stateful[name] = state

    def state_dict(self) -> dict[str, Any]:
        """Everything besides module weights needed to continue bit-for-bit."""
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "guard": self.guard.state_dict(), "rng": capture_rng_state(),
                **{name: state.state_dict() for name, state in self.stateful.items()}}

    def save(self) -> Path | None:
        """Checkpoint the current step (skipped, with an error log, if any weight is non-finite).

        Only the main process writes; every process returns once the checkpoint is on disk.
        """
        path = None
        if self.world.is_main:
            path = save_checkpoint(self.output_dir, self.step, checkpoint_modules(self.bundle), self.state_dict(),
                                   keep=self.run.keep_checkpoints)
        barrier()
        return path

    def resume(self, path: str | Path) -> None:
        """Restore weights and state from a checkpoint directory."""
        state = load_checkpoint(path, checkpoint_modules(self.bundle))
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.guard.load_state_dict(state["guard"])
        for name, stateful in self.stateful.items():
            stateful.load_state_dict(state[name])
        restore_rng_state(state["rng"])
        logger.info("resumed from %s at step %d", path, self.step)

    def current_lr(self) -> float:
        """The learning rate the next optimizer step will use."""
        return float(self.scheduler.get_last_lr()[0])

    def log(self, metrics: dict[str, float], lr: float | None = None) -> dict[str, float]:
        """Add the step's learning rate (``lr``, read before it ran), the skip counter, phase times and registered
        extras to ``metrics``; send them to the tracker."""
        metrics = {**metrics, **self.timer.pop(), "optim/lr": self.current_lr() if lr is None else lr,
                   "train/skipped_steps": float(self.guard.total)}
        for extra in self.log_extras:
            metrics.update(extra())
        if self.tracker is not None and self.world.is_main and self.step % max(1, self.run.log_every) == 0:
            self.tracker.log(metrics, step=self.step)
        return metrics

    def save_final(self) -> Path | None:
        """Save the trained policy (and value model) with save_pretrained under ``final/`` (main process only)."""
        modules = checkpoint_modules(self.bundle)
        if not all(all_finite(m) for m in modules.values()):
            logger.error("final weights are not finite; keeping only the last finite checkpoint")
            return None
        path = self.bundle.save_pretrained(self.output_dir / "final") if self.world.is_main else None
        barrier()
        return path

    def config_dict(self) -> dict[str, Any]:
        """The trainer config as a plain dict (written next to the metrics)."""
        return config_to_dict(self.config)


PROGRESS_METRICS = (("reward", "reward/mean"), ("kl", "kl/mean"), ("loss", "loss/dpo"), ("acc", "rewards/accuracy"))


StepHook = Callable[[int, dict[str, float]], None]


def run_loop(harness: Harness, train_step: Callable[[], dict[str, float]], description: str,
             on_step: StepHook | None = None) -> list[dict[str, float]]:
    """Call ``train_step`` until ``run.steps``, logging, checkpointing and showing progress.

    ``on_step(step, metrics)`` sees each finished step's logged metrics (the loop's timeline uses it).
    """
    from rlhfkit.utils.progress import make_progress

    run = harness.run
    history: list[dict[str, float]] = []
    with make_progress(disable=not run.progress or not harness.world.is_main) as progress:
        task = progress.add_task(description, total=run.steps, completed=harness.step, info="")
        while harness.step < run.steps:
            lr = harness.current_lr()
            metrics = train_step()
            harness.step += 1
            logged = harness.log(metrics, lr)
            history.append(logged)
            if on_step is not None:
                on_step(harness.step, logged)
            shown = [(name, metrics[key]) for name, key in PROGRESS_METRICS if key in metrics]
            progress.update(task, advance=1, info=" ".join(f"{name} {value:.3f}" for name, value in shown))
            last = harness.step == run.steps
            if (run.save_every and harness.step % run.save_every == 0) or last:
                harness.save()
    harness.save_final()
    return history
