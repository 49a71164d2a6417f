"""Reward-model training throughput: our trainer vs the naive two-pass, pad-to-max_length loop.

Fixed workload: GPT-2 trunk from config (vocab 4096, n_positions 256, n_embd 256, 4 layers,
4 heads, float32, 2 threads) with a scalar head; 512 pairs of prompt 16 + completion 48 tokens,
batch 16 pairs, one epoch. Ours: chosen and rejected in one forward pass, padded only to the
longest sequence of the batch (``rlhfkit.reward.trainer``). Naive: one forward pass for the
chosen and one for the rejected, each padded to max_length (= n_positions). Both go through
``RewardModel``, whose GPT-2 trunk runs its last block only at the read token (rlhfkit.models.last_token).
Both start from the same weights and see the same batches; the first-step losses must agree.

Run: python bench/reward_model.py        (prints ONE JSON line)
``cpu_seconds`` (process CPU time) is less sensitive than wall time to other load on the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import rlhfkit  # noqa: E402, F401  (its process settings, e.g. MKL's allocator off, take effect when torch loads)

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402
from transformers import GPT2Config, GPT2Model  # noqa: E402

from rlhfkit.models.reward_model import RewardModel, RewardModelSettings  # noqa: E402
from rlhfkit.reward.batching import EncodedRecord, epoch_batches  # noqa: E402
from rlhfkit.reward.config import RewardOptimConfig, RewardTrainConfig  # noqa: E402
from rlhfkit.reward.losses import bradley_terry_loss  # noqa: E402
from rlhfkit.reward.trainer import RewardTrainer  # noqa: E402
from rlhfkit.utils.precision import disable_dropout  # noqa: E402
from rlhfkit.utils.runtime import configure_threads  # noqa: E402

VOCAB, POSITIONS, EMBD, LAYERS, HEADS = 4096, 256, 256, 4, 4
PAIRS, PROMPT_TOKENS, COMPLETION_TOKENS, BATCH_PAIRS = 512, 16, 48, 16
PAD_ID, EOS_ID = 0, 1


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    with open("/proc/loadavg") as handle:
        return [float(x) for x in handle.read().split()[:3]]


def build_model(seed: int = 0) -> RewardModel:
    """The fixed GPT-2 trunk with a scalar head, dropout off (as train-rm does by default)."""
    config = GPT2Config(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=EMBD, n_layer=LAYERS, n_head=HEADS,
                        bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    torch.manual_seed(seed)
    tokenizer = SimpleNamespace(pad_token_id=PAD_ID, eos_token_id=EOS_ID)
    model = RewardModel(GPT2Model(config), tokenizer, RewardModelSettings(max_length=POSITIONS))
    disable_dropout(model.backbone)
    return model


def build_pairs(seed: int = 0) -> list[EncodedRecord]:
    """512 pairs sharing a 16-token prompt, each completion 48 random tokens."""
    generator = torch.Generator().manual_seed(seed)
    records = []
    for index in range(PAIRS):
        prompt = torch.randint(2, VOCAB, (PROMPT_TOKENS,), generator=generator).tolist()
        chosen = torch.randint(2, VOCAB, (COMPLETION_TOKENS,), generator=generator).tolist()
        rejected = torch.randint(2, VOCAB, (COMPLETION_TOKENS,), generator=generator).tolist()
        records.append(EncodedRecord("pairwise", [prompt + chosen, prompt + rejected], ranks=(1, 2), index=index,
                                     response_starts=[len(prompt)] * 2))
    return records


def run_ours(model: RewardModel, records: list[EncodedRecord], output_dir: str,
             dtype: str = "float32") -> tuple[float, float, float]:
    """One epoch through RewardTrainer.train_step (forwards under autocast unless ``dtype`` is float32);
    returns (wall s, process CPU s, first-step loss)."""
    config = RewardTrainConfig(output_dir=output_dir, batch_size=BATCH_PAIRS, epochs=1,
                               optim=RewardOptimConfig(lr=1e-4, warmup_ratio=0.0), progress=False, save_every=0,
                               report_to="none", seed=0)
    autocast = None if dtype == "float32" else getattr(torch, dtype)
    trainer = RewardTrainer(model, config, records, autocast_dtype=autocast)
    started, cpu = time.perf_counter(), time.process_time()
    first = trainer.train_step()["loss/total"]
    while trainer.step < trainer.total_steps:
        trainer.train_step()
    return time.perf_counter() - started, time.process_time() - cpu, first


def _padded(sequences: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def run_naive(model: RewardModel, records: list[EncodedRecord]) -> tuple[float, float, float]:
    """One epoch of the naive loop (same batches and optimizer settings); (wall s, CPU s, first-step loss)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    batches = epoch_batches(records, BATCH_PAIRS, seed=0, epoch=0)
    started, cpu = time.perf_counter(), time.process_time()
    first = None
    for batch in batches:
        chosen = _padded([records[i].sequences[0] for i in batch], POSITIONS)
        rejected = _padded([records[i].sequences[1] for i in batch], POSITIONS)
        loss = bradley_terry_loss(model.score(*chosen), model.score(*rejected)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        first = float(loss.detach()) if first is None else first
    return time.perf_counter() - started, time.process_time() - cpu, float(first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-naive", action="store_true", help="Only time our trainer.")
    parser.add_argument("--no-floor", action="store_true", help="Skip timing the floor (bench/floor.py).")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="Forward precision of our trainer and the floor (CPU autocast; the naive loop stays float32).")
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    load_before = loadavg()
    records = build_pairs()
    base = build_model()
    warm = copy.deepcopy(base)
    with tempfile.TemporaryDirectory() as tmp:
        run_ours(warm, records[: BATCH_PAIRS * 2], tmp, args.dtype)  # first-call overheads off the clock
        del warm
        seconds, cpu_seconds, first_loss = run_ours(copy.deepcopy(base), records, tmp, args.dtype)
    rss_ours = peak_rss_mb()
    result = {"bench": "reward_model", "dtype": args.dtype, "pairs": PAIRS, "batch_pairs": BATCH_PAIRS, "threads": threads,
              "seq_len": PROMPT_TOKENS + COMPLETION_TOKENS, "seconds": round(seconds, 3),
              "cpu_seconds": round(cpu_seconds, 3),
              "pairs_per_s": round(PAIRS / seconds, 2), "peak_rss_mb": round(rss_ours, 1)}
    if not args.no_floor:
        import sys

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import floor

        ids = [torch.tensor([records[i].sequences[k] for k in (0, 1) for i in batch]).view(2 * len(batch), -1)
               for batch in epoch_batches(records, BATCH_PAIRS, seed=0, epoch=0)]  # chosen rows, then rejected
        floor_s, parts = floor.reward_floor(base, ids, PROMPT_TOKENS, dtype=args.dtype)
        result.update(floor.summary(seconds, floor_s, parts, cpu_seconds))
    if not args.skip_naive:
        naive_seconds, naive_cpu, naive_first = run_naive(copy.deepcopy(base), records)
        result.update({"naive_seconds": round(naive_seconds, 3), "naive_cpu_seconds": round(naive_cpu, 3),
                       "naive_pairs_per_s": round(PAIRS / naive_seconds, 2),
                       "naive_peak_rss_mb": round(peak_rss_mb(), 1), "speedup": round(naive_seconds / seconds, 2),
                       "first_step_loss_diff": abs(first_loss - naive_first)})
    result["loadavg_before"] = load_before
    result["loadavg_after"] = loadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
