"""State and bookkeeping every on-policy trainer shares: optimizer, scheduler, KL controller,
RNG streams, data position, skip guard, checkpoints with exact resume, logging, the step loop.

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
from rlhfkit.rl.config import GenerationConfig, KLConfig, OptimConfig, RunConfig
from rlhfkit.rl.guard import SkipGuard
from rlhfkit.rl.kl import make_kl_controller
from rlhfkit.rl.prompts import PromptStream
from rlhfkit.rl.rollout import SamplingParams
from rlhfkit.rl.running_moments import RunningMoments
from rlhfkit.rl.speedups import fuse_gelu
from rlhfkit.rl.timers import PhaseTimer
from rlhfkit.rl.update import OptimizerStep, make_optimizer, make_scheduler
from rlhfkit.utils.checkpoint import all_finite, capture_rng_state, restore_rng_state
from rlhfkit.utils.tracking import Tracker

logger = logging.getLogger(__name__)


def fuse_bundle_gelu(bundle: PolicyBundle) -> None:
    """Fused GELU in the policy, the frozen reference and the value model (see rl.speedups)."""
    for module in (bundle.policy, bundle.frozen_reference, bundle.value_model):
        if module is not None:
            fuse_gelu(module)


def sampling_params(config: GenerationConfig) -> SamplingParams:
    """The rollout backend's parameters from the trainer's generation config."""
    return SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                          top_k=config.top_k, top_p=config.top_p, stop_strings=list(config.stop_strings),
                          min_new_tokens=config.min_new_tokens)


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


class Harness:
    """Optimizer, scheduler, KL controller, counters and checkpoints around one PolicyBundle."""

    def __init__(self, run: RunConfig, optim: OptimConfig, kl: KLConfig, bundle: PolicyBundle,
                 prompts: list[str], optimizer_steps_per_step: int, config: Any,
                 tracker: Tracker | None = None) -> None:
        self.run = run
        self.bundle = bundle
        self.config = config
        self.tracker = tracker
        if run.fused_gelu:
            fuse_bundle_gelu(bundle)
        self.params = bundle.trainable_parameters()
        self.optimizer = make_optimizer(self.params, optim)
        self.scheduler = make_scheduler(self.optimizer, optim, run.steps * optimizer_steps_per_step)
        self.guard = SkipGuard(run.max_consecutive_skips)
        self.optimizer_step = OptimizerStep(self.params, self.optimizer, self.scheduler, optim.max_grad_norm, self.guard)
        self.kl_controller = make_kl_controller(kl.coef, kl.target, kl.horizon)
        self.moments = RunningMoments()
        self.stream = PromptStream(prompts, seed=run.seed)
        device = next(bundle.policy.parameters()).device
        self.sample_generator = torch.Generator(device=device).manual_seed(run.seed)
        self.shuffle_generator = torch.Generator().manual_seed(run.seed + 1)
        self.timer = PhaseTimer()
        self.step = 0
        if not run.output_dir:
            raise ValueError("run.output_dir is not set: where should checkpoints and the final model go?")
        self.output_dir = Path(run.output_dir)

    def state_dict(self) -> dict[str, Any]:
        """Everything besides module weights needed to continue bit-for-bit."""
        return {
            "step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "kl_controller": self.kl_controller.state_dict(), "moments": self.moments.state_dict(),
            "guard": self.guard.state_dict(), "data": self.stream.state_dict(), "rng": capture_rng_state(),
            "sample_generator": self.sample_generator.get_state(),
            "shuffle_generator": self.shuffle_generator.get_state(),
        }

    def save(self) -> Path | None:
        """Checkpoint the current step (skipped, with an error log, if any weight is non-finite)."""
        return save_checkpoint(self.output_dir, self.step, checkpoint_modules(self.bundle), self.state_dict(),
                               keep=self.run.keep_checkpoints)

    def resume(self, path: str | Path) -> None:
        """Restore weights and state from a checkpoint directory."""
        state = load_checkpoint(path, checkpoint_modules(self.bundle))
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["moments"])
        self.guard.load_state_dict(state["guard"])
        self.stream.load_state_dict(state["data"])
        restore_rng_state(state["rng"])
        self.sample_generator.set_state(state["sample_generator"])
        self.shuffle_generator.set_state(state["shuffle_generator"])
        logger.info("resumed from %s at step %d", path, self.step)

    def log(self, metrics: dict[str, float]) -> dict[str, float]:
        """Add lr, skip counter and phase times to ``metrics``, send them to the tracker, return them."""
        metrics = {**metrics, **self.timer.pop(), "optim/lr": self.scheduler.get_last_lr()[0],
                   "train/skipped_updates": float(self.guard.total), "kl/coef": self.kl_controller.value}
        if self.tracker is not None and self.step % max(1, self.run.log_every) == 0:
            self.tracker.log(metrics, step=self.step)
        return metrics

    def save_final(self) -> Path | None:
        """Save the trained policy (and value model) with save_pretrained under ``final/``."""
        modules = checkpoint_modules(self.bundle)
        if not all(all_finite(m) for m in modules.values()):
            logger.error("final weights are not finite; keeping only the last finite checkpoint")
            return None
        return self.bundle.save_pretrained(self.output_dir / "final")

    def config_dict(self) -> dict[str, Any]:
        """The trainer config as a plain dict (written next to the metrics)."""
        return config_to_dict(self.config)


PROGRESS_METRICS = (("reward", "reward/mean"), ("kl", "kl/mean"), ("loss", "loss/dpo"), ("acc", "rewards/accuracy"))


class Loop(Protocol):
    """What :func:`run_loop` needs: run settings, a step counter, logging and saving."""

    run: RunConfig
    step: int

    def log(self, metrics: dict[str, float]) -> dict[str, float]: ...

    def save(self) -> Path | None: ...

    def save_final(self) -> Path | None: ...


def run_loop(harness: Loop, train_step: Callable[[], dict[str, float]], description: str) -> list[dict[str, float]]:
    """Call ``train_step`` until ``run.steps``, logging, checkpointing and showing progress."""
    from rlhfkit.utils.progress import make_progress

    run = harness.run
    history: list[dict[str, float]] = []
    with make_progress(disable=not run.progress) as progress:
        task = progress.add_task(description, total=run.steps, completed=harness.step, info="")
        while harness.step < run.steps:
            metrics = train_step()
            harness.step += 1
            history.append(harness.log(metrics))
            shown = [(name, metrics[key]) for name, key in PROGRESS_METRICS if key in metrics]
            progress.update(task, advance=1, info=" ".join(f"{name} {value:.3f}" for name, value in shown))
            last = harness.step == run.steps
            if (run.save_every and harness.step % run.save_every == 0) or last:
                harness.save()
    harness.save_final()
    return history
