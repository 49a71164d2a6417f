"""Policy optimization of a round: any trainer of ``rlhfkit.rl`` against the round's reward model,
built and run by :mod:`rlhfkit.rl.runner` exactly as the CLI does (this module only fills in the config).

The trainer runs in ``rounds/round-XXX/policy`` with its own checkpoints: a restart resumes from
the newest one and finishes the remaining steps. Each step's metrics go to the stage's Tracker
(TensorBoard) and, shifted by the steps of earlier rounds, to the loop's timeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from rlhfkit.loop.config import LoopConfig
from rlhfkit.rl.config import DPOConfig, OnPolicyConfig
from rlhfkit.tasks.base import Task

StepHook = Callable[[int, Mapping[str, float]], None]


class MetricSink(Protocol):
    """What a trainer logs to (a Tracker)."""

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...


class OffsetTee:
    """Logs each record to the stage tracker at its own step and to the timeline at ``offset + step``."""

    def __init__(self, stage: MetricSink, timeline: MetricSink | None, offset: int) -> None:
        self.stage, self.timeline, self.offset = stage, timeline, offset

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` in both places."""
        self.stage.log(metrics, step=step)
        if self.timeline is not None:
            self.timeline.log(metrics, step=self.offset + step)


def trainer_config(config: LoopConfig, policy: str, output_dir: Path, reward_model: Path, round_index: int,
                   feedback: Path | None = None) -> OnPolicyConfig | DPOConfig:
    """The chosen algorithm's config with the loop's model, output, seed, sampler and reward model (or DPO data).

    ``reward.uncertainty_coef`` applies across all heads of the reward model (``rlhfkit.rl.rewards.EnsembleReward``).
    DPO trains on ``feedback`` (the round's aggregated records) and gets its step count fixed here.
    """
    algorithm = config.policy.algorithm
    base = {"ppo": config.policy.ppo, "dpo": config.policy.dpo}.get(algorithm, config.policy.group)
    run = dataclasses.replace(base.run, model=policy, output_dir=str(output_dir), seed=config.seed + 1000 * round_index,
                              device=config.device, threads=config.threads, progress=False)
    if isinstance(base, DPOConfig):
        if feedback is None:
            raise ValueError("DPO in the loop needs the round's feedback records")
        from rlhfkit.rl.preference_pairs import dpo_total_steps, read_preference_pairs

        n_pairs = len(read_preference_pairs(str(feedback)).pairs) if not run.steps else 0
        steps = dpo_total_steps(run.steps, base.epochs, base.batch_size, n_pairs)
        return dataclasses.replace(base, run=dataclasses.replace(run, steps=steps), data=str(feedback))
    reward = dataclasses.replace(base.reward, models=[str(reward_model), *base.reward.models])
    generation = dataclasses.replace(base.generation, backend=config.sampler)
    return dataclasses.replace(base, run=run, reward=reward, generation=generation, algo=algorithm)


def optimize_policy(config: LoopConfig, task: Task, base_model: str, policy: str, reward_model: Path,
                    prompts: list[str], output_dir: Path, round_index: int, timeline: MetricSink | None,
                    step_offset: int, on_step: StepHook | None = None,
                    feedback: Path | None = None) -> tuple[Path, int]:
    """Train the policy for this round through the CLI's runner (resuming from its checkpoints).

    Returns the final policy dir and the steps. The reference (KL anchor) is the base policy: a frozen
    copy, or the adapters switched off with LoRA.
    """
    from rlhfkit.rl.rewards import FunctionReward
    from rlhfkit.rl.runner import train_dpo, train_on_policy
    from rlhfkit.utils.tracking import Tracker

    cfg = trainer_config(config, policy, output_dir, reward_model, round_index, feedback)
    reference = None if cfg.run.lora is not None or policy == base_model else base_model
    stage = Tracker(output_dir, report_to=config.report_to, config=dataclasses.asdict(cfg))
    try:
        tee = OffsetTee(stage, timeline, step_offset)
        if isinstance(cfg, DPOConfig):
            result = train_dpo(cfg, resume=True, tracker=tee, reference=reference, on_step=on_step, quiet=True)
        else:
            gold = FunctionReward(task.gold_fn, f"gold:{task.name}") if task.gold_fn is not None else None
            result = train_on_policy(cfg, resume=True, prompts=prompts, gold=gold, tracker=tee, reference=reference,
                                     on_step=on_step)
    finally:
        stage.close()
    return _final_policy(output_dir), result.steps


def _final_policy(output_dir: Path) -> Path:
    """The trainer's saved final model (an error when non-finite weights kept it from being written)."""
    final = output_dir / "final"
    if not (final / "config.json").is_file() and not (final / "adapter_config.json").is_file():
        raise RuntimeError(f"{output_dir}: the policy trainer wrote no final model (non-finite weights?); "
                           "see its log and checkpoints")
    return final
