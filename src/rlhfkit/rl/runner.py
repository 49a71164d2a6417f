"""Assemble and run a trainer from its config: runtime, models, reward, prompts, tracker, resume.

The CLI commands are thin wrappers over these functions, and the loop's policy phase calls the same
ones: there is one assembly path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from rlhfkit.rl.config import DPOConfig, OnPolicyConfig, RewardConfig, RunConfig

StepHook = Callable[[int, dict[str, float]], None]


class MetricSink(Protocol):
    """Where a trainer logs (a Tracker, or the loop's stage-and-timeline tee)."""

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced: its directory, final model directory, steps done and last metrics."""

    output_dir: Path
    final_dir: Path | None
    steps: int
    resumed_from: Path | None
    last_metrics: dict[str, float]


def with_output_dir(config: Any, name: str) -> Any:
    """``config`` with ``run.output_dir`` set to ``runs/<name>`` when it was left unset."""
    if config.run.output_dir is not None:
        return config
    return dataclasses.replace(config, run=dataclasses.replace(config.run, output_dir=f"runs/{name}"))


def process_threads(requested: int | None, world_size: int) -> int | None:
    """Intra-op threads of one of ``world_size`` processes: the config's, else the machine's cores shared
    among the processes on this node (so they do not oversubscribe it); None = the single-process default."""
    if requested is not None or world_size == 1 or "RLHFKIT_THREADS" in os.environ:
        return requested
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return max(1, (os.cpu_count() or 1) // local)


def _runtime(run: RunConfig) -> tuple[Any, Any]:
    import transformers

    from rlhfkit.utils.distributed import current_world
    from rlhfkit.utils.runtime import configure_threads, pick_device, pick_dtype, seed_everything

    transformers.utils.logging.disable_progress_bar()
    configure_threads(process_threads(run.threads, current_world().world_size))
    seed_everything(run.seed)
    device = pick_device(run.device)
    return device, pick_dtype(device, run.dtype)


def _prompts(run: RunConfig) -> list[str]:
    from rlhfkit.rl.prompts import DEFAULT_PROMPTS, read_prompts

    return read_prompts(run.prompts) if run.prompts else list(DEFAULT_PROMPTS)


def _bundle(run: RunConfig, value: Literal["none", "head", "critic"], device: Any, dtype: Any,
            critic: str | None = None, reference: str | None = None) -> Any:
    """The policy bundle with float32 master weights for what is trained and the frozen models in ``dtype``.

    With LoRA the frozen base is loaded in ``dtype`` and peft keeps the adapters in float32.
    """
    import torch

    from rlhfkit.models.loading import load_policy_bundle

    from rlhfkit.utils.distributed import barrier, current_world

    trained_dtype = dtype if run.lora is not None else torch.float32
    main = current_world().is_main
    if not main:
        barrier()  # the main process loads first: it builds the built-in model if that is not cached yet
    bundle = load_policy_bundle(run.model, lora=run.lora, value=value, device=device, dtype=trained_dtype,
                                critic=critic, reference=reference)
    if main:
        barrier()
    if bundle.frozen_reference is not None:
        bundle.frozen_reference.to(dtype)
    return bundle


def _reward(config: RewardConfig, device: Any, fused_gelu: bool) -> tuple[Any, Any]:
    from rlhfkit.rl.rewards import FunctionReward, build_reward, load_function

    reward = build_reward(config.models, config.functions, config.normalized, config.uncertainty_coef, device,
                          fused_gelu)
    gold = FunctionReward(load_function(config.gold_function), config.gold_function) if config.gold_function else None
    return reward, gold


@contextlib.contextmanager
def _tracking(run: RunConfig, report_to: str, config: Any, tracker: MetricSink | None) -> Iterator[MetricSink]:
    """The caller's tracker, or a new one in the run directory (closed at the end); none on processes
    other than the main one, which alone writes logs."""
    from rlhfkit.utils.distributed import current_world

    if tracker is not None or not current_world().is_main:
        yield tracker  # type: ignore[misc]
        return
    from rlhfkit.config import config_to_dict
    from rlhfkit.utils.tracking import Tracker

    with Tracker(run.output_dir, report_to=report_to, config=config_to_dict(config)) as own:
        yield own


def _resume_point(trainer_resume: Any, resume: str | bool | None, output_dir: str) -> Path | None:
    from rlhfkit.rl.checkpointing import resolve_resume

    path = resolve_resume(resume, output_dir)
    if path is not None:
        trainer_resume(path)
    elif resume not in (None, False):
        logger.info("no checkpoint in %s: starting from scratch", output_dir)
    return path


def _finish(output_dir: str, steps: int, resumed: Path | None, history: list[dict[str, float]]) -> TrainResult:
    final = Path(output_dir) / "final"
    return TrainResult(Path(output_dir), final if final.is_dir() else None, steps, resumed,
                       history[-1] if history else {})


def train_on_policy(config: OnPolicyConfig, report_to: str = "tensorboard", resume: str | bool | None = None, *,
                    prompts: list[str] | None = None, gold: Any = None, tracker: MetricSink | None = None,
                    reference: str | None = None, on_step: StepHook | None = None) -> TrainResult:
    """Load everything named in ``config`` and run PPO / GRPO / RLOO / REINFORCE (resuming when asked).

    The loop passes its round's prompts, task gold, timeline tracker and the base policy as ``reference``
    (when the policy it starts from is not the base); the CLI passes none of them.
    """
    from rlhfkit.rl.algorithms import needs_value_model
    from rlhfkit.rl.onpolicy import OnPolicyTrainer
    from rlhfkit.rl.rollout import make_sampler

    config = with_output_dir(config, config.algo)
    device, dtype = _runtime(config.run)
    reward, configured_gold = _reward(config.reward, device, config.run.fused_gelu)
    value = config.value_model if needs_value_model(config.algo) else "none"
    bundle = _bundle(config.run, value, device, dtype, config.critic_model, reference)
    with _tracking(config.run, report_to, config, tracker) as sink:
        trainer = OnPolicyTrainer(config, bundle, reward, prompts if prompts is not None else _prompts(config.run),
                                  make_sampler(config.generation.backend), sink, gold or configured_gold)
        resumed = _resume_point(trainer.harness.resume, resume, config.run.output_dir)
        history = trainer.train(on_step)
    return _finish(config.run.output_dir, trainer.harness.step, resumed, history)


def train_dpo(config: DPOConfig, report_to: str = "tensorboard", resume: str | bool | None = None, *,
              tracker: MetricSink | None = None, reference: str | None = None,
              on_step: StepHook | None = None, quiet: bool = False) -> TrainResult:
    """Read preference pairs from ``config.data`` and run DPO / IPO (the loop passes its tracker and reference,
    and ``quiet`` to keep the data report off its live display)."""
    from rlhfkit.rl.dpo import DPOTrainer
    from rlhfkit.rl.preference_pairs import read_preference_pairs
    from rlhfkit.utils.progress import console

    config = with_output_dir(config, config.loss_type if config.loss_type == "ipo" else "dpo")
    if not config.data:
        raise ValueError("DPO needs preference data: pass --data FILE (pairwise/ranking JSONL, TRL formats, ...)")
    from rlhfkit.utils.distributed import current_world

    quiet = quiet or not current_world().is_main
    data = read_preference_pairs(config.data)
    if not quiet:
        console.print("\n".join(data.report.lines()))
    pairs = data.pairs
    if data.unused and not quiet:
        console.print(f"{config.data}: {data.unused} record(s) carry no strict preference (ties, ratings, labels) "
                      f"and are not used; {len(pairs)} pairs remain")
    device, dtype = _runtime(config.run)
    bundle = _bundle(config.run, "none", device, dtype, reference=reference)
    with _tracking(config.run, report_to, config, tracker) as sink:
        trainer = DPOTrainer(config, bundle, pairs, sink)
        resumed = _resume_point(trainer.harness.resume, resume, config.run.output_dir)
        history = trainer.train(on_step)
    return _finish(config.run.output_dir, trainer.harness.step, resumed, history)
