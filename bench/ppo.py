"""PPO step throughput on the fixed workload (see bench/rl_workload.py for the models).

Per step: 64 prompts of 16 tokens, exactly 32 new tokens sampled (EOS suppressed, no early stop),
reward model scoring, reference + critic forwards once per rollout, 1 PPO epoch of 4 mini-batches
of 16 (one optimizer step each). Float32 (``--dtype bfloat16``: run.dtype=bfloat16,
the floor likewise), 2 threads, OMP_WAIT_POLICY=PASSIVE.

Run: python bench/ppo.py [--steps 3] [--backend cached]   (prints ONE JSON line)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import json  # noqa: E402
import tempfile  # noqa: E402

import rl_workload as wl  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)
import trainer_bench as bench  # noqa: E402

from rlhfkit.config import load_config  # noqa: E402
from rlhfkit.rl.config import PPOConfig  # noqa: E402
from rlhfkit.rl.onpolicy import OnPolicyTrainer  # noqa: E402
from rlhfkit.rl.rollout import make_sampler  # noqa: E402
from rlhfkit.utils.runtime import configure_threads  # noqa: E402

BATCH, MINIBATCHES = 64, 4


def main() -> None:
    args = bench.parse_args(__doc__.splitlines()[0])
    threads = configure_threads(args.threads)
    load_before = wl.loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(PPOConfig, None, wl.run_overrides(tmp, args.steps + 1) + [
            f"num_prompts={BATCH}", "epochs=1", f"num_minibatches={MINIBATCHES}", "value_model=critic", "kl.coef=0.05",
            "kl.estimator=k1", "kl_in=reward",
            "approx_kl_stop=null", *bench.speedup_overrides(args)])
        trainer = OnPolicyTrainer(config, wl.bundle(critic=True), wl.reward(fused_gelu=not args.baseline),
                                  wl.prompts(256), make_sampler(args.backend))
        timing = bench.time_steps(trainer, args.steps)
        del trainer
    episodes = BATCH * args.steps
    peak_rss = wl.peak_rss_mb()  # the trainer's peak, before the floor's own models
    floor_fields = {} if args.no_floor else bench.onpolicy_floor(timing.seconds / args.steps, timing.cpu_seconds / args.steps,
                                                                 BATCH, 1, MINIBATCHES,
                                                                 critic=True, dtype=args.dtype)
    print(json.dumps({
        "bench": "ppo", "backend": args.backend, "baseline": args.baseline, "dtype": args.dtype, "threads": threads, "steps": args.steps, "batch": BATCH,
        "prompt_tokens": wl.PROMPT_TOKENS, "new_tokens": wl.NEW_TOKENS, "minibatches": MINIBATCHES,
        "seconds": round(timing.seconds, 3), "cpu_seconds": round(timing.cpu_seconds, 3),
        "episodes_per_s": round(episodes / timing.seconds, 2),
        "generated_tokens_per_s": round(episodes * wl.NEW_TOKENS / timing.seconds, 1),
        "seconds_per_step": timing.phases | {"total": round(timing.seconds / args.steps, 4)},
        "optimizer_steps_per_step": timing.metrics["train/updates"],
        "peak_rss_mb": round(peak_rss, 1), **floor_fields, "loadavg_before": load_before, "loadavg_after": wl.loadavg(),
    }))


if __name__ == "__main__":
    main()
