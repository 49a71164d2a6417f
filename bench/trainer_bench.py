"""What bench/ppo.py and bench/grpo.py share: their command-line options and the timed steps."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import rl_workload as wl  # (sets OMP_WAIT_POLICY before torch loads)


def parse_args(description: str) -> argparse.Namespace:
    """--steps, --threads, --backend, --baseline, --no-floor, --dtype and --set, the options of every trainer
    benchmark."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=3, help="Measured steps (after one warm-up step).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="cached", help="Rollout backend: hf, cached, cached-static.")
    parser.add_argument("--baseline", action="store_true",
                        help="Without the profile-driven speedups: gelu_new as 7 elementwise ops, foreach AdamW.")
    parser.add_argument("--no-floor", action="store_true", help="Skip timing the floor (bench/floor.py).")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="Compute dtype (run.dtype: forwards under autocast, float32 master weights); the floor "
                             "runs in the same one.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="A config override for an A/B run (repeatable), e.g. --set run.side_by_side=false.")
    return parser.parse_args()


def speedup_overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides for the rollout backend and the speedups (off with --baseline)."""
    return [f"generation.backend={args.backend}", f"run.fused_gelu={not args.baseline}",
            f"optim.fused={not args.baseline}", f"run.dtype={args.dtype}", *args.overrides]


@dataclass
class Timing:
    """Wall and CPU seconds of the measured steps, mean seconds per phase, and the last step's metrics."""

    seconds: float
    cpu_seconds: float
    phases: dict[str, Any]
    metrics: dict[str, float]


def time_steps(trainer: Any, steps: int) -> Timing:
    """One warm-up step (allocator, first-call overheads), then ``steps`` timed ``train_step`` calls."""
    trainer.train_step()
    trainer.harness.step += 1
    trainer.harness.timer.pop()
    started, cpu = time.perf_counter(), time.process_time()
    metrics: dict[str, float] = {}
    for _ in range(steps):
        metrics = trainer.train_step()
        trainer.harness.step += 1
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return Timing(seconds, cpu_seconds, wl.summarize_phases(trainer.harness.timer.pop(), steps), metrics)


def onpolicy_floor(step_s: float, step_cpu_s: float, prompts: int, group: int, minibatches: int, critic: bool,
                   repeats: int = 3, dtype: str = "float32") -> dict[str, Any]:
    """floor_s / overhead fields for a GRPO or PPO step (see bench/floor.py), on fresh copies of the
    same models and the same shapes: ``prompts`` x ``group`` rows, 16 prompt + 32 new tokens."""
    import floor

    models = wl.bundle(critic=critic)
    reward_model = wl.reward().members[0].model
    ids = wl.tokenizer()(wl.prompts(prompts), return_tensors="pt").input_ids.repeat_interleave(group, dim=0)
    seconds, parts, error = floor.onpolicy_floor(models.policy, reward_model, ids, wl.NEW_TOKENS, minibatches,
                                                 critic=models.value_model, eos_id=wl.EOS_ID, repeats=repeats,
                                                 dtype=dtype)
    return floor.summary(step_s, seconds, parts, step_cpu_s) | {"floor_sampler_logprob_error": error}
