"""Policy optimization of a round: any trainer of ``rlhfkit.rl`` against the round's reward model.

The trainer runs in ``rounds/round-XXX/policy`` with its own checkpoints: a restart resumes from
the newest one and finishes the remaining steps. Each step's metrics go to the stage's Tracker
(TensorBoard) and, shifted by the steps of earlier rounds, to the loop's timeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from rlhfkit.loop.config import LoopConfig
from rlhfkit.rl.config import DPOConfig, PolicyGradientConfig, PPOConfig
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
                   feedback: Path | None = None) -> PPOConfig | PolicyGradientConfig | DPOConfig:
    """The chosen algorithm's config with the loop's model, output, seed and reward model (or DPO data) filled in.

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
    reward = dataclasses.replace(base.reward, models=[str(reward_model)], functions=[])
    if isinstance(base, PolicyGradientConfig):
        return dataclasses.replace(base, run=run, reward=reward, algo=algorithm)
    return dataclasses.replace(base, run=run, reward=reward)


def _train_dpo(cfg: DPOConfig, bundle: Any, tee: OffsetTee, output_dir: Path, on_step: StepHook | None) -> None:
    """DPO on the round's feedback against the base policy as reference, resuming from its checkpoints."""
    from rlhfkit.rl.checkpointing import resolve_resume
    from rlhfkit.rl.dpo import DPOTrainer
    from rlhfkit.rl.harness import run_loop
    from rlhfkit.rl.preference_pairs import read_preference_pairs

    pairs = read_preference_pairs(cfg.data).pairs
    trainer = DPOTrainer(cfg, bundle, pairs, tracker=tee)  # type: ignore[arg-type]
    latest = resolve_resume(True, output_dir)
    if latest is not None:
        trainer.resume(latest)
    trainer.precompute_reference()

    def step() -> dict[str, float]:
        metrics = trainer.train_step()
        if on_step is not None:
            on_step(trainer.step + 1, metrics)
        return metrics

    run_loop(trainer, step, cfg.loss_type)


def optimize_policy(config: LoopConfig, task: Task, base_model: str, policy: str, reward_model: Path,
                    prompts: list[str], output_dir: Path, round_index: int, timeline: MetricSink | None,
                    step_offset: int, on_step: StepHook | None = None,
                    feedback: Path | None = None) -> tuple[Path, int]:
    """Train the policy for this round (resuming from its checkpoints); returns the final policy dir and steps.

    The reference (KL anchor) is the base policy: a frozen copy, or the adapters switched off with LoRA.
    """
    from rlhfkit.models.loading import load_policy_bundle
    from rlhfkit.models.lora import LoraSettings
    from rlhfkit.rl.checkpointing import resolve_resume
    from rlhfkit.rl.harness import run_loop
    from rlhfkit.rl.policy_gradient import PolicyGradientTrainer
    from rlhfkit.rl.ppo import PPOTrainer
    from rlhfkit.rl.rewards import FunctionReward, build_reward
    from rlhfkit.rl.rollout import make_sampler
    from rlhfkit.utils.tracking import Tracker

    cfg = trainer_config(config, policy, output_dir, reward_model, round_index, feedback)
    run = cfg.run
    lora = LoraSettings(**dataclasses.asdict(run.lora)) if run.lora is not None else None
    is_ppo = isinstance(cfg, PPOConfig)
    value = cfg.value_model if is_ppo else "none"
    reference = None if run.lora is not None or policy == base_model else base_model
    bundle = load_policy_bundle(policy, lora=lora, value=value, device=run.device, dtype=run.dtype,
                                critic=getattr(cfg, "critic_model", None), reference=reference)
    stage = Tracker(output_dir, report_to=config.report_to, config=dataclasses.asdict(cfg))
    try:
        tee = OffsetTee(stage, timeline, step_offset)
        if isinstance(cfg, DPOConfig):
            _train_dpo(cfg, bundle, tee, output_dir, on_step)
            return _final_policy(output_dir), run.steps
        device = next(bundle.policy.parameters()).device
        reward = build_reward([str(reward_model)], normalized=cfg.reward.normalized,
                              uncertainty_coef=cfg.reward.uncertainty_coef, device=device)
        gold = FunctionReward(task.gold_fn, f"gold:{task.name}") if task.gold_fn is not None else None
        sampler = make_sampler(config.sampler)
        trainer: Any
        if is_ppo:
            trainer = PPOTrainer(cfg, bundle, reward, prompts, sampler, tracker=tee, gold=gold)  # type: ignore[arg-type]
        else:
            trainer = PolicyGradientTrainer(cfg, bundle, reward, prompts, sampler,  # type: ignore[arg-type]
                                            tracker=tee, gold=gold)
        latest = resolve_resume(True, output_dir)
        if latest is not None:
            trainer.harness.resume(latest)

        def step() -> dict[str, float]:
            metrics = trainer.train_step()
            if on_step is not None:
                on_step(trainer.harness.step + 1, metrics)
            return metrics

        run_loop(trainer.harness, step, config.policy.algorithm)
    finally:
        stage.close()
    return _final_policy(output_dir), run.steps


def _final_policy(output_dir: Path) -> Path:
    """The trainer's saved final model (an error when non-finite weights kept it from being written)."""
    final = output_dir / "final"
    if not (final / "config.json").is_file() and not (final / "adapter_config.json").is_file():
        raise RuntimeError(f"{output_dir}: the policy trainer wrote no final model (non-finite weights?); "
                           "see its log and checkpoints")
    return final
