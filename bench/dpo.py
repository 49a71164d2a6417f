"""DPO throughput on the fixed workload (see bench/rl_workload.py for the policy).

512 preference pairs, prompt 16 + completion 48 tokens (random words, no EOS appended), batch 16
pairs (one optimizer step each), one epoch; reference log-probs computed once before training and
timed separately. Float32 (``--dtype bfloat16``: forwards under CPU autocast, float32 master weights and
log-probs, as ``run.dtype=bfloat16`` trains), 2 threads, OMP_WAIT_POLICY=PASSIVE.

Run: python bench/dpo.py   (prints ONE JSON line)
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
import torch  # noqa: E402

from rlhfkit.config import load_config  # noqa: E402
from rlhfkit.rl.config import DPOConfig  # noqa: E402
from rlhfkit.rl.dpo import DPOTrainer  # noqa: E402
from rlhfkit.rl.preference_pairs import Pair  # noqa: E402
from rlhfkit.utils.runtime import configure_threads  # noqa: E402

PAIRS, COMPLETION_TOKENS, BATCH_PAIRS = 512, 48, 16


def pairs(seed: int = 0) -> list[Pair]:
    """512 pairs: a 16-word prompt and two 48-word completions each."""
    generator = torch.Generator().manual_seed(seed)
    prompts = wl.prompts(PAIRS, seed)

    def words() -> str:
        return " ".join(f"w{i}" for i in torch.randint(2, wl.VOCAB, (COMPLETION_TOKENS,), generator=generator).tolist())

    return [Pair(prompt, words(), words()) for prompt in prompts]


def floor_summary(seconds: float, cpu_seconds: float, data: list[Pair], dtype: str = "float32") -> dict:
    """floor_s / overhead of the whole run (reference log-probs + one epoch), on the same token shapes:
    per batch of 16 pairs, 32 rows of 16 prompt + 48 completion tokens (see bench/floor.py)."""
    import floor

    tokenizer = wl.tokenizer()
    rows = [tokenizer(p.prompt + " " + text).input_ids for p in data for text in (p.chosen, p.rejected)]
    ids = torch.tensor(rows).view(len(data), 2, -1)
    batches = [torch.cat([ids[i:i + BATCH_PAIRS, 0], ids[i:i + BATCH_PAIRS, 1]]) for i in range(0, len(data), BATCH_PAIRS)]
    floor_s, parts = floor.preference_floor(wl.bundle(critic=False).policy, batches, wl.PROMPT_TOKENS, dtype=dtype)
    return floor.summary(seconds, floor_s, parts, cpu_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", action="store_true",
                        help="Without the profile-driven speedups: gelu_new as 7 elementwise ops, foreach AdamW.")
    parser.add_argument("--no-floor", action="store_true", help="Skip timing the floor (bench/floor.py).")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="Compute dtype (run.dtype); the floor runs in the same one.")
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    load_before = wl.loadavg()
    data = pairs()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(DPOConfig, None, [
            f"run.output_dir={tmp}", "run.progress=false", "run.save_every=0", f"batch_size={BATCH_PAIRS}", "epochs=1",
            "append_eos=false", f"max_response_tokens={COMPLETION_TOKENS}", "optim.lr=1e-5",
            f"run.fused_gelu={not args.baseline}", f"optim.fused={not args.baseline}", f"run.dtype={args.dtype}"])
        trainer = DPOTrainer(config, wl.bundle(critic=False), data)
        warm = DPOTrainer(config, wl.bundle(critic=False, seed=1), data[: 2 * BATCH_PAIRS])
        warm.precompute_reference()
        warm.train_step()  # first-call overheads off the clock
        del warm
        started, cpu = time.perf_counter(), time.process_time()
        trainer.precompute_reference()
        reference_seconds = time.perf_counter() - started
        train_started = time.perf_counter()
        while trainer.harness.step < trainer.harness.run.steps:
            metrics = trainer.train_step()
            trainer.harness.step += 1
        train_seconds = time.perf_counter() - train_started
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        optimizer_steps = trainer.harness.step
        del trainer
    peak_rss = wl.peak_rss_mb()  # the trainer's peak, before the floor's own models
    floor_fields = {} if args.no_floor else floor_summary(seconds, cpu_seconds, data, args.dtype)
    print(json.dumps({
        "bench": "dpo", "baseline": args.baseline, "dtype": args.dtype, "threads": threads, "pairs": PAIRS,
        "batch_pairs": BATCH_PAIRS, "seq_len": wl.PROMPT_TOKENS + COMPLETION_TOKENS, "optimizer_steps": optimizer_steps,
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
        "reference_seconds": round(reference_seconds, 3), "train_seconds": round(train_seconds, 3),
        "pairs_per_s": round(PAIRS / seconds, 2), "train_pairs_per_s": round(PAIRS / train_seconds, 2),
        "last_loss": round(metrics["loss/dpo"], 4),
        "peak_rss_mb": round(peak_rss, 1), **floor_fields, "loadavg_before": load_before, "loadavg_after": wl.loadavg(),
    }))


if __name__ == "__main__":
    main()
