"""PPO step throughput on the fixed workload (see bench/rl_workload.py for the models).

Per step: 64 prompts of 16 tokens, exactly 32 new tokens sampled (EOS suppressed, no early stop),
reward model scoring, reference + critic forwards once per rollout, 1 PPO epoch of 4 mini-batches
of 16 (one optimizer step each). Float32, 2 threads, OMP_WAIT_POLICY=PASSIVE.

Run: python bench/ppo.py [--steps 3] [--backend cached]   (prints ONE JSON line)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import rl_workload as wl  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)

from rlhfkit.config import load_config  # noqa: E402
from rlhfkit.rl.config import PPOConfig  # noqa: E402
from rlhfkit.rl.ppo import PPOTrainer  # noqa: E402
from rlhfkit.rl.rollout import make_sampler  # noqa: E402
from rlhfkit.utils.runtime import configure_threads  # noqa: E402

BATCH, MINIBATCHES = 64, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="Measured steps (after one warm-up step).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="cached", help="Rollout backend: hf, cached, cached-static.")
    parser.add_argument("--baseline", action="store_true",
                        help="Without the profile-driven speedups: gelu_new as 7 elementwise ops, foreach AdamW.")
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    load_before = wl.loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(PPOConfig, None, wl.run_overrides(tmp, args.steps + 1) + [
            f"batch_size={BATCH}", "epochs=1", f"num_minibatches={MINIBATCHES}", "value_model=critic",
            "approx_kl_stop=null", f"generation.backend={args.backend}",
            f"run.fused_gelu={not args.baseline}", f"optim.fused={not args.baseline}"])
        trainer = PPOTrainer(config, wl.bundle(critic=True), wl.reward(fused_gelu=not args.baseline),
                             wl.prompts(256), make_sampler(args.backend))
        trainer.train_step()  # warm-up: allocator, first-call overheads
        trainer.harness.step += 1
        trainer.harness.timer.pop()
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            metrics = trainer.train_step()
            trainer.harness.step += 1
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        phases = wl.summarize_phases(trainer.harness.timer.pop(), args.steps)
    episodes = BATCH * args.steps
    print(json.dumps({
        "bench": "ppo", "backend": args.backend, "baseline": args.baseline, "threads": threads, "steps": args.steps, "batch": BATCH,
        "prompt_tokens": wl.PROMPT_TOKENS, "new_tokens": wl.NEW_TOKENS, "minibatches": MINIBATCHES,
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
        "episodes_per_s": round(episodes / seconds, 2),
        "generated_tokens_per_s": round(episodes * wl.NEW_TOKENS / seconds, 1),
        "seconds_per_step": phases | {"total": round(seconds / args.steps, 4)},
        "optimizer_steps_per_step": metrics["train/updates"],
        "peak_rss_mb": round(wl.peak_rss_mb(), 1), "loadavg_before": load_before, "loadavg_after": wl.loadavg(),
    }))


if __name__ == "__main__":
    main()
