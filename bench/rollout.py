"""Rollout backend timing: HF generate vs our KV-cache loop on a randomly initialised GPT-2.

Run: OMP_WAIT_POLICY=PASSIVE python bench/rollout.py --threads 2
Prints one JSON line per (sampler, scenario) with seconds (median of --repeats) and tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

from rlhfkit.rl.rollout import SamplingParams, make_sampler  # noqa: E402

WORDS = ("the movie was great and the actors were wonderful but the food was bad and the service slow "
         "what a lovely day the sun is bright please explain why the sky is blue in one short sentence").split()


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on a small corpus, topped up with filler tokens to exactly ``vocab_size``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 600), special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>", padding_side="left")
    hf.add_tokens([f"<filler{i}>" for i in range(vocab_size - len(hf))])
    return hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--embd", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samplers", default="hf,cached,cached-static")
    parser.add_argument("--eos-boost", type=float, default=6.0, help="EOS logit shift for the varied-length scenario.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer(args.vocab)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=args.embd, n_layer=args.layers,
                        n_head=max(1, args.embd // 64), eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).to(args.device).eval()
    rng = torch.Generator().manual_seed(0)
    prompts = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (int(n),), generator=rng))
               for n in torch.randint(4, 24, (args.batch,), generator=rng)]
    scenarios = {
        "sample": SamplingParams(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=1.0),
        "greedy": SamplingParams(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False),
        # EOS made likely: responses end at varied lengths (what compaction of finished rows is for).
        "sample-varied-length": SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0),
    }
    samplers = {name: make_sampler(name) for name in args.samplers.split(",")}
    for sampler in samplers.values():
        sampler.sample(model, tokenizer, prompts[:4], SamplingParams(max_new_tokens=4))  # warm-up
    for scenario, params in scenarios.items():
        varied = scenario == "sample-varied-length"
        if varied:
            with torch.no_grad():
                direction = model.transformer.wte.weight[tokenizer.eos_token_id]
                model.transformer.ln_f.bias.add_(args.eos_boost * direction / direction.norm().pow(2))
        times: dict[str, list[float]] = {name: [] for name in samplers}
        tokens: dict[str, int] = {}
        for repeat in range(args.repeats):  # interleaved, so load changes on a shared box hit every backend
            for name, sampler in samplers.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                rollout = sampler.sample(model, tokenizer, prompts, params, generator=torch.Generator().manual_seed(repeat))
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
                tokens[name] = int(rollout.response_mask.sum())
        for name in samplers:
            seconds = statistics.median(times[name])
            print(json.dumps({"bench": "rollout", "sampler": name, "scenario": scenario, "device": args.device,
                              "threads": args.threads, "batch": args.batch, "new_tokens": args.new_tokens,
                              "vocab": len(tokenizer), "n_embd": args.embd, "layers": args.layers,
                              "seconds": round(seconds, 4), "response_tokens": tokens[name],
                              "tokens_per_s": round(tokens[name] / seconds, 1),
                              "all_s": [round(t, 4) for t in times[name]]}), flush=True)


if __name__ == "__main__":
    main()
