"""Assemble and run a trainer from its config: runtime, models, reward, prompts, tracker, resume.

The CLI commands are thin wrappers over these functions; the loop (issue 7) calls them too.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlhfkit.rl.config import DPOConfig, PolicyGradientConfig, PPOConfig, RewardConfig, RunConfig

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


def _runtime(run: RunConfig) -> tuple[Any, Any]:
    import transformers

    from rlhfkit.utils.runtime import configure_threads, pick_device, pick_dtype, seed_everything

    transformers.utils.logging.disable_progress_bar()
    configure_threads(run.threads)
    seed_everything(run.seed)
    device = pick_device(run.device)
    return device, pick_dtype(device, run.dtype)


def _prompts(run: RunConfig) -> list[str]:
    from rlhfkit.rl.prompts import DEFAULT_PROMPTS, read_prompts

    return read_prompts(run.prompts) if run.prompts else list(DEFAULT_PROMPTS)


def _bundle(run: RunConfig, value: Literal["none", "head", "critic"], device: Any, dtype: Any,
            critic: str | None = None) -> Any:
    from rlhfkit.models.loading import load_policy_bundle
    from rlhfkit.models.lora import LoraSettings

    lora = LoraSettings(**dataclasses.asdict(run.lora)) if run.lora is not None else None
    return load_policy_bundle(run.model, lora=lora, value=value, device=device, dtype=dtype, critic=critic)


def _reward(config: RewardConfig, device: Any, fused_gelu: bool) -> tuple[Any, Any]:
    from rlhfkit.rl.rewards import FunctionReward, build_reward, load_function

    reward = build_reward(config.models, config.functions, config.normalized, config.uncertainty_coef, device,
                          fused_gelu)
    gold = FunctionReward(load_function(config.gold_function), config.gold_function) if config.gold_function else None
    return reward, gold


def _tracker(run: RunConfig, report_to: str, config: Any) -> Any:
    from rlhfkit.config import config_to_dict
    from rlhfkit.utils.tracking import Tracker

    return Tracker(run.output_dir, report_to=report_to, config=config_to_dict(config))


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


def train_ppo(config: PPOConfig, report_to: str = "tensorboard", resume: str | bool | None = None) -> TrainResult:
    """Load everything named in ``config`` and run PPO (resuming when asked)."""
    from rlhfkit.rl.ppo import PPOTrainer
    from rlhfkit.rl.rollout import make_sampler

    config = with_output_dir(config, "ppo")
    device, dtype = _runtime(config.run)
    reward, gold = _reward(config.reward, device, config.run.fused_gelu)
    bundle = _bundle(config.run, config.value_model, device, dtype, config.critic_model)
    with _tracker(config.run, report_to, config) as tracker:
        trainer = PPOTrainer(config, bundle, reward, _prompts(config.run), make_sampler(config.generation.backend),
                             tracker, gold)
        resumed = _resume_point(trainer.harness.resume, resume, config.run.output_dir)
        history = trainer.train()
    return _finish(config.run.output_dir, trainer.harness.step, resumed, history)


def train_policy_gradient(config: PolicyGradientConfig, report_to: str = "tensorboard",
                          resume: str | bool | None = None) -> TrainResult:
    """Load everything named in ``config`` and run GRPO / RLOO / REINFORCE."""
    from rlhfkit.rl.policy_gradient import PolicyGradientTrainer
    from rlhfkit.rl.rollout import make_sampler

    config = with_output_dir(config, config.algo)
    device, dtype = _runtime(config.run)
    reward, gold = _reward(config.reward, device, config.run.fused_gelu)
    bundle = _bundle(config.run, "none", device, dtype)
    with _tracker(config.run, report_to, config) as tracker:
        trainer = PolicyGradientTrainer(config, bundle, reward, _prompts(config.run),
                                        make_sampler(config.generation.backend), tracker, gold)
        resumed = _resume_point(trainer.harness.resume, resume, config.run.output_dir)
        history = trainer.train()
    return _finish(config.run.output_dir, trainer.harness.step, resumed, history)


def train_dpo(config: DPOConfig, report_to: str = "tensorboard", resume: str | bool | None = None) -> TrainResult:
    """Read preference pairs from ``config.data`` and run DPO / IPO."""
    from rlhfkit.rl.dpo import DPOTrainer
    from rlhfkit.rl.preference_pairs import read_preference_pairs
    from rlhfkit.utils.progress import console

    config = with_output_dir(config, config.loss_type if config.loss_type == "ipo" else "dpo")
    if not config.data:
        raise ValueError("DPO needs preference data: pass --data FILE (pairwise/ranking JSONL, TRL formats, ...)")
    data = read_preference_pairs(config.data)
    console.print("\n".join(data.report.lines()))
    pairs = data.pairs
    if data.unused:
        console.print(f"{config.data}: {data.unused} record(s) carry no strict preference (ties, ratings, labels) "
                      f"and are not used; {len(pairs)} pairs remain")
    device, dtype = _runtime(config.run)
    bundle = _bundle(config.run, "none", device, dtype)
    with _tracker(config.run, report_to, config) as tracker:
        trainer = DPOTrainer(config, bundle, pairs, tracker)
        resumed = _resume_point(trainer.resume, resume, config.run.output_dir)
        history = trainer.train()
    return _finish(config.run.output_dir, trainer.step, resumed, history)
