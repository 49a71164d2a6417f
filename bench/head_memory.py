"""Memory and time of a training log-prob pass at a real vocabulary size: the LM head in chunks against whole logits.

A GPT-2 of the bench's trunk (4 x 256) with Qwen3's vocabulary (151,936 tokens, embeddings tied to the head) scores
``--rows`` sequences of 16 prompt + ``--response`` response tokens with gradients (``token_logprobs`` with entropy,
then backward), as a policy-gradient mini-batch does. Each side runs in its own fresh process and reports
``peak RSS - RSS before the pass`` (MiB, the model and its gradient buffers excluded) and the median seconds of
``--repeats`` passes after a warm-up:

- ``chunked``: the defaults (over ``rlhfkit.models.head_logprobs.HEAD_LOGIT_ELEMENTS`` the head runs in blocks);
- ``whole``: the budget raised so the (positions, vocabulary) logits and their gradient exist at once.

``--workload sft`` runs the SFT loss instead (``rlhfkit.sft.loss.model_nll_sum``, the prompt's labels ignored),
its ``whole`` side the loss as it was before session 20: the model's full (b, T, V) logits, a float32 copy and
cross-entropy (``completion_nll_sum``).

Run: python bench/head_memory.py [--workload logprobs|sft] [--rows 8] [--response 128] [--repeats 3]
(prints ONE JSON line)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import rl_workload as wl  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)
import torch  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

import rlhfkit.models.head_logprobs as head_module  # noqa: E402
from rlhfkit.rl.logprobs import token_logprobs  # noqa: E402
from rlhfkit.sft.loss import IGNORE_INDEX, completion_nll_sum, model_nll_sum  # noqa: E402
from rlhfkit.utils.runtime import configure_threads  # noqa: E402

VOCAB = 151_936


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as handle:
        return int(next(line for line in handle if line.startswith(f"{field}:")).split()[1]) / 1024


def reset_peak() -> None:
    """Start the peak RSS (``VmHWM``) afresh from the current RSS."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def one_side(side: str, workload: str, rows: int, response: int, repeats: int) -> dict[str, float]:
    """One side's peak-RSS delta and median seconds per forward+backward."""
    configure_threads(2)
    if side == "whole":
        head_module.HEAD_LOGIT_ELEMENTS["cpu"] = 1 << 62
    config = wl.gpt2_config()
    config.vocab_size = VOCAB
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, VOCAB, (rows, wl.PROMPT_TOKENS + response), generator=generator)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :wl.PROMPT_TOKENS] = IGNORE_INDEX

    def step() -> None:
        if workload == "sft" and side == "whole":
            completion_nll_sum(model(input_ids=ids, attention_mask=mask).logits, labels)[0].backward()
        elif workload == "sft":
            model_nll_sum(model, ids, mask, labels)[0].backward()
        else:
            logprobs, entropy = token_logprobs(model, ids, mask, wl.PROMPT_TOKENS, 1.0, with_entropy=True)
            (logprobs.sum() + 0.01 * entropy.sum()).backward()

    for parameter in model.parameters():  # gradient buffers exist before the mark, as in a trainer after step 1
        parameter.grad = torch.zeros_like(parameter)
    before = status_mb("VmRSS")
    reset_peak()
    step()
    peak = status_mb("VmHWM")
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return {"peak_delta_mb": round(peak - before, 1), "seconds": round(statistics.median(seconds), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["logprobs", "sft"], default="logprobs")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--response", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", choices=["chunked", "whole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(one_side(args.side, args.workload, args.rows, args.response, args.repeats)))
        return
    load_before = wl.loadavg()
    sides = {}
    for side in ("chunked", "whole"):
        command = [sys.executable, os.path.abspath(__file__), "--side", side, "--workload", args.workload,
                   "--rows", str(args.rows),
                   "--response", str(args.response), "--repeats", str(args.repeats)]
        sides[side] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    logits_mb = args.rows * args.response * VOCAB * 4 / 2**20
    print(json.dumps({
        "bench": "head_memory", "workload": args.workload, "vocab": VOCAB, "rows": args.rows, "response_tokens": args.response,
        "logits_mb": round(logits_mb, 1), **sides,
        "memory_ratio": round(sides["chunked"]["peak_delta_mb"] / sides["whole"]["peak_delta_mb"], 3),
        "time_ratio": round(sides["chunked"]["seconds"] / sides["whole"]["seconds"], 3),
        "loadavg_before": load_before, "loadavg_after": wl.loadavg(),
    }))


if __name__ == "__main__":
    main()
